"""Training speed: the trainer's steps (sequences/s, model FLOP/s against the GEMM peak) and one real epoch vs RecBole.

**Steps** (default; writes ``results/bench_train.json``). One run measures, with the same thread count and under the
same machine load:

- the fp32 matmul peak: ``common.gemm_peak``, 4096 x 4096, best of several (before and after the training
  configs; the best of all is the peak);
- for each config (pretraining with in-batch InfoNCE, finetuning with the full-catalogue softmax): optimizer steps of
  the trainer's own code -- ``learn.losses.Objective`` + ``Trainer._micro_step`` + the trainer's AdamW, batches from
  ``learn.data.samples.SequenceSamples`` + ``Collator`` through a ``DataLoader`` as in ``Trainer._loader`` -- on
  synthetic id sequences (lengths uniform in the config's [min, max]) over random L2-normalised item vectors held in
  RAM (the ``data.preload_store`` path). No LMDB is read.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one real step: ``fwd`` = forward,
``fwd+bwd`` = forward + backward as executed (activation-checkpoint recompute included). Model FLOP/s = 3 x forward
FLOPs x steps/s (the usual MFU convention: backward = 2 x forward, recompute not counted as useful work), and the
fraction is that over the GEMM peak. Padding positions are counted (they are computed).

**Epoch** (``--epoch``; writes ``results/bench_epoch.json``): one training epoch of LEARN finetuning and of RecBole
SASRec on the same Scientific split, side by side, in child processes with the same torch thread count, one after the
other:

- LEARN: ``learn.train.Trainer`` with ``--epoch-config`` (``configs/scientific_cpu.yaml``) on the prepared dataset and
  its MiniLM item store, ``train.epochs=1``, no validation; the time is ``Trainer.fit()`` minus nothing but the final
  test evaluation, which is skipped (set-up -- loading the dataset and store, building the model -- is timed apart).
- RecBole 1.2.1 SASRec (``benchmarks/baselines/.venv``, configs as in ``run_recbole.py``): the same canonical folder
  is exported to RecBole's files, then one ``trainer._train_epoch`` is timed (no evaluation), as RecBole's own
  "epoch N training [time: ...]" log line measures it.

Work per epoch: LEARN (``loss_positions: all``, histories up to 50) reads every next-item target of every training
user once -- the same (prefix -> next item) pairs as RecBole's 34k augmented rows, which SASRec also scores at every
position of one padded sequence per row.

``--compare REV`` (both modes) also measures the ``learn`` package of git revision REV (exported with ``git archive``
to a temporary folder) in the same run: steps alternate old/new workers per config and report new/old sequences/s.

    .venv/bin/python benchmarks/bench_train.py                     # all configs, writes results/bench_train.json
    .venv/bin/python benchmarks/bench_train.py --compare HEAD~3    # + before/after ratios against a revision
    .venv/bin/python benchmarks/bench_train.py --quick             # seconds: tiny model, smoke test (CI)
    .venv/bin/python benchmarks/bench_train.py --epoch [--compare REV] [--threads 2 1]   # results/bench_epoch.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import (
    RESULTS_DIR,
    ROOT,
    command,
    export_rev,
    gemm_peak,
    load_avg,
    machine,
    machine_line,
    merge_previous,
    run_json_child,
    write_result,
)

BASELINES = ROOT / "benchmarks" / "baselines"

# name -> (config file, overrides, catalogue size, note)
CONFIGS: dict[str, tuple[str, list[str], int, str]] = {
    "bert4L-pretrain": ("configs/pretrain_amazon.yaml", ["train.batch_size=256"], 20000,
                        "paper pretraining: 4-layer BERT-base, input/output 4096, history 40, InfoNCE, batch 256"),
    "bert4L-finetune": ("configs/finetune_amazon.yaml", ["train.batch_size=256"], 5327,
                        "paper finetuning: 4-layer BERT-base, input/output 4096, history 40, full softmax over "
                        "5,327 items (Scientific) re-encoded every step, batch 256"),
    "bert4L-pretrain-bf16": ("configs/pretrain_amazon.yaml", ["train.batch_size=256", "train.precision=bf16"], 20000,
                             "as bert4L-pretrain under bf16 autocast"),
    "scientific_cpu": ("configs/scientific_cpu.yaml", ["model.input_dim=384"], 4385,
                       "configs/scientific_cpu.yaml (width 256, 2 layers, MiniLM 384-d input, history 50, "
                       "all positions, batch 64), softmax over 4,385 items"),
    "ml100k_cpu": ("configs/ml100k_cpu.yaml", ["model.input_dim=384"], 1682,
                   "configs/ml100k_cpu.yaml (width 64, text+ID, batch 256), softmax over 1,682 items"),
}
DEFAULT_CONFIGS = ["bert4L-pretrain", "bert4L-finetune", "bert4L-pretrain-bf16", "scientific_cpu", "ml100k_cpu"]
QUICK_OVERRIDES = ["model.hidden_size=32", "model.num_heads=2", "model.ffn_size=64", "model.output_dim=32",
                   "model.input_dim=48", "model.num_layers=2", "train.batch_size=16"]


# ------------------------------------------------------------------------------------------------------ steps
def setup(spec: dict):
    """The trainer's objects for one config: (step function, batch iterator, model, trainer-like context, meta)."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(spec["threads"])
    import learn
    from learn import train as T
    from learn.config import load_config
    from learn.data.samples import Collator, SequenceSamples
    from learn.model import LEARNModel

    cfg = load_config(ROOT / spec["config"], spec["overrides"])
    t, m = cfg.train, cfg.model
    stage = "pretrain" if "pretrain" in spec["config"] else "finetune"
    loss = t.loss if t.loss != "auto" else ("infonce" if stage == "pretrain" else "softmax")
    n_items = spec["items"]
    if m.uses_item_ids:
        m.num_items = n_items
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lo, hi = (cfg.data.min_seq_len, cfg.data.max_seq_len) if stage == "pretrain" else (
        max(2, cfg.data.finetune_min_len), cfg.data.finetune_max_len or cfg.data.max_history)
    steps, warmup = spec["steps"], spec["warmup"]
    n_seq = t.batch_size * (spec.get("max_steps", steps) + warmup + 2)
    seqs = [rng.integers(0, n_items, size=int(rng.integers(lo, hi + 1))).tolist() for _ in range(n_seq)]
    table = torch.nn.functional.normalize(torch.randn(n_items, m.input_dim), dim=-1)
    samples = SequenceSamples(seqs, cfg.data.max_history, mode=stage, positions=t.loss_positions, seed=t.seed)
    order = torch.randperm(len(samples)).tolist()
    batches = [order[i:i + t.batch_size] for i in range(0, len(order) - t.batch_size + 1, t.batch_size)]
    loader = DataLoader(samples, batch_sampler=batches, collate_fn=Collator(), num_workers=0)

    model = LEARNModel(m)
    model.train()
    objective = T.Objective(model, loss, t.scale, t.mask_history, t.catalogue_chunk, t.dense_user_positions)
    if hasattr(T, "build_optimizer"):
        optimizer = T.build_optimizer(model, t)
    else:  # revisions before build_optimizer: the trainer's inline construction
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=t.lr, betas=tuple(t.betas),
                                      eps=t.eps)
    precision = t.precision if t.precision != "auto" else "fp32"
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    ctx = argparse.Namespace(device=torch.device("cpu"), table=table, loss=loss, step_module=objective,
                             amp_dtype=amp, cfg=cfg, model=model)

    def step(batch) -> tuple[float, float]:
        t0 = time.perf_counter()
        out = T.Trainer._micro_step(ctx, batch)
        out.backward()
        t1 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return t1 - t0, time.perf_counter() - t1

    meta = {"learn_from": str(Path(learn.__file__).resolve().parents[1]), "stage": stage, "loss": loss,
            "precision": precision, "batch": t.batch_size, "history": cfg.data.max_history, "hidden": m.hidden_size,
            "layers": m.num_layers, "input_dim": m.input_dim, "output_dim": m.output_dim, "items": n_items,
            "positions": t.loss_positions, "params": sum(p.numel() for p in model.parameters()),
            "threads": torch.get_num_threads()}
    return step, iter(loader), optimizer, ctx, meta


