"""Benchmark: items/s of ``learn.cex`` embedding vs ``SentenceTransformer.encode`` (same model, texts, max length, CPU).

Texts: the 5,327 RecFormer Scientific items (``../shared/data/amazon2018_scientific_recformer_items/meta.json``) through
``learn.data.text.item_text``. Every path runs in one process, alternately, ``--repeats`` times; the best time of each
is reported, plus the largest cosine difference of each output to sentence-transformers' default (fp32) output.
Paths: ``learn embed`` in fp32 (the CPU default: batch-invariant to 1e-7) and in bf16 (``--dtype bf16``, native on
CPUs with AVX512-BF16/AMX), sentence-transformers as a user would call it (fp32) and, for reference, with its model
loaded in bf16.

    .venv/bin/python benchmarks/bench_embed.py [--limit N] [--batch-size 64] [--threads T] [--dtypes fp32 bf16]
"""

from __future__ import annotations

import argparse
import json
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
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    a = p.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from benchmarks.common import command, machine, machine_line, write_result
    from learn.data.text import item_text
    from learn.encoder import default_model_path, load_encoder

    if a.threads:
        torch.set_num_threads(a.threads)
    meta = json.loads(a.items.read_text())
    texts = [item_text(v["input"][0]) for v in meta.values()][: a.limit]
    info = machine()
    print("command:", command())
    print("machine:", machine_line(info))
    paths = {}
    for dt in a.dtypes:
        enc, model_id, _ = load_encoder(None, device="cpu", dtype=dt, max_length=a.max_length)
        paths[f"learn embed {dt}"] = (lambda e=enc: e.embed(texts, batch_size=a.batch_size), a.batch_size)
        st = SentenceTransformer(str(default_model_path()), device="cpu",
                                 model_kwargs={"dtype": getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dt])})
        st.max_seq_length = a.max_length
        paths[f"sentence-transformers {dt}"] = (
            lambda m=st: m.encode(texts, batch_size=a.st_batch_size, convert_to_numpy=True), a.st_batch_size)
    print(f"{len(texts)} texts, model {model_id}, max_length {a.max_length}, "
          f"mean {np.mean([len(t) for t in enc.token_ids(texts)]):.1f} tokens")
    best = dict.fromkeys(paths, float("inf"))
    outs: dict[str, np.ndarray] = {}
    for r in range(a.repeats):
        for name, (fn, _) in paths.items():
            t0 = time.perf_counter()
            out = np.asarray(fn(), dtype=np.float32)
            best[name] = min(best[name], time.perf_counter() - t0)
            outs[name] = out / np.linalg.norm(out, axis=1, keepdims=True)
        print(f"repeat {r}: " + ", ".join(f"{k} {len(texts) / v:.1f} items/s" for k, v in best.items()))
    ref_name = "sentence-transformers fp32" if "fp32" in a.dtypes else f"sentence-transformers {a.dtypes[0]}"
    ref_rate = len(texts) / best[ref_name]
    rows = []
    print(f"\n{'path':<28} {'batch':>5} {'items/s':>8} {'vs ' + ref_name:>32} {'max cosine diff':>16}")
    for name, (_, bs) in paths.items():
        rate = len(texts) / best[name]
        cos = 1 - float((outs[name] * outs[ref_name]).sum(axis=1).min())
        rows.append({"path": name, "batch_size": bs, "items_per_s": rate, f"ratio_vs_{ref_name.replace(' ', '_')}":
                     rate / ref_rate, "max_cosine_diff_vs_st_fp32": cos})
        print(f"{name:<28} {bs:>5} {rate:>8.1f} {rate / ref_rate:>31.2f}x {cos:>16.2e}")
    write_result("bench_embed", rows, info=info, notes=(
        f"{len(texts)} RecFormer Scientific item texts, {model_id}, max_length {a.max_length}, CPU, best of "
        f"{a.repeats}; target: learn embed >= 1.5x sentence-transformers (fp32, as a user calls it), "
        "cosine diff < 1e-3"))


if __name__ == "__main__":
    main()
