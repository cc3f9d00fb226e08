"""`learn recommend` on a tiny trained run: users, a given history, every user (matches eval), new items, bad input.

:func:`tiny_run` trains the tiny finetune run once per pytest session (cached; test_export.py and test_plot.py reuse
it). Most calls go through ``learn.cli.main`` in-process (same one-line error path as the CLI, no interpreter start).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from learn.cli import main as cli
from tests.conftest import TINY_MODEL, make_tiny_dataset, run_cli

_RUNS: dict[tuple, tuple[Path, Path, Path]] = {}


def tiny_run(tmp_path_factory, name: str = "ft", extra: tuple[str, ...] = ()) -> tuple[Path, Path, Path]:
    """(run folder, dataset, store) of a 3-epoch tiny finetune run (40 users, 30 items), trained once per session."""
    key = (str(tmp_path_factory.getbasetemp()), name, extra)
    if key not in _RUNS:
        from learn.config import load_config
        from learn.train import Trainer

        tmp = tmp_path_factory.mktemp(f"run-{name}")
        data, store = make_tiny_dataset(tmp)
        args = [*TINY_MODEL, f"data.dataset={data}", f"data.store={store}", f"log.output_dir={tmp / 'runs'}",
                f"log.run_name={name}", "log.wandb=false", "log.progress=false", "train.batch_size=8",
                "train.epochs=3", "train.lr=3e-3", "train.stage=finetune", "data.max_history=4", *extra]
        Trainer(load_config(None, args)).fit()
        _RUNS[key] = (tmp / "runs" / name, data, store)
    return _RUNS[key]


def store_with_new_items(store: Path, out: Path, copies: dict[str, str], model: str = "random") -> Path:
    """``store`` plus new items (not in the dataset), each a copy of a catalogue item's vector: {new key: old key}."""
    from learn.data.store import ItemStore, write_store

    s = ItemStore(store)
    keys, vecs = s.to_array()
    new = list(copies)
    extra = s.get([copies[k] for k in new])
    return write_store(out, keys + new, np.concatenate([vecs, extra]),
                       meta={"dim": s.dim, "dtype": "float32", "count": 0, "model": model})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def base(run, store=None) -> list[str]:
    ckpt, data, tiny_store = run
    return ["recommend", "--ckpt", str(ckpt), "--data", str(data), "--store", str(store or tiny_store)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_user_and_same_history_by_hand_agree(run, tmp_path, capsys):
    ckpt, data, _ = run
    assert cli([*base(run), "-k", "5", "--user", "U0", "U3", "--out", str(tmp_path / "u.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert "user U0:" in printed and "user U3:" in printed and "item I0" in printed  # titles are shown
    recs = read_jsonl(tmp_path / "u.jsonl")
    assert [r["user"] for r in recs] == ["U0", "U3"]
    for r in recs:
        assert len(r["items"]) == 5 and r["scores"] == sorted(r["scores"], reverse=True)
    # the same history given by hand (original item ids) gives the same list
    seq = json.loads((data / "train.json").read_text())["0"] + json.loads((data / "val.json").read_text())["0"] + \
        json.loads((data / "test.json").read_text())["0"]
    keys = sorted(json.loads((data / "smap.json").read_text()), key=json.loads((data / "smap.json").read_text()).get)
    hist = ",".join(keys[i] for i in seq)
    assert cli([*base(run), "-k", "5", "--history", hist, "--out", str(tmp_path / "h.jsonl")]) == 0
    (h,) = read_jsonl(tmp_path / "h.jsonl")
    assert h["items"] == recs[0]["items"] and h["scores"] == pytest.approx(recs[0]["scores"], abs=1e-6)
    # --exclude-history: none of the history's items
    assert cli([*base(run), "-k", "5", "--history", hist, "--exclude-history", "--out", str(tmp_path / "x.jsonl")]) == 0
    (x,) = read_jsonl(tmp_path / "x.jsonl")
    assert len(x["items"]) == 5 and not set(x["items"]) & set(hist.split(","))


def test_all_users_streamed_match_eval_ranking(run, tmp_path):
    """--all --history-from test over every item: the test target's position gives eval's NDCG@10 and MRR."""
    ckpt, data, _ = run
    out = tmp_path / "all.jsonl"
    # --batch-size 7: the 40 users go through 6 encode-and-rank steps
    assert cli([*base(run), "--all", "--out", str(out), "-k", "30", "--history-from", "test", "--batch-size", "7",
                "--no-progress"]) == 0
    recs = read_jsonl(out)
    umap = json.loads((data / "umap.json").read_text())
    assert sorted(r["user"] for r in recs) == sorted(umap)
    test = json.loads((data / "test.json").read_text())
    smap = json.loads((data / "smap.json").read_text())
    keys = sorted(smap, key=smap.get)
    ranks = torch.tensor([r["items"].index(keys[test[str(umap[r["user"]])][0]]) for r in recs])
    want = json.loads((ckpt / "metrics.json").read_text())["test"]
    ndcg = torch.where(ranks < 10, 1 / torch.log2(ranks.double() + 2), torch.zeros(len(ranks), dtype=torch.double))
    assert ndcg.mean().item() == pytest.approx(want["ndcg@10"], abs=1e-6)
    assert (1 / (ranks.double() + 1)).mean().item() == pytest.approx(want["mrr"], abs=1e-6)
    assert not list(tmp_path.glob(".all.jsonl.*"))  # written through a temporary file, renamed


def test_topk_blocked_equals_brute_force():
    from learn.recommend import topk_blocked

    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(600, 8, generator=g), torch.randn(50, 8, generator=g)  # 2 user blocks
    exclude = [list(range(u % 5, 50, 9)) for u in range(600)]
    s, i = topk_blocked(users, items, 6, exclude, chunk_size=7)  # 8 item chunks
    full = users @ items.T
    for u, ex in enumerate(exclude):
        full[u, ex] = -math.inf
    ref_s, _ = full.topk(6, dim=1)
    assert torch.allclose(s, ref_s, atol=1e-5)
    assert torch.allclose(full.gather(1, i), s, atol=1e-5)  # the returned rows have the returned scores
    s2, i2 = topk_blocked(users[:3], items, 60, [list(range(48))] * 3)  # only 2 candidates left
    assert (i2[:, 2:] == -1).all() and torch.isinf(s2[:, 2:]).all() and (i2[:, :2] >= 48).all()


def test_new_store_items_are_ranked(run, tmp_path, capsys):
    """Items in the store but not in the dataset are candidates; a text-only model scores a copy like its source."""
    _, data, store = run
    bigger = store_with_new_items(store, tmp_path / "store2", {"NEW-A": "I005", "NEW-B": "I017"})
    meta = tmp_path / "new_meta.json"
    meta.write_text(json.dumps({"NEW-A": {"title": "brand new item A"}}))
    assert cli([*base(run, bigger), "-k", "32", "--history", "I003,I004", "--meta", str(meta),
                "--out", str(tmp_path / "n.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert "brand new item A  [new]" in printed and "top 32 of 32 items" in printed
    (r,) = read_jsonl(tmp_path / "n.jsonl")
    score = dict(zip(r["items"], r["scores"], strict=True))
    assert score["NEW-A"] == pytest.approx(score["I005"], abs=1e-6)
    assert score["NEW-B"] == pytest.approx(score["I017"], abs=1e-6)
    # new items inside a given history are fine too; --catalogue-only leaves them out
    assert cli([*base(run, bigger), "--history", "I003,NEW-A", "--catalogue-only"]) == 2
    assert "'NEW-A' is outside the dataset catalogue" in capsys.readouterr().err
    assert cli([*base(run, bigger), "-k", "40", "--history", "I003,I004", "--catalogue-only",
                "--out", str(tmp_path / "c.jsonl")]) == 0
    assert len(read_jsonl(tmp_path / "c.jsonl")[0]["items"]) == 30


def test_new_items_with_item_ids_and_bias(tmp_path_factory, tmp_path):
    """A text+ID model with item_bias: new items get a zero ID vector and the mean bias, in histories too."""
    from learn.recommend import encode_histories, encode_items, load_inference

    ckpt, data, store = tiny_run(tmp_path_factory, "idbias", ("model.item_id_embedding=true", "model.item_bias=true"))
    bigger = store_with_new_items(store, tmp_path / "store2", {"NEW-A": "I005"})
    inf = load_inference(ckpt, data, bigger, "cpu")
    assert inf.n_catalogue == 30 and inf.n_new == 1 and inf.keys[-1] == "NEW-A"
    items = encode_items(inf)
    assert items.shape == (31, 33)  # output_dim 32 + the bias coordinate
    assert items[-1, -1].item() == pytest.approx(inf.model.item_bias.mean().item(), abs=1e-6)
    assert not torch.allclose(items[-1], items[5])  # I005's trained ID vector and bias are not the new item's
    users = encode_histories(inf, [[3, 4, 30], [3, 4]])
    assert torch.isfinite(users).all() and users.shape == (2, 33)
    assert cli(["recommend", "--ckpt", str(ckpt), "--data", str(data), "--store", str(bigger), "-k", "31",
                "--history", "I003,NEW-A", "--out", str(tmp_path / "r.jsonl")]) == 0
    (r,) = read_jsonl(tmp_path / "r.jsonl")
    assert "NEW-A" in r["items"] and all(math.isfinite(s) for s in r["scores"])


def test_bad_input_is_one_line_exit_2(run, tmp_path):
    from learn.data.store import ItemStore, write_store

    ckpt, data, store = run
    keys, vecs = ItemStore(store).to_array()
    other_llm = write_store(tmp_path / "other", keys, vecs, meta={"dim": 16, "dtype": "float32", "count": 0,
                                                                   "model": "some/other-llm"})
    small = write_store(tmp_path / "small", keys, vecs[:, :8], meta={"dim": 8, "dtype": "float32", "count": 0,
                                                                       "model": "random"})
    cases = {
        "unknown user 'nobody'": [*base(run), "--user", "U1", "nobody"],
        "unknown item id 'B0NOPE'": [*base(run), "--history", "I001,B0NOPE"],
        "some/other-llm": [*base(run, other_llm), "--user", "U1"],
        "dim 8": [*base(run, small), "--user", "U1"],
        "--out": [*base(run), "--all"],
    }
    for needle, args in cases.items():
        proc = run_cli(*args) if needle == "unknown user 'nobody'" else None  # one real subprocess, others in-process
        if proc is not None:
            assert proc.returncode == 2 and proc.stdout == ""
            err = proc.stderr
        else:
            import contextlib
            import io

            buf = io.StringIO()
            with contextlib.redirect_stderr(buf):
                assert cli(args) == 2, needle
            err = buf.getvalue()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], (needle, err)


def test_bench_recommend_quick(tmp_path):
    """The benchmark script runs end to end at tiny sizes and writes its JSON (no timing checks)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    p = subprocess.run([sys.executable, "benchmarks/bench_recommend.py", "--quick", "--out-dir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = json.loads((tmp_path / "bench_recommend.json").read_text())["rows"]
    commands = {r.get("command") for r in rows}
    assert {"eval (test)", "recommend --all -k 10"} <= commands and all(r.get("users_per_s", 1) > 0 for r in rows)
    assert [r for r in rows if "peak_rss_MiB" in r]
