"""learn.baselines: the no-training text baseline on a tiny dataset + item store, against a hand computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from learn.baselines import history_weights, text_baseline, user_vectors
from learn.cli import main as cli_main
from learn.data.formats import SeqDataset, write_dataset
from learn.data.store import StoreWriter

# 2-d item vectors at known angles (degrees), so cosines are easy to check by hand
ANGLES = {"a": 0, "b": 30, "c": 60, "d": 90, "e": 180, "f": 200}
KEYS = list(ANGLES)


def vec(deg: float, scale: float = 1.0) -> np.ndarray:
    return scale * np.array([math.cos(math.radians(deg)), math.sin(math.radians(deg))], dtype=np.float32)


def make_dataset(root) -> SeqDataset:
    idx = {k: i for i, k in enumerate(KEYS)}
    seqs = {"0": ["e", "a", "b"], "1": ["a", "f", "c"], "2": ["d", "c", "e"]}  # history ... val, test
    return SeqDataset(
        root=root, name="tiny",
        train={u: [idx[k] for k in s[:-2]] for u, s in seqs.items()},
        val={u: [idx[s[-2]]] for u, s in seqs.items()},
        test={u: [idx[s[-1]]] for u, s in seqs.items()},
        smap=idx, umap={u: int(u) for u in seqs}, meta={k: {"title": k} for k in KEYS},
    )


def table() -> torch.Tensor:
    # unnormalised on purpose: the baseline is cosine, so scale must not matter
    return torch.from_numpy(np.stack([vec(ANGLES[k], 1 + i) for i, k in enumerate(KEYS)]))


def rank_by_hand(user_deg: float, target: str) -> int:
    cos = {k: math.cos(math.radians(ANGLES[k] - user_deg)) for k in KEYS}
    return sum(cos[k] > cos[target] + 1e-9 for k in KEYS if k != target)


def test_history_weights():
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert history_weights(mask, "last").tolist() == [[0, 0, 1], [1, 0, 0]]
    assert torch.allclose(history_weights(mask, "mean"), torch.tensor([[1 / 3] * 3, [1, 0, 0]]))
    w = history_weights(mask, "recency", decay=0.5)
    assert torch.allclose(w[0], torch.tensor([0.25, 0.5, 1.0]) / 1.75) and w[1].tolist() == [1, 0, 0]
    with pytest.raises(ValueError):
        history_weights(mask, "median")


def test_user_vectors_are_unit_weighted_means():
    hist, mask = torch.tensor([[0, 2]]), torch.tensor([[True, True]])
    u = user_vectors(table(), hist, mask, "mean")
    assert torch.allclose(u[0], torch.from_numpy(vec(30)), atol=1e-6)  # mean of unit vectors at 0 and 60 degrees


@pytest.mark.parametrize("mode", ["last", "mean", "recency"])
def test_text_baseline_matches_hand_computation(tmp_path, mode):
    ds = make_dataset(tmp_path)
    # test history = train + val: user0 [e, a] -> b; user1 [a, f] -> c; user2 [d, c] -> e
    hists = {"0": ["e", "a"], "1": ["a", "f"], "2": ["d", "c"]}
    targets = {"0": "b", "1": "c", "2": "e"}
    ranks = []
    for u, h in hists.items():
        w = {"last": [0, 1], "mean": [1, 1], "recency": [0.7, 1]}[mode]
        v = sum(wi * vec(ANGLES[k]) for wi, k in zip(w, h, strict=True))
        ranks.append(rank_by_hand(math.degrees(math.atan2(v[1], v[0])), targets[u]))
    m = text_baseline(ds, table(), "test", mode, decay=0.7)
    assert m["count"] == 3 and m["skipped"] == 0
    assert m["mrr"] == pytest.approx(np.mean([1 / (r + 1) for r in ranks]))
    assert m["ndcg@10"] == pytest.approx(np.mean([1 / math.log2(r + 2) for r in ranks]))


def test_val_split_uses_train_history_and_skips_empty(tmp_path):
    ds = make_dataset(tmp_path)
    ds.train["3"], ds.val["3"], ds.test["3"] = [], [0], [1]  # no history before its val item
    m = text_baseline(ds, table(), "val", "last")
    assert m["count"] == 3 and m["skipped"] == 1
    # val: user0 [e] -> a (a is 180 degrees away: rank 5), user1 [a] -> f, user2 [d] -> c
    ranks = [rank_by_hand(180, "a"), rank_by_hand(0, "f"), rank_by_hand(90, "c")]
    assert m["mrr"] == pytest.approx(np.mean([1 / (r + 1) for r in ranks]))


def test_cli_writes_json(tmp_path, capsys):
    ds = make_dataset(tmp_path / "tiny")
    write_dataset(ds, tmp_path / "tiny")
    with StoreWriter(tmp_path / "store") as w:
        w.put_many(KEYS, table().numpy())
        w.finalize()
    out = tmp_path / "res.json"
    rc = cli_main(["text-baseline", "--data", str(tmp_path / "tiny"), "--store", str(tmp_path / "store"),
                   "--user", "all", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| Dataset | Metric |" in printed and "text: last item" in printed
    res = json.loads(out.read_text())
    assert set(res["results"]) == {"last", "mean", "recency"}
    assert res["results"]["last"]["mrr"] == pytest.approx(text_baseline(ds, table(), "test", "last")["mrr"])
    assert cli_main(["text-baseline", "--data", str(tmp_path / "tiny"), "--store", str(tmp_path / "nope")]) == 2
