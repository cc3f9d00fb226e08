"""One training epoch of LEARN finetuning and of RecBole SASRec on the same Scientific split, side by side.

Both run in child processes with the same torch thread count, one after the other in this run:

- LEARN: ``learn.train.Trainer`` with ``configs/scientific_cpu.yaml`` on the prepared dataset and its MiniLM item
  store, ``train.epochs=1``, no validation; the time is ``Trainer.fit()`` minus nothing but the final test
  evaluation, which is skipped (set-up -- loading the dataset and store, building the model -- is timed apart).
  With ``--compare REV`` the ``learn`` package of git revision REV is timed too (before/after).
- RecBole 1.2.1 SASRec (``benchmarks/baselines/.venv``, configs as in ``run_recbole.py``): the same canonical folder
  is exported to RecBole's files, then one ``trainer._train_epoch`` is timed (no evaluation), as RecBole's own
  "epoch N training [time: ...]" log line measures it.

Work per epoch: LEARN (``loss_positions: all``, histories up to 50) reads every next-item target of every training
user once -- the same (prefix -> next item) pairs as RecBole's 34k augmented rows, which SASRec also scores at every
position of one padded sequence per row.

    .venv/bin/python benchmarks/bench_epoch.py [--compare REV] [--threads 2 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ROOT / "benchmarks" / "baselines"
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))


def learn_child(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    import learn
    from learn.config import load_config
    from learn.train import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / args.config, [
            f"data.dataset={args.dataset}", f"data.store={args.store}", f"log.output_dir={tmp}", "log.run_name=epoch",
            "log.wandb=false", "log.progress=false", "train.epochs=1", "train.eval_every=0", "ckpt.resume=none",
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


def recbole_child(args: argparse.Namespace) -> dict:
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


def _child(python: str, argv: list[str], env_extra: dict[str, str]) -> dict:
    env = dict(os.environ, **env_extra)
    proc = subprocess.run([python, str(Path(__file__).resolve()), *argv], env=env, capture_output=True, text=True,
                          cwd=str(ROOT))
    if proc.returncode != 0:
        raise SystemExit(f"child {argv[:1]} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="/tmp/evalwork/scientific_unisrec", help="prepared (canonical) folder")
    parser.add_argument("--store", default="/tmp/evalwork/minilm_store", help="LEARN item store of the dataset")
    parser.add_argument("--config", default="configs/scientific_cpu.yaml")
    parser.add_argument("--override", nargs="*", default=[], help="extra key=value for the LEARN config")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch threads for both, one group of runs per value (default: torch's)")
    parser.add_argument("--compare", metavar="REV", help="also time learn/ of this git revision")
    parser.add_argument("--no-recbole", action="store_true")
    parser.add_argument("--append", action="store_true", help="add these rows to the existing bench_epoch.json")
    parser.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "out" / "bench_epoch"))
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--child", choices=["learn", "recbole"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.threads = args.threads[0]
        print(json.dumps(learn_child(args) if args.child == "learn" else recbole_child(args)))
        return 0

    import torch
    from common import RESULTS_DIR, command, machine, machine_line, write_result

    thread_counts = args.threads or [torch.get_num_threads()]
    info = machine()
    info["torch_threads"] = thread_counts
    print(machine_line(info))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sides = [("working tree", str(ROOT))]
        if args.compare:
            sha = subprocess.run(["git", "rev-parse", "--short", args.compare], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.strip()
            archive = subprocess.run(["git", "archive", args.compare, "learn"], cwd=ROOT, capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            sides = [(sha, tmp), *sides]
        for threads in thread_counts:
            common = ["--dataset", args.dataset, "--store", args.store, "--config", args.config, "--threads",
                      str(threads), "--work-dir", args.work_dir, "--override", *args.override]
            env = {"OMP_NUM_THREADS": str(threads)}
            group = []
            for code, root in sides:
                r = _child(sys.executable, ["--child", "learn", *common], {**env, "PYTHONPATH": root})
                r.pop("learn_from", None)
                group.append({**r, "code": code})
                print(f"  LEARN ({code}, {threads} threads): epoch {r['epoch_s']:.1f} s, {r['steps']} steps, "
                      f"set-up {r['setup_s']:.1f} s", flush=True)
            if not args.no_recbole:
                py = BASELINES / ".venv" / "bin" / "python"
                if not py.exists():
                    raise SystemExit(f"{py} not found: bash benchmarks/baselines/setup.sh")
                r = _child(str(py), ["--child", "recbole", *common], {**env, "PYTHONPATH": str(ROOT)})
                group.append({**r, "code": "recbole 1.2.1"})
                print(f"  RecBole SASRec ({threads} threads): epoch {r['epoch_s']:.1f} s, set-up {r['setup_s']:.1f} s",
                      flush=True)
            learn_now = [r for r in group if r["system"] == "LEARN"][-1]
            for r in group:
                r["epoch_vs_learn"] = r["epoch_s"] / learn_now["epoch_s"]
            rows += group
    try:
        load_end = round(os.getloadavg()[0], 2)
    except OSError:
        load_end = None
    info["load_avg_1m_end"] = load_end
    print(f"\n{'system':16s} {'code':14s} {'threads':>7s} {'epoch s':>8s} {'set-up s':>8s} {'vs LEARN':>8s}")
    for r in rows:
        print(f"{r['system']:16s} {r['code']:14s} {r['threads']:7d} {r['epoch_s']:8.1f} {r['setup_s']:8.1f} "
              f"{r['epoch_vs_learn']:7.2f}x")
    print(f"command: {command()}")
    notes = (f"One training epoch each, no evaluation, torch threads {thread_counts} (both systems alike), run one "
             f"after the other; load average {info.get('load_avg_1m')} at start, {load_end} at the end. LEARN: "
             f"{args.config} {' '.join(args.override)} on {args.dataset} with {args.store}; RecBole 1.2.1 SASRec with "
             "benchmarks/baselines/configs (batch 2048, CE over all items) on the same canonical folder exported by "
             "export_recbole.py. epoch_vs_learn = epoch_s / LEARN (working tree) epoch_s at the same thread count.")
    for r in rows:
        r["run_command"] = command()
    path = (args.out_dir or RESULTS_DIR) / "bench_epoch.json"
    if args.append and path.exists():  # keep the earlier rows (e.g. another thread count)
        prev = json.loads(path.read_text())
        for r in prev["rows"]:
            r.setdefault("run_command", prev["command"])
        rows = prev["rows"] + rows
        notes = f"{prev['notes']} || Appended run ({command()}): {notes}"
        info = {**prev["machine"], "appended_run": info}
    write_result("bench_epoch", rows, notes, info=info, out_dir=args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
