"""benchmarks/baselines: exact RecBole benchmark files for a tiny canonical dataset, and the result records.

Runs in the project's .venv: nothing here imports recbole (export_recbole, unisrec_to_canonical and record are
stdlib-only by design; check_split imports recbole only inside recbole_rows).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from learn.errors import DataError, LearnError
from tests.conftest import ROOT, shared

BASELINES = ROOT / "benchmarks" / "baselines"
HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"baselines_{name}", BASELINES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


export_recbole = _load("export_recbole")
unisrec_to_canonical = _load("unisrec_to_canonical")
record = _load("record")
check_split = _load("check_split")

# user -> (train, val, test); item 8 is in smap but never interacted with
TINY = {"0": ([0, 1, 2], 3, 4), "1": ([5], 6, 7), "2": ([0, 1, 2, 3], 4, 5)}


def write_canonical(folder: Path, data=TINY, n_items: int = 9, **override) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train": {u: t for u, (t, _, _) in data.items()},
        "val": {u: [v] for u, (_, v, _) in data.items()},
        "test": {u: [x] for u, (_, _, x) in data.items()},
        "smap": {f"I{i}": i for i in range(n_items)},
        "umap": {f"U{u}": int(u) for u in data},
    }
    files.update(override)
    for name, obj in files.items():
        (folder / f"{name}.json").write_text(json.dumps(obj))
    return folder


def test_export_writes_exact_files(tmp_path):
    stats = export_recbole.export(write_canonical(tmp_path / "canon"), tmp_path / "out", "tiny", max_len=2)
    out = tmp_path / "out" / "tiny"
    assert stats.out_dir == out and (stats.n_users, stats.n_items) == (3, 9)
    assert stats.rows == {"train": 5, "valid": 3, "test": 3}
    # every prefix of the train sequence -> next item, histories cut to the last 2 items; user 1 has no train row
    assert (out / "tiny.train.inter").read_text() == HEADER + (
        "0\t0\t1\n0\t0 1\t2\n"
        "2\t0\t1\n2\t0 1\t2\n2\t1 2\t3\n"
    )
    # valid: train -> val; test: train + val -> test
    assert (out / "tiny.valid.inter").read_text() == HEADER + "0\t1 2\t3\n1\t5\t6\n2\t2 3\t4\n"
    assert (out / "tiny.test.inter").read_text() == HEADER + "0\t2 3\t4\n1\t5 6\t7\n2\t3 4\t5\n"
    # all smap items, including item 8 that has no interaction
    assert (out / "tiny.item").read_text() == "item_id:token\n" + "".join(f"{i}\n" for i in range(9))
    config = yaml.safe_load((out / "recbole.yaml").read_text())
    assert config["benchmark_filename"] == ["train", "valid", "test"]
    assert config["data_path"] == str((tmp_path / "out").resolve()) and config["dataset"] == "tiny"
    assert config["alias_of_item_id"] == ["item_id_list"]
    assert config["load_col"] == {"inter": ["user_id", "item_id_list", "item_id"], "item": ["item_id"]}
    assert config["MAX_ITEM_LIST_LENGTH"] == 2


def test_default_max_len_keeps_50_items(tmp_path):
    seq = list(range(60))
    canon = write_canonical(tmp_path / "canon", {"0": (seq, 60, 61)}, n_items=62)
    export_recbole.export(canon, tmp_path / "out", "long")
    train = (tmp_path / "out" / "long" / "long.train.inter").read_text().splitlines()[1:]
    assert len(train) == 59
    assert train[48] == "0\t" + " ".join(map(str, range(49))) + "\t49"  # 49 items: not cut
    assert train[-1] == "0\t" + " ".join(map(str, range(9, 59))) + "\t59"  # last 50 of 59
    test = (tmp_path / "out" / "long" / "long.test.inter").read_text().splitlines()[1]
    assert test == "0\t" + " ".join(map(str, range(11, 61))) + "\t61"


def test_reexport_replaces_the_folder(tmp_path):
    canon = write_canonical(tmp_path / "canon")
    export_recbole.export(canon, tmp_path / "out", "tiny", max_len=2)
    (tmp_path / "out" / "tiny" / "stale.txt").write_text("x")
    export_recbole.export(canon, tmp_path / "out", "tiny", max_len=3)
    assert not (tmp_path / "out" / "tiny" / "stale.txt").exists()
    assert "MAX_ITEM_LIST_LENGTH: 3" in (tmp_path / "out" / "tiny" / "recbole.yaml").read_text()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"val": {"0": [3, 4], "1": [6], "2": [4]}}, "expected exactly one item"),
        ({"test": {"0": [4], "1": [7]}}, "user 2 is in only one of"),
        ({"train": {"0": [0, 1, 9], "1": [5], "2": [0]}}, "item index 9 outside"),
        ({"train": {"0": [], "1": [5], "2": [0]}}, "empty train sequence"),
        ({"train": {"x": [0], "1": [5], "2": [0]}}, "not an integer string"),
        ({"smap": {"A": 0, "B": 2}}, "indices 0..N-1"),
    ],
)
def test_bad_canonical_data_is_a_data_error(tmp_path, override, message):
    canon = write_canonical(tmp_path / "canon", **override)
    with pytest.raises(DataError, match=message):
        export_recbole.export(canon, tmp_path / "out", "bad")
    assert not (tmp_path / "out" / "bad").exists()


def test_recbole_reserved_name_is_refused(tmp_path):
    with pytest.raises(LearnError, match="reserves the dataset name 'ml-100k'.*'ml100k'"):
        export_recbole.export(write_canonical(tmp_path / "canon"), tmp_path / "out", "ml-100k")


def test_cli_exports_without_importing_recbole_or_torch(tmp_path):
    canon = write_canonical(tmp_path / "canon")
    code = (
        "import sys; sys.argv = ['export_recbole.py', sys.argv[1], sys.argv[2], '--name', 'tiny'];"
        f"sys.path.insert(0, {str(BASELINES)!r}); import export_recbole;"
        "rc = export_recbole.main(); assert 'recbole' not in sys.modules and 'torch' not in sys.modules;"
        "sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(canon), str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "exported 3 users, 9 items, rows {'train': 5, 'valid': 3, 'test': 3}" in proc.stdout
    bad = subprocess.run([sys.executable, str(BASELINES / "export_recbole.py"), str(tmp_path / "missing"),
                          str(tmp_path / "out"), "--name", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "file not found" in bad.stderr


def test_unisrec_round_trip_reproduces_valid_and_test_files(tmp_path):
    src = tmp_path / "unisrec"
    src.mkdir()
    (src / "T.item2index").write_text("".join(f"A{i}\t{i}\n" for i in range(6)))
    (src / "T.user2index").write_text("U0\t0\nU1\t1\n")
    valid = HEADER + "0\t0 1 2\t3\n1\t4\t5\n"
    test = HEADER + "0\t0 1 2 3\t4\n1\t4 5\t0\n"
    (src / "T.valid.inter").write_text(valid)
    (src / "T.test.inter").write_text(test)
    assert unisrec_to_canonical.convert(src, "T", tmp_path / "canon") == (2, 6)
    assert json.loads((tmp_path / "canon" / "train.json").read_text()) == {"0": [0, 1, 2], "1": [4]}
    export_recbole.export(tmp_path / "canon", tmp_path / "out", "T")
    assert (tmp_path / "out" / "T" / "T.valid.inter").read_text() == valid
    assert (tmp_path / "out" / "T" / "T.test.inter").read_text() == test
    (src / "T.test.inter").write_text(HEADER + "0\t0 1 9 3\t4\n1\t4 5\t0\n")
    with pytest.raises(DataError, match="test history is not train \\+ val"):
        unisrec_to_canonical.convert(src, "T", tmp_path / "canon2")


@pytest.mark.shared_data
def test_scientific_export_matches_unisrec_files(tmp_path):
    """Our canonical Scientific exports to UniSRec's own valid/test files, byte for byte."""
    src = shared("amazon2018_scientific_unisrec")
    unisrec_to_canonical.convert(src, "Scientific", tmp_path / "canon")
    stats = export_recbole.export(tmp_path / "canon", tmp_path / "out", "Scientific")
    assert (stats.n_users, stats.n_items) == (8442, 4385)
    for split in ("valid", "test"):
        ours = (tmp_path / "out" / "Scientific" / f"Scientific.{split}.inter").read_bytes()
        assert ours == (src / f"Scientific.{split}.inter").read_bytes()


