"""Benchmark: items/s of ``learn.cex`` embedding vs ``SentenceTransformer.encode`` (same model, texts, max length, CPU).

Texts: the 5,327 RecFormer Scientific items (``../shared/data/amazon2018_scientific_recformer_items/meta.json``) through
``learn.data.text.item_text``. Both paths run in one process, alternately, ``--repeats`` times; the best time of each
is reported, plus the largest absolute and cosine difference between their outputs.

    .venv/bin/python benchmarks/bench_embed.py [--limit N] [--batch-size 64] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_ITEMS = ROOT.parent / "shared" / "data" / "amazon2018_scientific_recformer_items" / "meta.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=Path, default=DEFAULT_ITEMS)
    p.add_argument("--limit", type=int, default=None, help="first N items only (default: all)")
    p.add_argument("--batch-size", type=int, default=64, help="ours (sentence-transformers keeps its default 32)")
    p.add_argument("--st-batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=500)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from learn.cex import default_model_path, load_encoder
    from learn.data.text import item_text

    if a.threads:
        torch.set_num_threads(a.threads)
    meta = json.loads(a.items.read_text())
    texts = [item_text(v["input"][0]) for v in meta.values()][: a.limit]
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}")
    enc, model_id, _ = load_encoder(None, device="cpu", dtype="fp32", max_length=a.max_length)
    st = SentenceTransformer(str(default_model_path()), device="cpu")
    st.max_seq_length = a.max_length
    print(f"{len(texts)} texts, model {model_id}, max_length {a.max_length}, "
          f"mean {np.mean([len(t) for t in enc.token_ids(texts)]):.1f} tokens")
    best = {"learn": float("inf"), "sentence-transformers": float("inf")}
    ours = ref = None
    for r in range(a.repeats):
        t0 = time.perf_counter()
        ours = enc.embed(texts, batch_size=a.batch_size)
        best["learn"] = min(best["learn"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = st.encode(texts, batch_size=a.st_batch_size, convert_to_numpy=True)
        best["sentence-transformers"] = min(best["sentence-transformers"], time.perf_counter() - t0)
        print(f"repeat {r}: " + ", ".join(f"{k} {len(texts) / v:.1f} items/s" for k, v in best.items()))
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    cos = (ours * ref).sum(axis=1)
    rate = {k: len(texts) / v for k, v in best.items()}
    print(f"learn embed:           {rate['learn']:8.1f} items/s (batch {a.batch_size})")
    print(f"sentence-transformers: {rate['sentence-transformers']:8.1f} items/s (batch {a.st_batch_size})")
    print(f"ratio learn / sentence-transformers: {rate['learn'] / rate['sentence-transformers']:.2f}x")
    print(f"max |difference| {np.abs(ours - ref).max():.2e}, max cosine difference {1 - cos.min():.2e}")


if __name__ == "__main__":
    main()
