"""``learn recommend --all`` in users/s next to the eval ranking on the same data, CPU, one run.

    .venv/bin/python benchmarks/bench_recommend.py            # Scientific-sized + 1M-item cases, RSS children
    .venv/bin/python benchmarks/bench_recommend.py --quick    # tiny sizes (smoke test; numbers meaningless)

Two tables:

- ranking only, on random fp32 embeddings (as ``bench_rank.py``): eval's ``learn.metrics.full_ranks`` (rank of one
  target per user) against ``learn.recommend.topk_blocked`` (top-10 items per user, what ``recommend --all`` writes),
  same user blocks and item chunks (``score_blocking``), best of ``--reps``;
- end to end, on a synthetic dataset + 384-d item store (MiniLM-sized vectors) and a randomly initialised model of
  the demo's architecture (``configs/demo_finetune.yaml``: hidden 64, 2 layers, output 64, text + ID): the test-split
  evaluation of ``learn eval`` (``evaluate_split``: encode the catalogue and the users, rank every item) against
  ``python -m learn recommend --all --history-from test -k 10 --out recs.jsonl`` run in-process (load the checkpoint,
  dataset and store, encode, rank, write JSON lines), each timed once, users / wall seconds.

Peak memory: ``topk_blocked`` for 1,000 users over 250k / 1M items x 64 in a child process under ``/usr/bin/time -v``
(as ``bench_rank.py``), against a child that only allocates the same tensors: what top-k ranking adds stays flat.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import MiB, add_child_args, best, machine, machine_line, peak_rss, write_result  # noqa: E402

from learn.metrics import full_ranks  # noqa: E402
from learn.recommend import topk_blocked  # noqa: E402


def child(n_items: int, users: int, dim: int, rank: bool) -> None:
    torch.manual_seed(0)
    u, it = torch.randn(users, dim), torch.randn(n_items, dim)
    t0 = time.perf_counter()
    if rank:
        topk_blocked(u, it, 10)
    print(f"child_wall_s={time.perf_counter() - t0:.3f}")


def synthetic_run(root: Path, n_users: int, n_items: int, dim: int = 384, seed: int = 0) -> tuple[Path, Path, Path]:
    """A leave-one-out dataset (random walks over the items), a dim-d item store and a demo-architecture model."""
    from learn.checkpoint import save_pretrained
    from learn.data.formats import SeqDataset, write_dataset
    from learn.data.store import write_store
    from learn.model import LEARNModel, ModelConfig

    rng = np.random.default_rng(seed)
    keys = [f"I{i:07d}" for i in range(n_items)]
    train, val, test = {}, {}, {}
    for u in range(n_users):
        seq = rng.integers(0, n_items, int(rng.integers(5, 30))).tolist()
        train[str(u)], val[str(u)], test[str(u)] = seq[:-2], [seq[-2]], [seq[-1]]
    ds = SeqDataset(root=root / "data", name="synthetic", train=train, val=val, test=test,
                    smap={k: i for i, k in enumerate(keys)}, umap={f"U{u}": u for u in range(n_users)},
                    meta={k: {"title": f"item {k}"} for k in keys})
    write_dataset(ds, root / "data")
    vecs = rng.normal(size=(n_items, dim)).astype("float32")
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    write_store(root / "store", keys, vecs, meta={"dim": dim, "dtype": "float32", "count": 0, "model": "random"})
    torch.manual_seed(seed)
    cfg = ModelConfig(input_dim=dim, hidden_size=64, num_layers=2, num_heads=2, ffn_size=256, output_dim=64,
                      max_len=50, position="learned", item_id_embedding=True, num_items=n_items)
    save_pretrained(LEARNModel(cfg), cfg, root / "model", {"data": {"max_history": 50}})
    return root / "model", root / "data", root / "store"


def end_to_end(label: str, n_users: int, n_items: int) -> list[dict]:
    from learn.checkpoint import load_pretrained
    from learn.data.bundle import load_bundle as load_eval_data
    from learn.evaluate import evaluate_split
    from learn.recommend import main as recommend_main

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, data, store = synthetic_run(Path(tmp), n_users, n_items)
        t0 = time.perf_counter()
        model = load_pretrained(model_dir)
        ev = load_eval_data(data, store)
        t1 = time.perf_counter()
        evaluate_split(model, ev, "test", max_history=50, batch_size=256)
        t2 = time.perf_counter()
        rows.append({"table": "end to end: the same users, the same model", "case": label, "command": "eval (test)",
                     "users": n_users, "items": n_items, "threads": torch.get_num_threads(), "load_s": t1 - t0,
                     "rank_s": t2 - t1, "users_per_s": n_users / (t2 - t1),
                     "what": "evaluate_split: encode catalogue + users, full ranking of the target"})
        out = Path(tmp) / "recs.jsonl"
        t0 = time.perf_counter()
        recommend_main(["--ckpt", str(model_dir), "--data", str(data), "--store", str(store), "--all", "-k", "10",
                        "--history-from", "test", "--out", str(out), "--device", "cpu", "--no-progress"])
        t1 = time.perf_counter()
        lines = sum(1 for _ in out.open())
        rows.append({"table": "end to end: the same users, the same model", "case": label,
                     "command": "recommend --all -k 10", "users": lines, "items": n_items,
                     "threads": torch.get_num_threads(), "load_s": None, "rank_s": t1 - t0,
                     "users_per_s": lines / (t1 - t0),
                     "what": "whole command: load checkpoint + data + store, encode, top-10, write JSON lines"})
    for r in rows[-2:]:
        print(f"  {label}: {r['command']}: {r['users']:,} users in {r['rank_s']:.2f}s = "
              f"{r['users_per_s']:,.0f} users/s")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (smoke test)")
    ap.add_argument("--reps", type=int, default=3)
    add_child_args(ap)
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="folder for bench_recommend.json (default benchmarks/results; --quick: benchmarks/out/quick)")
    a = ap.parse_args()
    if a.child is not None:
        child(a.child, a.users, a.dim, not a.no_rank)
        return
    info = machine()
    print(machine_line(info))
    torch.manual_seed(0)
    if a.quick:
        cases, e2e, rss_sizes, reps, rss_users = [("tiny", 300, 5000, 32)], [("tiny", 200, 500)], [2000, 8000], 1, 100
    else:
        cases = [("Scientific-sized", 8442, 4385, 64), ("1M-item catalogue", 1000, 1_000_000, 64)]
        e2e = [("ML-100K-sized", 943, 1682), ("Scientific-sized", 8442, 4385)]
        rss_sizes, reps, rss_users = [250_000, 1_000_000], a.reps, 1000
    rows = []
    for label, U, N, d in cases:
        users, items, t = torch.randn(U, d), torch.randn(N, d), torch.randint(0, N, (U,))
        for name, f in (("eval full_ranks (rank of the target)", partial(full_ranks, users, items, t)),
                        ("recommend topk_blocked (top-10)", partial(topk_blocked, users, items, 10))):
            dt = best(f, reps)
            rows.append({"table": "ranking only: random embeddings", "case": label, "command": name, "users": U,
                         "items": N, "dim": d, "threads": torch.get_num_threads(), "rank_s": dt,
                         "users_per_s": U / dt})
            print(f"  {label}: {name}: {U:,} x {N:,} x {d}: {dt:.3f}s = {U / dt:,.0f} users/s")
    for label, U, N in e2e:
        rows += end_to_end(label, U, N)
    floor_top, _ = peak_rss(__file__, rss_sizes[-1], rss_users, 64, rank=False)
    for N in rss_sizes:
        floor = peak_rss(__file__, N, rss_users, 64, rank=False)[0] if N != rss_sizes[-1] else floor_top
        rss, wall = peak_rss(__file__, N, rss_users, 64, rank=True)
        rows.append({"table": "peak memory: one topk_blocked call (top-10) per child under /usr/bin/time -v",
                     "case": f"{rss_users} users x {N:,} items x 64", "users": rss_users, "items": N,
                     "child_rank_s": wall, "peak_rss_MiB": rss, "floor_rss_MiB": floor,
                     "rss_over_floor_MiB": rss - floor, "dense_scores_MiB": rss_users * N * 4 / MiB})
        print(f"{N:,} items: peak RSS {rss:.0f} MiB, floor {floor:.0f} MiB, top-k adds {rss - floor:.0f} MiB "
              f"(dense scores would be {rss_users * N * 4 / MiB:.0f} MiB)")
    notes = ("Ranking-only rows: random fp32 vectors, best of the repeats, at torch's default thread count. "
             "End-to-end rows: one timing each on a synthetic dataset (random item walks, 3-28 items per user, "
             "384-d unit item vectors) with a randomly initialised demo-architecture model; `eval (test)` times "
             "`evaluate_split` after loading (load_s apart), `recommend --all` times the whole command in-process "
             "including its loading and the JSON-lines output. Both use the test-split histories (train + val). "
             "Memory rows: `rss_over_floor_MiB` is what top-k ranking adds over a child that only allocates the same "
             "tensors; `dense_scores_MiB` is what a users x items score matrix would take.")
    write_result("bench_recommend", rows, notes, info=info, out_dir=a.out_dir, quick=a.quick)
    print(json.dumps({"rows": len(rows)}))


if __name__ == "__main__":
    main()