def test_write_results_json_and_appended_markdown_rows(tmp_path):
    metrics = {"ndcg@10": 0.055312, "recall@10": 0.10801, "ndcg@50": 0.08, "recall@50": 0.2, "mrr@10": 0.04}
    rec = {"dataset": "tiny", "model": "SASRec", "valid": {"ndcg@10": 0.06}, "test": metrics, "best_epoch": 7,
           "epochs_run": 18, "wall_time_s": 90.0, "threads": 1, "finished_utc": "2026-11-28 00:00",
           "command": "nice -n 19 python run_recbole.py"}
    md = tmp_path / "RESULTS.md"
    out = record.write_results(rec, tmp_path / "results", md)
    assert out == tmp_path / "results" / "tiny_SASRec.json"
    assert json.loads(out.read_text()) == rec
    record.write_results({**rec, "model": "GRU4Rec", "test": None}, tmp_path / "results", md)
    text = md.read_text()
    assert text.startswith(record.MD_HEADER)
    rows = text[len(record.MD_HEADER):].splitlines()
    assert rows == [
        "| 2026-11-28 00:00 | tiny | SASRec | 7/18 | 0.0600 | 0.0553 | 0.1080 | 0.0800 | 0.2000 | 0.0400 | 1.5 min "
        "| 1 | results/tiny_SASRec.json |",
        "| 2026-11-28 00:00 | tiny | GRU4Rec | 7/18 | 0.0600 | — | — | — | — | — | 1.5 min "
        "| 1 | results/tiny_GRU4Rec.json |",
    ]


