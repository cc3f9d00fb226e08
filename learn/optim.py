"""The optimiser and learning-rate schedule of a run: AdamW with weight decay on matrices only (the fused kernel when
every parameter is a float on one CPU or CUDA device), and linear warm-up then cosine decay, both counted in optimizer
steps."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(model: nn.Module, t) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only; the fused kernel (CPU and CUDA) when every parameter is float."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    params = decay + no_decay
    fused = bool(params) and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params) and len(
        {p.device.type for p in params}) == 1 and params[0].device.type in ("cpu", "cuda")
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), eps=t.eps, fused=fused or None)


def cosine_lambda(warmup: int, total: int):
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return f
