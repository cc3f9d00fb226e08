"""GPU benchmark of the CEX forward pass: a LLaMA-style decoder (1B or 7B class, random weights, built from a config)
in bf16, embedding length-sorted, dynamically padded batches of random token ids; reports tokens/s and items/s.

Skips cleanly (exit 0) without CUDA.

    .venv/bin/python benchmarks/gpu_cex.py [--size 1b|7b] [--items 2048] [--batch-size 32] [--dtype bf16]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {  # TinyLlama-1.1B and LLaMA-2-7B / Baichuan2-7B-class shapes
    "1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
           "num_key_value_heads": 4},
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 32},
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="1b")
    p.add_argument("--items", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--min-tokens", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=200, help="RecFormer item texts are ~50 tokens, max 500")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    a = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_cex: no CUDA device available; skipping (run this on a GPU machine)")
        return 0
    from transformers import AutoModel, LlamaConfig

    from learn.cex import Encoder

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    cfg = LlamaConfig(vocab_size=32000, max_position_embeddings=4096, **SIZES[a.size])
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModel.from_config(cfg, dtype=dtype, attn_implementation="sdpa").eval()
    params = sum(p.numel() for p in model.parameters())
    enc = Encoder(model=model, tokenizer=None, device="cuda", layer=-1, max_length=500, pad_id=0)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(a.min_tokens, a.max_tokens + 1, (a.items,), generator=g).tolist()
    ids = [torch.randint(1, 32000, (n,), generator=g).tolist() for n in lengths]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    batches = [[ids[i] for i in order[s : s + a.batch_size]] for s in range(0, len(order), a.batch_size)]
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {torch.cuda.get_device_name()}, {os.cpu_count()} CPUs; model LLaMA-{a.size} "
          f"({params / 1e9:.2f}B params, random weights), {a.dtype}, torch {torch.__version__}")
    enc.embed_ids(batches[0])  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in batches:
        out = enc.embed_ids(b)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tokens = sum(lengths)
    print(f"{a.items} items, {tokens} tokens (mean {tokens / a.items:.0f}), batch {a.batch_size}: "
          f"{tokens / dt:,.0f} tokens/s, {a.items / dt:,.1f} items/s, peak memory "
          f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB; output {tuple(out.shape)} {out.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
