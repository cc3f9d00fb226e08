"""GPU benchmarks (issue #7 part 4): pretraining and finetuning steps/s of the PAL towers, CEX tokens/s.

    bash benchmarks/gpu.sh                                   # all of it, then RESULTS.md (a CUDA machine)
    .venv/bin/python benchmarks/bench_gpu.py --only pretrain  # one part
    .venv/bin/python benchmarks/bench_gpu.py --dry-run        # CPU, tiny sizes: checks every code path

- ``pretrain``: training steps/s (forward, InfoNCE with in-batch negatives, backward, fused AdamW) of
  ``configs/pretrain_amazon.yaml``'s towers (4 layers, width 768, 4096-d input and output) at the paper's batch of
  1024 sequences (lengths 5..40, split point in the second half, target-only loss, as in pretraining), bf16 autocast,
  with SDPA restricted to the flash kernel (if flash refuses a call, e.g. an explicit mask or dropout on CPU: flash
  first and the other kernels only where flash refuses, recorded in the row), once eager, once under
  ``torch.compile``.
- ``finetune``: the same for ``configs/finetune_amazon.yaml`` (batch 64, full softmax over the catalogue, re-encoded
  every step) with a catalogue of ``--catalogue`` items (default 38,000: Pet, the largest finetuning set).
- ``cex``: tokens/s of ``learn.encoder.Encoder`` over a 1B- and a 7B-class LLaMA-shaped decoder built from a config
  (random weights, bf16; ``benchmarks/gpu_cex.py``).

Inputs are random tensors already on the device: these are model throughputs, not data-pipeline ones (that is
``bench_scale.py``). Without CUDA and without ``--dry-run`` it exits 2 with one line. Results go to
``benchmarks/results/gpu_<device>.json`` (``--dry-run``: ``benchmarks/out/quick/``).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
import common  # noqa: E402
from common import machine, machine_line, write_result  # noqa: E402

NO_CUDA = ("bench_gpu: no CUDA device visible to torch (torch.cuda.is_available() is False); "
           "run it on a GPU machine, or pass --dry-run for a CPU check of the code paths")
TINY_MODEL = {"input_dim": 32, "hidden_size": 32, "num_layers": 2, "num_heads": 4, "ffn_size": 64, "output_dim": 32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parts = ["pretrain", "finetune", "cex"]
    ap.add_argument("--only", nargs="+", choices=parts, default=parts)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, 1 step: checks the code paths")
    ap.add_argument("--batch", type=int, default=1024, help="pretraining batch (the paper's per-GPU 1024)")
    ap.add_argument("--finetune-batch", type=int, default=64)
    ap.add_argument("--catalogue", type=int, default=38_000, help="finetuning catalogue size (Pet: ~38k items)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    ap.add_argument("--compile", choices=["both", "off", "on"], default="both")
    ap.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    ap.add_argument("--cex-sizes", nargs="+", choices=["1b", "7b"], default=["1b", "7b"])
    ap.add_argument("--cex-items", type=int, default=2048)
    ap.add_argument("--cex-batch", type=int, default=32)
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.dry_run:
        a.batch, a.finetune_batch, a.catalogue, a.steps, a.warmup = 8, 4, 64, 1, 1
        a.cex_items, a.cex_batch = 8, 4
    return a


def model_config(name: str, tiny: bool):
    return common.model_config(name, **(TINY_MODEL if tiny else {}))


def pretrain_batch(batch: int, dim: int, device, gen, n_ids: int = 1 << 20):
    """Random history vectors [B,40,D] with lengths 5..40 cut at a split point in the second half (pretraining)."""
    import torch

    L = 40
    lengths = torch.randint(5, L + 1, (batch,), generator=gen)
    t = (lengths // 2 + (torch.rand(batch, generator=gen) * (lengths - lengths // 2)).long()).clamp(1, L - 1)
    width = int(t.max())
    idx = torch.arange(width)
    mask = idx[None, :] < t[:, None]
    hist_ids = torch.randint(0, n_ids, (batch, width), generator=gen)
    tgt_ids = torch.randint(0, n_ids, (batch, width), generator=gen)  # finetuning: rows of the catalogue
    tgt_mask = idx[None, :] == (t - 1)[:, None]
    vec = torch.randn(batch, width, dim, generator=gen)
    tvec = torch.randn(batch, width, dim, generator=gen)
    return [x.to(device) for x in (vec, mask, hist_ids, tvec, tgt_ids, tgt_mask)]


def attention_context(kind: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if kind == "flash":
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    if kind == "flash-first":  # flash wherever it accepts the call, then the other kernels in torch's order
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                            SDPBackend.MATH], set_priority=True)
    return contextlib.nullcontext()


def time_steps(stage: str, a, device, compiled: bool, attention: str) -> dict:
    import torch

    from learn.losses import Objective
    from learn.model import LEARNModel

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cfg = model_config("pretrain_amazon" if stage == "pretrain" else "finetune_amazon", a.dry_run)
    model = LEARNModel(cfg).to(device).train()
    loss_name = "infonce" if stage == "pretrain" else "softmax"
    obj = Objective(model, loss_name, 20.0, False, 8192, 4)
    step_module = torch.compile(obj) if compiled else obj
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    bs = a.batch if stage == "pretrain" else a.finetune_batch
    catalogue = torch.randn(a.catalogue, cfg.input_dim, device=device) if stage == "finetune" else None
    n_ids = a.catalogue if stage == "finetune" else 1 << 20
    batches = [pretrain_batch(bs, cfg.input_dim, device, gen, n_ids) for _ in range(2)]
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[a.precision]
    if amp is torch.float16:
        raise SystemExit("bench_gpu: --precision fp16 needs a GradScaler; use bf16 or fp32")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step(i: int) -> None:
        vec, mask, hist_ids, tvec, tgt_ids, tgt_mask = batches[i % 2]
        with attention_context(attention), torch.autocast(device.type, dtype=amp or torch.float32,
                                                          enabled=amp is not None):
            loss = step_module(vec, mask, hist_ids, tvec, tgt_ids, tgt_mask, catalogue)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(a.warmup):
        step(i)
    sync()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(a.steps):
        step(i)
    sync()
    dt = time.perf_counter() - t0
    return {"part": stage, "compile": compiled, "attention": attention, "precision": a.precision, "batch": bs,
            "catalogue": a.catalogue if stage == "finetune" else None, "layers": cfg.num_layers,
            "hidden": cfg.hidden_size, "input_dim": cfg.input_dim, "output_dim": cfg.output_dim,
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6, "steps": a.steps,
            "steps_per_s": a.steps / dt, "seq_per_s": a.steps * bs / dt, "warmup_s": warm,
            "peak_mem_GiB": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def run_stage(stage: str, a, device, compiled: bool) -> dict:
    """Flash-only SDPA; if the kernel refuses a call, flash-first priority (other kernels where flash refuses)."""
    try:
        return time_steps(stage, a, device, compiled, "flash")
    except RuntimeError as e:
        if "flash" not in str(e).lower() and "kernel" not in str(e).lower() and "backend" not in str(e).lower():
            raise
        row = time_steps(stage, a, device, compiled, "flash-first")
        row["attention"] = "flash-first (flash-only refused: " + str(e).splitlines()[0][:100] + ")"
        return row


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import torch

    if not a.dry_run and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    device = torch.device("cpu" if a.dry_run else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    info = machine()
    print(machine_line(info), flush=True)
    compiles = {"both": [False, True], "off": [False], "on": [True]}[a.compile]
    if a.dry_run:
        compiles = [False]  # torch.compile of the tiny model works on CPU too, but costs a minute of compilation
    rows = []
    for stage in ("pretrain", "finetune"):
        if stage not in a.only:
            continue
        for compiled in compiles:
            row = run_stage(stage, a, device, compiled)
            rows.append(row)
            print(f"{stage} compile={compiled} attention={row['attention']}: {row['steps_per_s']:.2f} steps/s, "
                  f"{row['seq_per_s']:,.0f} sequences/s", flush=True)
    if "cex" in a.only:
        import gpu_cex

        for size in a.cex_sizes:
            r = gpu_cex.measure(size, a.cex_items, a.cex_batch, dtype="fp32" if a.dry_run else a.precision,
                                device=device.type, shapes=gpu_cex.tiny_config() if a.dry_run else None)
            rows.append({"part": f"cex {size}", **r})
            print(f"cex {size}: {r['tokens_per_s']:,.0f} tokens/s, {r['items_per_s']:,.1f} items/s", flush=True)
            if a.dry_run:
                break
    gpu = info.get("gpu") or "cpu-dry-run"
    name = "gpu_" + re.sub(r"[^a-z0-9]+", "_", gpu.lower()).strip("_")
    notes = (f"Device: {gpu}. Random inputs already on the device (model throughput, no data pipeline). "
             f"Pretraining: configs/pretrain_amazon.yaml towers, batch {a.batch}, lengths 5..40, target-only "
             f"InfoNCE; finetuning: configs/finetune_amazon.yaml towers, batch {a.finetune_batch}, full softmax over "
             f"{a.catalogue:,} items re-encoded every step; {a.precision} autocast, fused AdamW, {a.warmup} warm-up "
             f"and {a.steps} timed steps. CEX: learn.encoder.Encoder over LLaMA-shaped decoders with random weights "
             f"({a.cex_items} items of 20..200 tokens, batch {a.cex_batch}).")
    if a.dry_run:
        notes = "DRY RUN on CPU with tiny sizes: checks the code paths only. " + notes
    out_dir = a.out_dir or (HERE / "out" / "quick" if a.dry_run else None)
    write_result(name, rows, notes, info=info, out_dir=out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
