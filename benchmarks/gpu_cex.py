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


def tiny_config() -> dict:
    """A LLaMA-shaped decoder small enough for a CPU dry run."""
    return {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2}


def measure(size: str = "1b", items: int = 2048, batch_size: int = 32, min_tokens: int = 20, max_tokens: int = 200,
            dtype: str = "bf16", device: str = "cuda", shapes: dict | None = None) -> dict:
    """Tokens/s and items/s of ``learn.encoder.Encoder`` over a decoder built from a config (random weights)."""
    import torch
    from transformers import AutoModel, LlamaConfig

    from learn.encoder import Encoder

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    cfg = LlamaConfig(vocab_size=32000, max_position_embeddings=4096, **(shapes or SIZES[size]))
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModel.from_config(cfg, dtype=torch_dtype, attn_implementation="sdpa").eval()
    params = sum(p.numel() for p in model.parameters())
    enc = Encoder(model=model, tokenizer=None, device=device, layer=-1, max_length=500, pad_id=0)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(min_tokens, max_tokens + 1, (items,), generator=g).tolist()
    ids = [torch.randint(1, 32000, (n,), generator=g).tolist() for n in lengths]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    batches = [[ids[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    enc.embed_ids(batches[0])  # warm-up
    sync()
    t0 = time.perf_counter()
    for b in batches:
        out = enc.embed_ids(b)
    sync()
    dt = time.perf_counter() - t0
    tokens = sum(lengths)
    return {"model": f"LLaMA-{size} shapes" if shapes is None else "tiny LLaMA shapes", "params_B": params / 1e9,
            "dtype": dtype, "items": items, "batch": batch_size, "tokens": tokens, "seconds": dt,
            "tokens_per_s": tokens / dt, "items_per_s": items / dt,
            "peak_mem_GiB": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "out_shape": "x".join(map(str, out.shape))}


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
    print("command:", shlex.join([sys.executable, *sys.argv]))
    r = measure(a.size, a.items, a.batch_size, a.min_tokens, a.max_tokens, a.dtype)
    print(f"machine: {torch.cuda.get_device_name()}, {os.cpu_count()} CPUs; model {r['model']} "
          f"({r['params_B']:.2f}B params, random weights), {a.dtype}, torch {torch.__version__}")
    print(f"{a.items} items, {r['tokens']} tokens (mean {r['tokens'] / a.items:.0f}), batch {a.batch_size}: "
          f"{r['tokens_per_s']:,.0f} tokens/s, {r['items_per_s']:,.1f} items/s, peak memory "
          f"{r['peak_mem_GiB']:.1f} GiB; output {r['out_shape']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
