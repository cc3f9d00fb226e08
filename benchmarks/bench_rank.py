"""Full-ranking speed: learn.metrics.full_ranks vs the matmul bound (the same blocked GEMMs alone), CPU.

    .venv/bin/python benchmarks/bench_rank.py            # Scientific-sized and a 1M-item catalogue
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from learn.metrics import full_ranks  # noqa: E402


def best(f, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def gemm_only(users: torch.Tensor, items: torch.Tensor) -> None:
    """The same user/item blocking as full_ranks on CPU, matmuls only."""
    U, N = users.shape[0], items.shape[0]
    ub = min(U, 1024)
    cap = min(N, max(1024, (1 << 22) // ub))
    cs = -(-N // -(-N // cap))
    out = torch.empty(ub * cs)
    for u0 in range(0, U, ub):
        for i0 in range(0, N, cs):
            u, n = min(U, u0 + ub) - u0, min(N, i0 + cs) - i0
            torch.matmul(users[u0 : u0 + u], items[i0 : i0 + n].T, out=out[: u * n].view(u, n))


def main() -> None:
    torch.manual_seed(0)
    print(f"$ {' '.join(sys.argv)}   (cpus {os.cpu_count()}, torch threads {torch.get_num_threads()})")
    for U, N, d in [(8442, 4385, 768), (1000, 1_000_000, 64)]:
        users, items, t = torch.randn(U, d), torch.randn(N, d), torch.randint(0, N, (U,))
        dt = best(lambda: full_ranks(users, items, t))  # noqa: B023
        gm = best(lambda: gemm_only(users, items))  # noqa: B023
        print(f"{U} x {N:,} x {d}: {dt:.2f}s = {U / dt:,.0f} users/s; GEMMs alone {gm:.2f}s ({gm / dt:.0%} of bound)")


if __name__ == "__main__":
    main()