def test_recbole_order_sorts_by_float32_of_normalised_time(tmp_path):
    """RecBole sorts by float32((t - min) / (max - min)): 1 s apart late in a long span can tie."""
    canon = write_canonical(tmp_path / "canon", {"0": ([0, 1], 2, 3), "1": ([0], 1, 2)}, n_items=4)
    (tmp_path / "canon" / "umap.json").write_text(json.dumps({"u0": 0, "u1": 1}))
    (tmp_path / "canon" / "smap.json").write_text(json.dumps({"a": 0, "b": 1, "c": 2, "d": 3}))
    (tmp_path / "canon" / "meta_data.json").write_text(json.dumps({k: {"title": k.upper()} for k in "abcd"}))
    t0, t1 = 874724710, 893286638  # ml-100k's first and last timestamps
    inter = tmp_path / "x.inter"
    inter.write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                     f"u1\ta\t{t0}\nu0\td\t{t1 - 109}\nu0\tc\t{t1 - 110}\n"  # 1 s apart, tied in float32
                     f"u0\ta\t{t0 + 5}\nu0\tb\t{t0 + 6}\nu1\tb\t{t1}\nu1\tc\t{t1}\n")

    def key(t: int) -> np.float32:
        return np.float32((t - t0) / (t1 - t0))

    assert key(t1 - 109) == key(t1 - 110) and key(t1 - 100) != key(t1 - 101)
    out = check_split.write_recbole_order(canon, inter, tmp_path / "reordered")
    read = {name: json.loads((out / f"{name}.json").read_text()) for name in ("train", "val", "test")}
    # u0: a, b, then d and c tie (file order d before c) although c is 1 s older; u1: a, then b/c in file order
    assert read == {"train": {"0": [0, 1], "1": [0]}, "val": {"0": [3], "1": [1]}, "test": {"0": [2], "1": [2]}}
    assert json.loads((out / "smap.json").read_text()) == {"a": 0, "b": 1, "c": 2, "d": 3}
    # a complete dataset folder: item texts and product splits follow, so `learn embed` works on it directly
    assert json.loads((out / "meta_data.json").read_text()) == {k: {"title": k.upper()} for k in "abcd"}
    assert set(json.loads((out / "item_text.json").read_text())) == set("abcd")
    assert json.loads((out / "test_product.json").read_text()) == {"0": ["c"], "1": ["c"]}
