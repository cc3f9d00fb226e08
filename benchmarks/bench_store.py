"""Benchmark: reading random batches (64 users x 40 items) from the LMDB item store vs an in-RAM numpy gather.

The store path is ``ItemStore.get(keys)`` (one read transaction, sorted ``getmulti``, ``np.frombuffer``); the RAM
baselines gather from a float32 table, by item key (dict lookup + fancy index, the same interface) and by integer
index. Random vectors; the store is built in a temporary folder (page cache warm after the first pass).

    .venv/bin/python benchmarks/bench_store.py [--items 5327] [--dims 384 4096] [--batches 200]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learn.data.store import ItemStore, StoreMeta, write_store  # noqa: E402


def _best(fn, batches, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            fn(b)
        best = min(best, time.perf_counter() - t0)
    return best / len(batches)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=5327)
    p.add_argument("--dims", type=int, nargs="+", default=[384, 4096])
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--seq", type=int, default=40)
    p.add_argument("--batches", type=int, default=200)
    a = p.parse_args()
    import torch

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    keys = [f"B{i:09d}" for i in rng.permutation(10**9)[: a.items]]
    key2idx = {k: i for i, k in enumerate(keys)}
    idx_batches = [rng.integers(0, a.items, a.users * a.seq) for _ in range(a.batches)]
    key_batches = [[keys[i] for i in b] for b in idx_batches]
    print(f"{a.items} items, batches of {a.users} x {a.seq} = {a.users * a.seq} reads, {a.batches} batches\n")
    print(f"{'dim':>5} {'dtype':>8} {'RAM by index':>13} {'RAM by key':>11} {'store':>9} {'store/RAM-by-key':>17}")
    for dim in a.dims:
        table = rng.standard_normal((a.items, dim)).astype(np.float32)
        t_idx = _best(lambda b, t=table: t[b], idx_batches)
        t_key = _best(lambda ks, t=table: t[[key2idx[k] for k in ks]], key_batches)
        for dtype in ("float32", "float16"):
            with tempfile.TemporaryDirectory() as tmp:
                write_store(Path(tmp) / "s", keys, table, StoreMeta(dim=dim, dtype=dtype, count=0), dtype=dtype)
                store = ItemStore(Path(tmp) / "s")
                ref = store.get(key_batches[0])
                np.testing.assert_allclose(ref, table[idx_batches[0]], atol=1e-2 if dtype == "float16" else 0)
                t_store = _best(store.get, key_batches)
                store.close()
            print(f"{dim:>5} {dtype:>8} {t_idx * 1e3:>10.2f} ms {t_key * 1e3:>8.2f} ms {t_store * 1e3:>6.2f} ms "
                  f"{t_key / t_store:>16.2f}x")
    print("\n(store/RAM-by-key > 1 means the store read is faster than the in-RAM gather by key)")


if __name__ == "__main__":
    main()
