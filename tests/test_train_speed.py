"""Training speed-ups keep the maths: packed encoding (encode_positions / encode_users) equals the padded
encode_sequence, the fused AdamW matches the reference one, and benchmarks/bench_train.py --quick writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from learn.config import TrainConfig
from learn.model import LEARNModel, ModelConfig
from learn.optim import build_optimizer
from tests.conftest import ROOT

VARIANTS = [{}, {"position": "learned"}, {"item_tower": "separate"}, {"item_id_embedding": True, "num_items": 50},
            {"num_layers": 1}, {"num_layers": 0}]


def _model(**kw) -> LEARNModel:
    torch.manual_seed(0)
    cfg = dict(input_dim=16, hidden_size=24, num_heads=4, ffn_size=32, output_dim=20, num_layers=2, max_len=8)
    return LEARNModel(ModelConfig(**{**cfg, **kw})).eval()


def _batch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 7, 16, generator=g)
    lengths = torch.tensor([3, 7, 1, 4, 0])
    mask = torch.arange(7)[None] < lengths[:, None]
    return x, mask, lengths


@pytest.mark.parametrize("kw", VARIANTS)
def test_encode_positions_equals_padded_sequence(kw):
    m = _model(**kw)
    x, mask, lengths = _batch()
    ids = torch.randint(0, 50, mask.shape) if m.cfg.item_id_embedding else None
    ref = m.encode_sequence(x, mask, ids)
    last = torch.zeros_like(mask)
    last[torch.arange(4), lengths[:4] - 1] = True  # one loss position per row, row 4 has none
    holey = mask.clone()
    holey[1, 2] = False  # not right-padded: the explicit-mask path
    outside = torch.zeros_like(mask)
    outside[0, 5], outside[1, 4], outside[2, 1], outside[4, 0] = True, True, True, True  # padded positions read
    for msk, sel in [(mask, mask), (mask, last), (mask, outside), (holey, holey), (holey, holey | outside)]:
        want = m.encode_sequence(x, msk, ids)[sel]
        torch.testing.assert_close(m.encode_positions(x, msk, sel, ids), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(m.encode_users(x, mask, ids), ref[torch.arange(5), (lengths - 1).clamp(min=0)],
                               rtol=0, atol=1e-6)


def test_encode_positions_gradients_match():
    m = _model(dropout=0.0).train()
    x, mask, _ = _batch()
    ref = m.encode_sequence(x, mask)[mask].square().sum()
    ref_grads = torch.autograd.grad(ref, list(m.parameters()), allow_unused=True)
    out = m.encode_positions(x, mask, mask).square().sum()
    grads = torch.autograd.grad(out, list(m.parameters()), allow_unused=True)
    for a, b in zip(ref_grads, grads, strict=True):
        if a is None:
            assert b is None or not b.abs().any()
        else:
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_packed_path_runs():
    m = _model().train()
    x, mask, _ = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.encode_positions(x, mask, mask)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_fused_adamw_matches_reference():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)
    b.load_state_dict(a.state_dict())
    t = TrainConfig(lr=1e-2, weight_decay=0.1)
    fused = build_optimizer(a, t)
    assert fused.defaults["fused"]
    ref = torch.optim.AdamW([{"params": [b.weight], "weight_decay": 0.1}, {"params": [b.bias], "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.98), eps=1e-6)
    x = torch.randn(8, 6)
    for _ in range(3):
        for model, opt in ((a, fused), (b, ref)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.bias, b.bias, rtol=1e-5, atol=1e-6)


def test_bench_train_quick_writes_json(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--quick",
                          "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((tmp_path / "bench_train.json").read_text())
    assert {"name", "command", "machine", "date", "rows", "notes"} <= set(doc)
    assert "--quick" in doc["command"]
    assert {r["config"] for r in doc["rows"]} == {"bert4L-pretrain", "bert4L-finetune"}
    for row in doc["rows"]:
        for key in ("seq_per_s", "step_s", "model_gflop_per_s", "gemm_peak_gflop_per_s", "peak_fraction",
                    "fwd_gflop_per_step", "data_frac", "optimizer_frac", "batch", "loss"):
            assert key in row, key
        assert row["seq_per_s"] > 0 and row["fwd_gflop_per_step"] > 0 and 0 < row["peak_fraction"]
    assert "seq/s" in out.stdout and "bench_train.py --quick" in doc["command"]