def worker(spec: dict) -> dict:
    """One config with the ``learn`` package on sys.path: warm-up, timed steps, one FLOP-counted step."""
    from torch.utils.flop_counter import FlopCounterMode

    from learn import train as T

    step, it, optimizer, ctx, meta = setup(spec)
    steps, warmup = spec["steps"], spec["warmup"]
    gemm_dtype = "bfloat16" if meta["precision"] == "bf16" else "float32"
    gemm_before = gemm_peak(spec["gemm_n"], 3, gemm_dtype)  # the matmul peak under this moment's machine load
    for _ in range(warmup):
        step(next(it))
    data_s = fb_s = opt_s = 0.0
    seqs_done = tokens = 0
    t_start = time.perf_counter()
    done = 0  # at least `steps` steps and `min_seconds` (small configs: enough steps to average out noise)
    while done < steps or (time.perf_counter() - t_start < spec.get("min_seconds", 0)
                           and done < spec.get("max_steps", steps)):
        done += 1
        t0 = time.perf_counter()
        batch = next(it)
        data_s += time.perf_counter() - t0
        a, b = step(batch)
        fb_s += a
        opt_s += b
        seqs_done += batch.hist.shape[0]
        tokens += int(batch.hist.numel())
    wall = time.perf_counter() - t_start
    gemm_after = gemm_peak(spec["gemm_n"], 3, gemm_dtype)
    # FLOPs of one more real step (same shapes up to the batch's padded length)
    batch = next(it)
    with FlopCounterMode(display=False) as fc:
        out = T.Trainer._micro_step(ctx, batch)
        fwd = fc.get_total_flops()
        out.backward()
        fwd_bwd = fc.get_total_flops()
    optimizer.zero_grad(set_to_none=True)
    flops_per_seq = 3.0 * fwd / batch.hist.shape[0]
    seq_s = seqs_done / wall
    return {
        **meta, "padded_len_mean": tokens / seqs_done, "steps": done, "seq_per_s": seq_s, "step_s": wall / done,
        "data_frac": data_s / wall, "fwd_bwd_frac": fb_s / wall, "optimizer_frac": opt_s / wall,
        "fwd_gflop_per_step": fwd / 1e9, "counted_fwd_bwd_gflop_per_step": fwd_bwd / 1e9,
        "model_gflop_per_s": flops_per_seq * seq_s / 1e9,
        "local_gemm_gflop_per_s": [gemm_before / 1e9, gemm_after / 1e9],
    }


