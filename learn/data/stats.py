"""``python -m learn stats DIR``: size and sequence-length distribution of a dataset or pretraining corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from learn.data.formats import is_corpus, load_dataset, load_pretrain_corpus
from learn.errors import ArgumentParser

BUCKET_EDGES = (1, 3, 5, 10, 20, 50, 100, 200, 500, 1000)  # bucket i holds lengths in [edge_i, edge_{i+1})


def length_stats(lengths: list[int]) -> dict:
    """min/mean/median/p90/p99/max and a bucket histogram {"1-2": n, ..., "1000+": n} of sequence lengths."""
    if not lengths:
        return {"count": 0}
    a = np.asarray(lengths)
    labels = ["0", *(f"{lo}-{hi - 1}" for lo, hi in zip(BUCKET_EDGES, BUCKET_EDGES[1:])), f"{BUCKET_EDGES[-1]}+"]
    counts = np.histogram(a, bins=[-np.inf, *BUCKET_EDGES, np.inf])[0]  # "0" holds lengths below 1
    return {
        "count": int(a.size),
        "min": int(a.min()),
        "mean": round(float(a.mean()), 2),
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": int(a.max()),
        "histogram": {label: int(n) for label, n in zip(labels, counts) if n},
    }


def dataset_stats(path: Path) -> dict:
    """Stats of a canonical dataset (lengths = each user's full train + val + test sequence)."""
    ds = load_dataset(path)
    lengths = [len(ds.sequence(u)) for u in ds.users]
    return {
        "kind": "dataset",
        "path": str(path),
        "users": ds.num_users,
        "items": ds.num_items,
        "interactions": ds.num_interactions,
        "items_without_meta": sum(k not in ds.meta for k in ds.item_keys),
        "items_without_text": sum(not t for t in ds.texts()),
        "sequence_length": length_stats(lengths),
        "train_length": length_stats([len(v) for v in ds.train.values()]),
    }


def corpus_stats(path: Path) -> dict:
    """Stats of a pretraining corpus (lengths per train / dev sequence)."""
    c = load_pretrain_corpus(path)
    return {
        "kind": "pretrain corpus",
        "path": str(path),
        "sequences": {"train": len(c.train), "dev": len(c.dev)},
        "items": c.num_items,
        "interactions": c.num_interactions,
        "items_without_meta": sum(k not in c.meta for k in c.smap),
        "smap_generated": c.smap_generated,
        "sequence_length": length_stats([len(s) for s in c.train + c.dev]),
        "train_length": length_stats([len(s) for s in c.train]),
        "dev_length": length_stats([len(s) for s in c.dev]),
    }


def format_stats(s: dict) -> str:
    lines = [f"{s['path']} ({s['kind']})"]
    if s["kind"] == "dataset":
        lines.append(f"  users         {s['users']:>12,}")
    else:
        lines.append(f"  sequences     {s['sequences']['train']:>12,} train / {s['sequences']['dev']:,} dev")
    lines.append(f"  items         {s['items']:>12,}")
    lines.append(f"  interactions  {s['interactions']:>12,}")
    lines.append(f"  no meta       {s['items_without_meta']:>12,} items")
    for key in ("sequence_length", "train_length", "dev_length"):
        d = s.get(key)
        if not d or not d.get("count"):
            continue
        lines.append(
            f"  {key.replace('_', ' ')}: min {d['min']}  mean {d['mean']}  median {d['median']:g}  "
            f"p90 {d['p90']:g}  p99 {d['p99']:g}  max {d['max']}"
        )
        lines.append("    " + "  ".join(f"[{b}] {n:,}" for b, n in d["histogram"].items()))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = ArgumentParser(
        prog="python -m learn stats",
        description="Users, items, interactions, items without meta and the sequence-length distribution.",
    )
    p.add_argument("path", type=Path, metavar="DIR", help="a canonical dataset or a pretraining corpus folder")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = p.parse_args(argv)
    s = corpus_stats(args.path) if is_corpus(args.path) else dataset_stats(args.path)
    print(json.dumps(s, indent=2) if args.json else format_stats(s))
    return 0
