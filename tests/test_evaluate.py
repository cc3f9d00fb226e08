"""`learn eval` on a saved tiny model reproduces the trainer's metrics.json; the demo runs end to end (reduced)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from learn.config import load_config
from learn.train import Trainer
from tests.conftest import ROOT, TINY_MODEL, make_tiny_dataset, run_cli, run_here


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    data, store = make_tiny_dataset(tmp)
    args = [*TINY_MODEL, f"data.dataset={data}", f"data.store={store}", f"log.output_dir={tmp / 'runs'}",
            "log.run_name=ft", "log.wandb=false", "log.progress=false", "train.batch_size=8", "train.epochs=3",
            "train.lr=3e-3", "train.stage=finetune", "data.max_history=4"]  # eval must pick the run's 4
    Trainer(load_config(None, args)).fit()
    return tmp, data, store


def test_eval_cli_reproduces_training_metrics(trained):
    tmp, data, store = trained
    run = tmp / "runs" / "ft"
    out = tmp / "evalout"
    proc = run_cli("eval", "--ckpt", str(run), "--data", str(data), "--store", str(store), "--out", str(out),
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    ours = json.loads((out / "metrics.json").read_text())
    trained_metrics = json.loads((run / "metrics.json").read_text())
    for split in ("val", "test"):
        for key, value in trained_metrics[split].items():
            assert ours[split][key] == pytest.approx(value, abs=1e-6), (split, key)
    table = (out / "results.md").read_text()
    assert "NDCG@10" in table and "LEARN (ours)" in table


def test_eval_switches(trained):
    tmp, data, store = trained
    run = tmp / "runs" / "ft"
    res = {}
    for name, extra in {"user": [], "batch": ["--average", "batch", "--average-batch", "16"],
                        "masked": ["--mask-history"]}.items():
        out = tmp / f"eval-{name}"
        proc = run_here("eval", "--ckpt", run, "--data", data, "--store", store, "--out", out, "--split", "test",
                        *extra)
        assert proc.returncode == 0, proc.stderr
        res[name] = json.loads((out / "metrics.json").read_text())["test"]
    # 40 users in batches of 16 -> 16, 16, 8: the mean of batch means over-weights the last 8 users
    assert res["batch"]["mrr"] != pytest.approx(res["user"]["mrr"], abs=1e-9) or res["user"]["mrr"] == 0
    assert res["masked"]["mrr"] >= res["user"]["mrr"] - 1e-9  # masking history can only lift the target


def test_eval_dim_mismatch_is_one_line_error(trained, tmp_path):
    import numpy as np

    from learn.data.store import write_store

    tmp, data, store = trained
    keys = json.loads((data / "smap.json").read_text())
    bad = tmp_path / "bad_store"
    write_store(bad, list(keys), np.ones((len(keys), 8), dtype="float32"),
                meta={"dim": 8, "dtype": "float32", "count": len(keys)})
    proc = run_cli("eval", "--ckpt", str(tmp / "runs" / "ft"), "--data", str(data), "--store", str(bad))
    assert proc.returncode == 2
    assert "dim 8" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_demo_pipeline_end_to_end_reduced(tmp_path):
    """scripts/demo.sh end to end, then again (every stage reused). Item vectors come from a tiny random BERT: MiniLM
    took 14 of the test's 45 CPU-seconds, and the packaged model is pinned by test_cex.py."""
    from tests.test_cex import make_model

    env = dict(os.environ, DEMO_FAST="1", DEMO_OUT=str(tmp_path / "demo"), WANDB_MODE="disabled",
               DEMO_LLM=str(make_model(tmp_path / "bert")),
               OMP_NUM_THREADS="1")  # with 2 threads and the other test worker busy: 2.5x the CPU time
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert metrics["test"]["users"] == 943 and 0 <= metrics["test"]["ndcg@10"] <= 1
    assert "MovieLens-100K" in proc.stdout and "NDCG@10" in proc.stdout
    glance = proc.stdout[proc.stdout.index("at a glance"):]  # this run's test numbers beside the recorded reference
    assert f"NDCG@10 {metrics['test']['ndcg@10']:.4f}" in glance and "RecBole SASRec, recorded" in glance
    # a rerun reuses every finished stage
    again = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
                           cwd=ROOT, timeout=600)
    assert again.returncode == 0
    assert "up to date" in again.stdout + again.stderr