def profile(spec: dict, rows: int = 25) -> None:
    """torch.profiler (CPU ops by self time) and cProfile (Python by cumulative time) over ``spec['steps']`` steps."""
    import cProfile
    import pstats

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step, it, _, _, meta = setup(spec)
    for _ in range(spec["warmup"]):
        step(next(it))
    print(f"== {spec['name']}: {meta}")
    t0 = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(spec["steps"]):
            step(next(it))
    print(f"torch.profiler: {spec['steps']} steps in {time.perf_counter() - t0:.2f} s (profiled)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    for _ in range(spec["steps"]):
        step(next(it))
    pr.disable()
    print(f"cProfile: {spec['steps']} steps in {time.perf_counter() - t0:.2f} s")
    pstats.Stats(pr).sort_stats("cumulative").print_stats(rows)


def run_worker(learn_root: Path, spec: dict) -> dict:
    return run_json_child(Path(__file__).resolve(), ["--worker", json.dumps(spec)],
                          {"PYTHONPATH": str(learn_root), "OMP_NUM_THREADS": str(spec["threads"])},
                          f"worker for {spec['name']} ({learn_root})", cwd=learn_root)


# ------------------------------------------------------------------------------------------------------ epoch
def epoch_learn_child(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    import learn
    from learn.config import load_config
    from learn.train import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / args.epoch_config, [
            f"data.dataset={args.dataset}", f"data.store={args.store}", f"log.output_dir={tmp}", "log.run_name=epoch",
            "log.wandb=false", "log.progress=false", "train.epochs=1", "train.eval_every=0", "train.patience=0",
            "ckpt.resume=none",
            "ckpt.save_every_epochs=0", *args.override])
        t0 = time.perf_counter()
        trainer = Trainer(cfg)
        t1 = time.perf_counter()
        trainer._finish = lambda logger: {}  # no final validation/test evaluation: training time only
        trainer.fit()
        t2 = time.perf_counter()
        return {"system": "LEARN", "learn_from": str(Path(learn.__file__).resolve().parents[1]),
                "setup_s": t1 - t0, "epoch_s": t2 - t1, "steps": trainer.step,
                "train_samples": len(trainer.train_set), "batch": cfg.train.batch_size,
                "targets_per_epoch": _learn_targets(trainer), "threads": torch.get_num_threads()}


def _learn_targets(trainer) -> int:
    """Next-item targets read in one epoch (``loss_positions=all``: every position of every history)."""
    n = 0
    for i in range(len(trainer.train_set)):
        _, target, _ = trainer.train_set[i]
        n += int((target >= 0).sum())
    return n


def epoch_recbole_child(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(BASELINES))
    import run_recbole  # sets OMP/torch.load work-arounds and np.float
    import torch

    ns = argparse.Namespace(dataset="scientific_unisrec_epoch", model="SASRec", canonical=Path(args.dataset),
                            config=[str(BASELINES / "configs" / "scientific.yaml")], epochs=1, max_len=50,
                            threads=args.threads, work_dir=Path(args.work_dir).resolve())
    t0 = time.perf_counter()
    _, _, _, config, dataset, (train_data, _, _), trainer = run_recbole._setup(ns)
    t1 = time.perf_counter()
    trainer.model.train()
    loss = trainer._train_epoch(train_data, 0, show_progress=False)
    t2 = time.perf_counter()
    loss = sum(loss) if isinstance(loss, tuple) else loss
    return {"system": "RecBole SASRec", "setup_s": t1 - t0, "epoch_s": t2 - t1, "train_rows": len(train_data.dataset),
            "batch": config["train_batch_size"], "users": dataset.user_num - 1, "items": dataset.item_num - 1,
            "threads": torch.get_num_threads(), "train_loss": float(loss)}


def run_epoch(args: argparse.Namespace) -> int:
    """``--epoch``: LEARN (working tree, and ``--compare REV``) and RecBole SASRec, one epoch each per thread count."""
    import torch

    thread_counts = args.threads or [torch.get_num_threads()]
    info = machine()
    info["torch_threads"] = thread_counts
    print(machine_line(info))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sides = [("working tree", str(ROOT))]
        if args.compare:
            sides = [(export_rev(args.compare, Path(tmp)), tmp), *sides]
        for threads in thread_counts:
            common = ["--epoch", "--dataset", args.dataset, "--store", args.store, "--epoch-config", args.epoch_config,
                      "--threads", str(threads), "--work-dir", args.work_dir, "--override", *args.override]
            env = {"OMP_NUM_THREADS": str(threads)}
            group = []
            for code, root in sides:
                r = run_json_child(Path(__file__).resolve(), ["--child", "learn", *common], {**env, "PYTHONPATH": root},
                                   f"LEARN child ({code})")
                r.pop("learn_from", None)
                group.append({**r, "code": code})
                print(f"  LEARN ({code}, {threads} threads): epoch {r['epoch_s']:.1f} s, {r['steps']} steps, "
                      f"set-up {r['setup_s']:.1f} s", flush=True)
            if not args.no_recbole:
                py = BASELINES / ".venv" / "bin" / "python"
                if not py.exists():
                    raise SystemExit(f"{py} not found: bash benchmarks/baselines/setup.sh")
                r = run_json_child(Path(__file__).resolve(), ["--child", "recbole", *common],
                                   {**env, "PYTHONPATH": str(ROOT)}, "RecBole child", python=str(py))
                group.append({**r, "code": "recbole 1.2.1"})
                print(f"  RecBole SASRec ({threads} threads): epoch {r['epoch_s']:.1f} s, set-up {r['setup_s']:.1f} s",
                      flush=True)
            learn_now = [r for r in group if r["system"] == "LEARN"][-1]
            for r in group:
                r["epoch_vs_learn"] = r["epoch_s"] / learn_now["epoch_s"]
            rows += group
    info["load_avg_1m_end"] = load_end = load_avg()
    print(f"\n{'system':16s} {'code':14s} {'threads':>7s} {'epoch s':>8s} {'set-up s':>8s} {'vs LEARN':>8s}")
    for r in rows:
        print(f"{r['system']:16s} {r['code']:14s} {r['threads']:7d} {r['epoch_s']:8.1f} {r['setup_s']:8.1f} "
              f"{r['epoch_vs_learn']:7.2f}x")
    print(f"command: {command()}")
    notes = (f"One training epoch each, no evaluation, torch threads {thread_counts} (both systems alike), run one "
             f"after the other; load average {info.get('load_avg_1m')} at start, {load_end} at the end. LEARN: "
             f"{args.epoch_config} {' '.join(args.override)} on {args.dataset} with {args.store}; RecBole 1.2.1 "
             "SASRec with benchmarks/baselines/configs (batch 2048, CE over all items) on the same canonical folder "
             "exported by export_recbole.py. epoch_vs_learn = epoch_s / LEARN (working tree) epoch_s at the same "
             "thread count.")
    for r in rows:
        r["run_command"] = command()
    if args.append:  # keep the earlier rows (e.g. another thread count)
        rows, notes, info = merge_previous((args.out_dir or RESULTS_DIR) / "bench_epoch.json", rows, notes, info)
    write_result("bench_epoch", rows, notes, info=info, out_dir=args.out_dir)
    return 0


# ------------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epoch", action="store_true", help="one real epoch of LEARN and RecBole SASRec instead of "
                        "the steps (writes bench_epoch.json)")
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="torch threads (default: torch's "
                        "default); --epoch runs one group per value")
    parser.add_argument("--compare", metavar="REV", help="also measure learn/ of this git revision (same run)")
    parser.add_argument("--append", action="store_true", help="merge these rows into the existing JSON (steps: same "
                        "config, code and threads replaced)")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes (default results/)")
    steps = parser.add_argument_group("steps (default)")
    steps.add_argument("--configs", nargs="+", default=None, choices=list(CONFIGS), help="default: all")
    steps.add_argument("--steps", type=int, default=3, help="timed optimizer steps per config")
    steps.add_argument("--warmup", type=int, default=1)
    steps.add_argument("--gemm-n", type=int, default=4096)
    steps.add_argument("--min-seconds", type=float, default=20.0,
                       help="keep stepping (up to 200 steps) until this long: small configs average over more steps")
    steps.add_argument("--rounds", type=int, default=1, help="old/new alternations per config (best kept)")
    steps.add_argument("--quick", action="store_true", help="tiny model, 2 configs, seconds (smoke test)")
    steps.add_argument("--profile", action="store_true", help="profile the configs in this process; no JSON")
    steps.add_argument("--worker", help=argparse.SUPPRESS)
    epoch = parser.add_argument_group("--epoch")
    epoch.add_argument("--dataset", default="/tmp/evalwork/scientific_unisrec", help="prepared (canonical) folder")
    epoch.add_argument("--store", default="/tmp/evalwork/minilm_store", help="LEARN item store of the dataset")
    epoch.add_argument("--epoch-config", default="configs/scientific_cpu.yaml", help="LEARN config")
    epoch.add_argument("--override", nargs="*", default=[], help="extra key=value for the LEARN config")
    epoch.add_argument("--no-recbole", action="store_true")
    epoch.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "out" / "bench_epoch"))
    epoch.add_argument("--child", choices=["learn", "recbole"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.epoch and args.threads and len(args.threads) > 1:
        parser.error("--threads takes one value without --epoch")
    return args


def run_steps(args: argparse.Namespace) -> int:
    """The default mode: every config's steps (working tree, and ``--compare REV``), the GEMM peaks, the JSON."""
    import torch

    threads = args.threads[0] if args.threads else torch.get_num_threads()
    torch.set_num_threads(threads)
    names = args.configs or (["bert4L-pretrain", "bert4L-finetune"] if args.quick else DEFAULT_CONFIGS)
    gemm_n, repeats = (512, 3) if args.quick else (args.gemm_n, 5)
    steps, warmup = (2, 1) if args.quick else (args.steps, args.warmup)
    if args.profile:
        sys.path.append(str(ROOT))  # PYTHONPATH (e.g. an exported older learn/) comes first
        for name in names:
            cfg_file, overrides, items, _ = CONFIGS[name]
            profile({"name": name, "config": cfg_file, "overrides": overrides + (QUICK_OVERRIDES if args.quick else []),
                     "items": 300 if args.quick else items, "steps": steps, "warmup": warmup, "threads": threads})
        return 0
    info = machine()
    info["torch_threads"] = threads
    print(machine_line(info))
    peaks = [gemm_peak(gemm_n, repeats)]
    print(f"fp32 GEMM {gemm_n}^3 peak: {peaks[0] / 1e9:.1f} GFLOP/s")
    bf16_peak = gemm_peak(gemm_n, repeats, "bfloat16") if any("bf16" in n for n in names) else None

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        sides = [("new", ROOT)]
        old_sha = None
        if args.compare:
            old_sha = export_rev(args.compare, Path(tmp))
            sides = [("old", Path(tmp)), ("new", ROOT)]
        for name in names:
            cfg_file, overrides, items, note = CONFIGS[name]
            spec = {"name": name, "config": cfg_file, "overrides": overrides + (QUICK_OVERRIDES if args.quick else []),
                    "items": 300 if args.quick else items, "steps": steps, "warmup": warmup, "threads": threads,
                    "gemm_n": gemm_n, "min_seconds": 0 if args.quick else args.min_seconds,
                    "max_steps": steps if args.quick else max(steps, 200)}
            results: dict[str, dict] = {}
            for _ in range(args.rounds):  # alternate old/new; keep each side's fastest round
                for side, root in sides:
                    r = run_worker(root, spec)
                    if side not in results or r["seq_per_s"] > results[side]["seq_per_s"]:
                        results[side] = r
            for side, r in results.items():
                row = {"config": name, "code": side if args.compare else "current", **r}
                if args.compare:
                    row["code_rev"] = old_sha if side == "old" else "working tree"
                row.pop("learn_from", None)
                rows.append(row)
                print(f"  {name:22s} {row['code']:7s} {r['seq_per_s']:8.1f} seq/s  {r['step_s']:7.2f} s/step  "
                      f"{r['model_gflop_per_s']:7.1f} model GFLOP/s  data {r['data_frac']:.1%}  "
                      f"opt {r['optimizer_frac']:.1%}", flush=True)
            if args.compare:
                ratio = results["new"]["seq_per_s"] / results["old"]["seq_per_s"]
                rows[-1]["speedup_vs_old"] = ratio
                print(f"  {name:22s} new/old sequences/s = {ratio:.2f}x", flush=True)
    peaks.append(gemm_peak(gemm_n, repeats))
    peak = max(peaks)
    for row in rows:
        row["gemm_peak_gflop_per_s"] = peak / 1e9
        row["peak_fraction_vs_best_gemm"] = row["model_gflop_per_s"] * 1e9 / peak
        local = max(row["local_gemm_gflop_per_s"])
        row["peak_fraction"] = row["model_gflop_per_s"] / local  # against the GEMM measured around this config
        if row["precision"] == "bf16":  # the local GEMM is bf16 there; the fp32 peak is not its ceiling
            row.pop("peak_fraction_vs_best_gemm")
        if row["precision"] == "bf16" and bf16_peak:
            row["bf16_gemm_peak_gflop_per_s"] = bf16_peak / 1e9
    load_end = load_avg()

    print(f"\nfp32 GEMM {gemm_n}^3: {', '.join(f'{p / 1e9:.1f}' for p in peaks)} GFLOP/s (peak = best "
          f"{peak / 1e9:.1f})" + (f"; bf16 GEMM {bf16_peak / 1e9:.1f} GFLOP/s" if bf16_peak else ""))
    head = f"{'config':22s} {'code':8s} {'batch':>5s} {'seq/s':>8s} {'s/step':>7s} {'GFLOP/s':>8s} {'GEMM':>7s}"
    print(head + f" {'of GEMM':>7s} {'of best':>7s} {'data':>6s} {'opt':>6s} {'new/old':>7s}")
    for r in rows:
        sp = f"{r['speedup_vs_old']:.2f}x" if "speedup_vs_old" in r else ""
        print(f"{r['config']:22s} {r['code']:8s} {r['batch']:5d} {r['seq_per_s']:8.1f} {r['step_s']:7.2f} "
              f"{r['model_gflop_per_s']:8.1f} {max(r['local_gemm_gflop_per_s']):7.1f} {r['peak_fraction']:7.1%} "
              f"{r.get('peak_fraction_vs_best_gemm', float('nan')):7.1%} {r['data_frac']:6.1%} "
              f"{r['optimizer_frac']:6.1%} {sp:>7s}")
    print(f"command: {command()}")
    notes = (f"fp32 GEMM peak = best torch.matmul {gemm_n}x{gemm_n} of {len(peaks)} measurements "
             f"({', '.join(f'{p / 1e9:.1f}' for p in peaks)} GFLOP/s; first before, last after the configs). "
             "Model FLOP/s = 3 x forward FLOPs (FlopCounterMode, padding counted) x steps/s; peak_fraction = that "
             "over the best fp32 GEMM (same size, best of 3) measured in the same worker just before and just after "
             "its timed steps (local_gemm_gflop_per_s: the machine is shared, so this is the load-matched peak); "
             "peak_fraction_vs_best_gemm = over the best fp32 GEMM of the whole run; bf16 rows use a bf16 GEMM "
             "(the dtype autocast runs the matmuls in) for their local peak. Synthetic id sequences over random "
             "item vectors in RAM; the trainer's "
             f"Objective, _micro_step, AdamW, SequenceSamples + Collator. At least {steps} timed steps and "
             f"{0 if args.quick else args.min_seconds:g} s (up to 200 steps) after {warmup} warm-up. "
             f"Load average {info.get('load_avg_1m')} at start, {load_end} at the end. "
             + ("Quick smoke-test sizes (tiny model): not a measurement. " if args.quick else "")
             + (f"old = learn/ of {old_sha}, new = working tree, measured alternately in this run. "
                if args.compare else "")
             + " ".join(f"{n}: {CONFIGS[n][3]}." for n in names))
    info["load_avg_1m_end"] = load_end
    for row in rows:
        row["run_command"] = command()
    if args.append:
        rows, notes, info = merge_previous((args.out_dir or RESULTS_DIR) / "bench_train.json", rows, notes, info,
                                           key=lambda r: (r["config"], r["code"], r.get("threads")))
    write_result("bench_train", rows, notes, info=info, out_dir=args.out_dir)
    return 0


def main() -> int:
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.child:
        args.threads = args.threads[0]
        print(json.dumps(epoch_learn_child(args) if args.child == "learn" else epoch_recbole_child(args)))
        return 0
    return run_epoch(args) if args.epoch else run_steps(args)


if __name__ == "__main__":
    raise SystemExit(main())
