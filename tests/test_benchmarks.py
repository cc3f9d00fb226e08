"""Smoke tests of the benchmark scripts: they run end to end at tiny sizes and write their JSON (no timing checks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*args], cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=600)


def test_bench_scale_quick(tmp_path):
    p = run(PY, "benchmarks/bench_scale.py", "--quick", "--work", str(tmp_path / "w"), "--out-dir", str(tmp_path))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    doc = json.loads((tmp_path / "bench_scale.json").read_text())
    measures = [r["measure"] for r in doc["rows"]]
    assert any("LMDB store" in m for m in measures)
    assert any(m.startswith("pipeline (streamed dataset)") for m in measures)
    assert any(m.startswith("pipeline (trainer dataset)") for m in measures)
    assert any(m.startswith("trainer consumes") for m in measures)
    assert any(m.startswith("ratio pipeline") for m in measures)
    assert all(r["value"] > 0 for r in doc["rows"])
    assert all(r.get("peak_rss_MiB") is None or r["peak_rss_MiB"] > 0 for r in doc["rows"])
    assert doc["command"].endswith(f"--out-dir {tmp_path}") and doc["machine"]["cpus"] >= 1


def test_bench_rank_quick(tmp_path):
    p = run(PY, "benchmarks/bench_rank.py", "--quick", "--threads", "1", "--out-dir", str(tmp_path))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = json.loads((tmp_path / "bench_rank.json").read_text())["rows"]
    assert rows[0]["users_per_s"] > 0 and 0 < rows[0]["bound_share"]
    rss = [r for r in rows if "peak_rss_MiB" in r]
    assert len(rss) == 2 and all(r["peak_rss_MiB"] >= r["floor_rss_MiB"] > 0 for r in rss)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA device")
def test_bench_train_epoch_mode_appends(tmp_path):
    from tests.conftest import make_tiny_dataset

    data, store = make_tiny_dataset(tmp_path)
    args = ["benchmarks/bench_train.py", "--epoch", "--no-recbole", "--threads", "1", "--dataset", str(data),
            "--store", str(store), "--out-dir", str(tmp_path), "--work-dir", str(tmp_path / "w"), "--override",
            "model.hidden_size=32", "model.num_heads=2", "model.ffn_size=64", "model.output_dim=32"]
    for extra in ([], ["--append"]):
        p = run(PY, *args[:1], *extra, *args[1:], env={"OMP_NUM_THREADS": "1"})
        assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((tmp_path / "bench_epoch.json").read_text())
    assert [(r["system"], r["code"], r["threads"]) for r in doc["rows"]] == [("LEARN", "working tree", 1)] * 2
    assert all(r["epoch_s"] > 0 and r["epoch_vs_learn"] == 1 and r["steps"] > 0 for r in doc["rows"])
    assert "|| Appended run (" in doc["notes"] and "appended_run" in doc["machine"]
    p = run(PY, "benchmarks/bench_train.py", "--threads", "1", "2")
    assert p.returncode == 2 and "--threads takes one value without --epoch" in p.stderr


def test_gpu_scripts_refuse_without_cuda():
    p = run("bash", "benchmarks/gpu.sh", env={"PY": PY})
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "no CUDA device" in p.stderr
    p = run(PY, "benchmarks/bench_gpu.py", "--only", "cex")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "no CUDA device" in p.stderr


def test_bench_gpu_dry_run(tmp_path):
    p = run(PY, "benchmarks/bench_gpu.py", "--dry-run", "--out-dir", str(tmp_path))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    (path,) = tmp_path.glob("gpu_*.json")
    doc = json.loads(path.read_text())
    parts = [r["part"] for r in doc["rows"]]
    assert parts == ["pretrain", "finetune", "cex 1b"]
    assert all(r.get("steps_per_s", 1) > 0 and r.get("tokens_per_s", 1) > 0 for r in doc["rows"])
    assert "DRY RUN" in doc["notes"]


def test_bench_gpu_defaults_and_paper_sizes_on_meta():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_gpu
    import gpu_cex

    from learn.model import LEARNModel

    a = bench_gpu.parse_args([])
    assert (a.batch, a.catalogue, a.precision, a.compile, a.only) == (1024, 38_000, "bf16", "both",
                                                                       ["pretrain", "finetune", "cex"])
    with torch.device("meta"):
        for name in ("pretrain_amazon", "finetune_amazon"):
            cfg = bench_gpu.model_config(name, tiny=False)
            assert (cfg.num_layers, cfg.hidden_size, cfg.input_dim) == (4, 768, 4096)
            assert 25e6 < sum(p.numel() for p in LEARNModel(cfg).parameters()) < 60e6
    from transformers import AutoModel, LlamaConfig

    with torch.device("meta"):
        model = AutoModel.from_config(LlamaConfig(vocab_size=32000, **gpu_cex.SIZES["7b"]))
    assert 6e9 < sum(p.numel() for p in model.parameters()) < 7.5e9
