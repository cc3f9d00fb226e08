"""Benchmark: reading random batches (64 users x 40 items) from the LMDB item store vs an in-RAM numpy gather.

The store path is ``ItemStore.get(keys)``: each key is looked up in LMDB once per process and its zero-copy view into
the memory map kept, so a batch is one join of views + ``np.frombuffer``. Two store figures: the first pass over the
batches (every item's first read is an LMDB lookup; the environment is reopened before each repeat) and the steady
state (what every later epoch sees). The RAM baselines gather from a float32 table, by item key (dict lookup + fancy
index, the same interface) and by integer index. Random vectors; the store is built in a temporary folder.

    .venv/bin/python benchmarks/bench_store.py [--items 5327] [--dims 384 4096] [--batches 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import best, command, machine, machine_line, write_result  # noqa: E402
from learn.data import store as store_mod  # noqa: E402
from learn.data.store import ItemStore, StoreMeta, write_store  # noqa: E402


def _best(fn, batches, repeats: int = 3, before=None) -> float:
    """Best seconds per batch of one pass of ``fn`` over ``batches``."""
    def one_pass() -> None:
        for b in batches:
            fn(b)

    return best(one_pass, repeats, before) / len(batches)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=5327)
    p.add_argument("--dims", type=int, nargs="+", default=[384, 4096])
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--seq", type=int, default=40)
    p.add_argument("--batches", type=int, default=200)
    a = p.parse_args()
    info = machine()
    print("command:", command())
    print("machine:", machine_line(info))
    rng = np.random.default_rng(0)
    keys = [f"B{i:09d}" for i in rng.permutation(10**9)[: a.items]]
    key2idx = {k: i for i, k in enumerate(keys)}
    idx_batches = [rng.integers(0, a.items, a.users * a.seq) for _ in range(a.batches)]
    key_batches = [[keys[i] for i in b] for b in idx_batches]
    print(f"{a.items} items, batches of {a.users} x {a.seq} = {a.users * a.seq} reads, {a.batches} batches\n")
    print(f"{'dim':>5} {'dtype':>8} {'RAM by index':>13} {'RAM by key':>11} {'store 1st pass':>15} "
          f"{'store steady':>13} {'steady/RAM-by-key':>18}")
    rows = []
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
                path = Path(tmp) / "s"
                t_cold = _best(store.get, key_batches, before=lambda p=path: store_mod._release(p))
                t_store = _best(store.get, key_batches)
                store.close()
                store_mod._release(path)
            print(f"{dim:>5} {dtype:>8} {t_idx * 1e3:>10.2f} ms {t_key * 1e3:>8.2f} ms {t_cold * 1e3:>12.2f} ms "
                  f"{t_store * 1e3:>10.2f} ms {t_key / t_store:>17.2f}x")
            rows.append({"dim": dim, "dtype": dtype, "ram_by_index_ms": t_idx * 1e3, "ram_by_key_ms": t_key * 1e3,
                         "store_first_pass_ms": t_cold * 1e3, "store_steady_ms": t_store * 1e3,
                         "steady_over_ram_by_key": t_key / t_store, "first_pass_over_ram_by_key": t_key / t_cold})
    print("\n(ratio > 1 means the store read is faster than the in-RAM gather by key; target >= 0.5x)")
    write_result("bench_store", rows, info=info, notes=(
        f"{a.items} items, batches of {a.users} users x {a.seq} items = {a.users * a.seq} reads, {a.batches} batches, "
        "best of 3 passes; times per batch. Steady state = later epochs (one LMDB lookup per item per process, then "
        "zero-copy views); first pass = every item's first lookup."))


if __name__ == "__main__":
    main()
