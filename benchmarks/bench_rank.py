"""Full-ranking speed and memory: ``learn.metrics.full_ranks`` against the matmul bound, CPU, one run.

    .venv/bin/python benchmarks/bench_rank.py                 # Scientific-sized and 1M-item cases, RSS children
    .venv/bin/python benchmarks/bench_rank.py --quick         # tiny sizes (smoke test; numbers meaningless)

For each case ``users x items x dim`` (random fp32 vectors, random targets) it times, best of ``--reps``:

- ``full_ranks`` (rank = number of items scoring strictly higher than the target; items in chunks, users in blocks,
  a running count per chunk, so only ~16 MiB of scores exist at once whatever the catalogue size);
- the same blocked GEMMs alone (``blocked_gemm_s``): what ranking costs beyond the matmuls;
- the matmul bound: ``2 * users * items * dim`` flops at the peak fp32 GEMM rate measured in this run on a large
  square matmul (``common.gemm_peak``). ``bound_share`` = bound time / full_ranks time (the issue's target is >= 50 %).

Each is timed at 1 thread and at torch's default thread count (``--threads`` to choose), the peak at the same count.

Peak memory: the script re-runs itself as ``/usr/bin/time -v python bench_rank.py --child N`` for catalogues of
250k, 500k and 1M items x 64-d (1,000 users, one full_ranks call each) and reads "Maximum resident set size". A
child with ``--child N --no-rank`` only allocates the same tensors (the floor: interpreter, torch, the item matrix).
``rss_over_floor_MiB`` (what ranking adds) stays flat as the catalogue grows, while a dense ``users x items`` score
matrix would need ``dense_scores_MiB``.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import MiB, add_child_args, best, gemm_peak, machine, machine_line, peak_rss, write_result  # noqa: E402

from learn.metrics import full_ranks, score_blocking  # noqa: E402


def gemm_only(users: torch.Tensor, items: torch.Tensor) -> None:
    """The same user/item blocking as full_ranks on CPU, matmuls only."""
    U, N = users.shape[0], items.shape[0]
    ub, cs = score_blocking(U, N, users.shape[1])
    out = torch.empty(ub * cs)
    for u0 in range(0, U, ub):
        for i0 in range(0, N, cs):
            u, n = min(U, u0 + ub) - u0, min(N, i0 + cs) - i0
            torch.matmul(users[u0 : u0 + u], items[i0 : i0 + n].T, out=out[: u * n].view(u, n))


def child(n_items: int, users: int, dim: int, rank: bool) -> None:
    torch.manual_seed(0)
    u, it, t = torch.randn(users, dim), torch.randn(n_items, dim), torch.randint(0, n_items, (users,))
    t0 = time.perf_counter()
    if rank:
        full_ranks(u, it, t)
    print(f"child_wall_s={time.perf_counter() - t0:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (smoke test)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch thread counts to time (default: 1 and torch's default)")
    add_child_args(ap)
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="folder for bench_rank.json (default benchmarks/results; with --quick benchmarks/out/quick)")
    a = ap.parse_args()
    if a.child is not None:
        child(a.child, a.users, a.dim, not a.no_rank)
        return

    default_threads = torch.get_num_threads()
    a.threads = a.threads or sorted({1, default_threads})
    info = machine()
    print(machine_line(info))
    torch.manual_seed(0)
    if a.quick:
        cases, rss_sizes, reps, peak_n, rss_users = [("tiny", 300, 5000, 32)], [2000, 8000], 1, 256, 100
    else:
        cases = [("Scientific-sized (BERT-size vectors)", 8442, 4385, 768), ("1M-item catalogue", 1000, 1_000_000, 64)]
        rss_sizes, reps, peak_n, rss_users = [250_000, 500_000, 1_000_000], a.reps, 2048, 1000
    rows = []
    for threads in a.threads:
        torch.set_num_threads(threads)
        peak = gemm_peak(peak_n, reps) / 1e9
        print(f"{threads} thread(s): peak fp32 GEMM {peak_n}^3: {peak:.1f} GFLOP/s")
        for label, U, N, d in cases:
            users, items, t = torch.randn(U, d), torch.randn(N, d), torch.randint(0, N, (U,))
            dt = best(partial(full_ranks, users, items, t), reps)
            gm = best(partial(gemm_only, users, items), reps)
            bound = 2 * U * N * d / (peak * 1e9)
            rows.append({"table": "speed: full_ranks vs the matmul bound", "case": label, "threads": threads,
                         "users": U, "items": N, "dim": d, "full_ranks_s": dt,
                         "users_per_s": U / dt, "blocked_gemm_s": gm, "gemm_share": gm / dt, "peak_gflops": peak,
                         "bound_s": bound, "bound_share": bound / dt, "target": ">= 0.5 of bound",
                         "met": "yes" if bound / dt >= 0.5 else "no"})
            print(f"  {label}: {U} x {N:,} x {d}: {dt:.2f}s = {U / dt:,.0f} users/s; blocked GEMMs {gm:.2f}s "
                  f"({gm / dt:.0%}); matmul bound {bound:.2f}s ({bound / dt:.0%})")
    torch.set_num_threads(default_threads)
    floor_mib, _ = peak_rss(__file__, rss_sizes[-1], rss_users, 64, rank=False)
    for N in rss_sizes:
        floor_n, _ = peak_rss(__file__, N, rss_users, 64, rank=False) if N != rss_sizes[-1] else (floor_mib, 0.0)
        rss, wall = peak_rss(__file__, N, rss_users, 64, rank=True)
        row = {"table": "peak memory: one full_ranks call per child process under /usr/bin/time -v",
               "case": f"{rss_users} users x {N:,} items x 64",
               "threads": default_threads, "users": rss_users,
               "items": N, "dim": 64, "child_rank_s": wall,
               "item_matrix_MiB": N * 64 * 4 / MiB, "peak_rss_MiB": rss, "floor_rss_MiB": floor_n,
               "rss_over_floor_MiB": rss - floor_n, "dense_scores_MiB": rss_users * N * 4 / MiB}
        rows.append(row)
        print(f"{N:,} items: peak RSS {rss:.0f} MiB, floor (tensors only) {floor_n:.0f} MiB, ranking adds "
              f"{rss - floor_n:.0f} MiB (a dense score matrix would be {row['dense_scores_MiB']:.0f} MiB)")
    notes = (f"Random fp32 vectors, best of {reps} per timing, at each torch thread count in `threads`. "
             f"`bound_share` = 2·users·items·dim flops at `peak_gflops` (a {peak_n}³ fp32 matmul at the same thread "
             "count, same run) / full_ranks "
             "time; `gemm_share` = the same blocked GEMMs alone / full_ranks time. Peak-RSS rows: one child process "
             "per catalogue size under `/usr/bin/time -v`; `floor_rss_MiB` is a child that only allocates the same "
             "tensors (interpreter + torch + item matrix), so `rss_over_floor_MiB` is what ranking adds; "
             "`dense_scores_MiB` is what an unchunked users × items score matrix would take. On a loaded 2-core "
             "machine (see the load average) 2 threads can be slower than 1: each parallel op waits for a core.")
    write_result("bench_rank", rows, notes, info=info, out_dir=a.out_dir, quick=a.quick)


if __name__ == "__main__":
    main()
