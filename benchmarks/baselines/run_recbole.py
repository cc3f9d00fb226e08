"""Train and evaluate one RecBole 1.2.1 baseline (SASRec, GRU4Rec, BERT4Rec, ...) on one of our canonical datasets.

Runs in benchmarks/baselines/.venv (see setup.sh). The canonical folder is exported with export_recbole.py, so RecBole
trains on our train prefixes, early-stops on our validation rows and reports full-ranking metrics on our test rows.
Writes benchmarks/baselines/results/<dataset>_<model>.json and appends a row to benchmarks/baselines/RESULTS.md.

Usage (CPU, one thread, lowest priority):
    OMP_NUM_THREADS=1 nice -n 19 benchmarks/baselines/.venv/bin/python benchmarks/baselines/run_recbole.py \\
        --canonical benchmarks/out/baselines/canonical/scientific_unisrec --dataset scientific_unisrec \\
        --model SASRec --config benchmarks/baselines/configs/scientific.yaml
"""

from __future__ import annotations

import os

# Both work-arounds apply to this baseline process only: torch>=2.6 defaults torch.load to
# weights_only=True, which cannot load RecBole's checkpoint (it pickles the config), and RecBole touches np.float.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

if not hasattr(np, "float"):
    np.float = float  # removed alias that recbole 1.2.1 still uses

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from export_recbole import DEFAULT_MAX_LEN, export  # noqa: E402
from record import write_results  # noqa: E402

from learn.errors import LearnError  # noqa: E402

COMMON_CONFIG = HERE / "configs" / "common.yaml"
DEFAULT_WORK = ROOT / "benchmarks" / "out" / "baselines"
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"


def _machine() -> dict[str, object]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count()}


def _round(result: dict | None) -> dict[str, float] | None:
    return None if result is None else {k: round(float(v), 6) for k, v in result.items()}


def our_metrics(trainer, eval_data, ks: tuple[int, ...] = (10, 50)) -> dict[str, float]:
    """Our evaluator's semantics (docs/eval.md) on RecBole's scores of the loaded model.

    rank = number of items scoring strictly higher than the target (ties favour the target; RecBole's padding id 0
    is excluded), NDCG@k = 1/log2(rank+2) if rank < k, Recall@k = [rank < k], MRR = 1/(rank+1) with no cut-off;
    plain mean over all rows (one per user). ``tied_rows`` counts rows where another item has the target's score.
    """
    import torch

    trainer.model.eval()
    trainer.tot_item_num = eval_data._dataset.item_num
    ranks, ties = [], 0
    with torch.no_grad():
        for batch in eval_data:
            _, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batch)
            if len(positive_u) != len(scores):
                raise LearnError("expected exactly one target item per evaluation row")
            target = scores[positive_u, positive_i].unsqueeze(1)
            ranks.append((scores[positive_u] > target).sum(1))
            ties += int(((scores[positive_u] == target).sum(1) > 1).sum())
    rank = torch.cat(ranks).double()
    out: dict[str, float] = {}
    for k in ks:
        hit = (rank < k).double()
        out[f"ndcg@{k}"] = round(float((hit / torch.log2(rank + 2)).mean()), 6)
        out[f"recall@{k}"] = round(float(hit.mean()), 6)
    out["mrr"] = round(float((1 / (rank + 1)).mean()), 6)
    out["rows"] = len(rank)
    out["tied_rows"] = ties
    return out


def _setup(args: argparse.Namespace):
    """Export (if asked) and build RecBole's config, data loaders, model and trainer."""
    import torch

    torch.set_num_threads(args.threads)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    work = (args.work_dir / f"{args.dataset}_{args.model}").resolve()
    data_root = args.work_dir.resolve() / "data"
    if args.canonical is not None:
        stats = export(args.canonical, data_root, args.dataset, args.max_len)
        print(f"exported {args.canonical} -> {stats.out_dir} ({stats.n_users} users, {stats.n_items} items)")
    dataset_yaml = data_root / args.dataset / "recbole.yaml"
    if not dataset_yaml.exists():
        raise LearnError(f"{dataset_yaml} not found: pass --canonical DIR to export the dataset first")

    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # RecBole writes ./log, ./log_tensorboard and the checkpoint relative to the working folder
    overrides: dict[str, object] = {"checkpoint_dir": str(work / "saved")}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    config_files = [str(COMMON_CONFIG), str(dataset_yaml), *(str(Path(c).resolve()) for c in args.config)]
    config = Config(model=args.model, config_file_list=config_files, config_dict=overrides)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    torch.set_num_threads(args.threads)  # init_seed/init_logger leave it alone, but be explicit after imports

    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return work, dataset_yaml, config_files, config, dataset, (train_data, valid_data, test_data), trainer


def rescore(args: argparse.Namespace) -> Path:
    """Add our-semantics metrics of a finished run's best checkpoint to its results JSON."""
    from learn.io import atomic_write_json

    out = args.results_dir / f"{args.dataset}_{args.model}.json"
    if not out.exists():
        raise LearnError(f"{out} not found: nothing to rescore")
    work, _, _, config, _, (_, valid_data, test_data), trainer = _setup(args)
    checkpoints = sorted((work / "saved").glob("*.pth"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise LearnError(f"no checkpoint in {work / 'saved'}")
    trainer.evaluate(valid_data, load_best_model=True, model_file=str(checkpoints[-1]))  # loads the weights
    record = json.loads(out.read_text(encoding="utf-8"))
    record["valid_ours"] = our_metrics(trainer, valid_data)
    record["test_ours"] = our_metrics(trainer, test_data)
    record["rescored_checkpoint"] = str(checkpoints[-1])
    atomic_write_json(out, record, indent=2)
    print(json.dumps({"valid_ours": record["valid_ours"], "test_ours": record["test_ours"]}, indent=1))
    return out


def run(args: argparse.Namespace) -> dict:
    """Export (if asked), train with early stopping, test the best checkpoint; returns the result record."""
    import recbole
    import torch

    work, dataset_yaml, config_files, config, dataset, loaders, trainer = _setup(args)
    train_data, valid_data, test_data = loaders

    history: list[dict] = []
    best_epochs: list[int] = []
    valid_epoch, save_checkpoint = trainer._valid_epoch, trainer._save_checkpoint

    def record_valid(*a, **kw):
        score, result = valid_epoch(*a, **kw)
        history.append({"epoch": len(history), "valid_score": round(float(score), 6), "valid": _round(result)})
        print(f"epoch {history[-1]['epoch']}: valid {config['valid_metric']} {score:.4f}", flush=True)
        return score, result

    def record_best(epoch_idx, *a, **kw):
        best_epochs.append(epoch_idx)
        return save_checkpoint(epoch_idx, *a, **kw)

    trainer._valid_epoch, trainer._save_checkpoint = record_valid, record_best
    start = time.time()
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=True,
                                                      show_progress=config["show_progress"])
    train_time = time.time() - start
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
    wall = time.time() - start
    valid_ours, test_ours = our_metrics(trainer, valid_data), our_metrics(trainer, test_data)
    for epoch, loss in trainer.train_loss_dict.items():
        if epoch < len(history):
            history[epoch]["train_loss"] = round(float(loss), 6)

    command = shlex.join([f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}", "nice", "-n",
                          str(os.nice(0)), sys.executable, *sys.argv])
    return {
        "dataset": args.dataset,
        "model": args.model,
        "valid_metric": config["valid_metric"],
        "valid": _round(best_valid_result),
        "test": _round(test_result),
        "valid_ours": valid_ours,
        "test_ours": test_ours,
        "checkpoint": trainer.saved_model_file,
        "best_epoch": best_epochs[-1] if best_epochs else None,
        "epochs_run": len(history),
        "max_epochs": config["epochs"],
        "stopping_step": config["stopping_step"],
        "stopped_early": len(history) < config["epochs"],
        "wall_time_s": round(wall, 1),
        "train_time_s": round(train_time, 1),
        "history": history,
        "data": {"users": dataset.user_num - 1, "items": dataset.item_num - 1,
                 "rows": {"train": len(train_data.dataset), "valid": len(valid_data.dataset),
                          "test": len(test_data.dataset)},
                 "canonical": str(args.canonical) if args.canonical else None,
                 "recbole_files": str(dataset_yaml.parent), "max_item_list_length": config["MAX_ITEM_LIST_LENGTH"]},
        "config": {k: config[k] for k in ("train_batch_size", "eval_batch_size", "learning_rate", "epochs",
                                           "loss_type", "seed", "MAX_ITEM_LIST_LENGTH", "metrics", "topk")
                   if k in config},
        "config_files": config_files,
        "command": command,
        "cwd_at_start": args.cwd,
        "threads": torch.get_num_threads(),
        "versions": {"recbole": recbole.__version__, "torch": torch.__version__, "numpy": np.__version__},
        "machine": _machine(),
        "log_dir": str(work / "log"),
        "finished_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "best_valid_score": round(float(best_valid_score), 6),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_recbole.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="dataset name: RecBole file prefix and result-file prefix")
    parser.add_argument("--model", required=True, help="RecBole model class, e.g. SASRec, GRU4Rec, BERT4Rec")
    parser.add_argument("--canonical", type=Path, help="canonical dataset folder to export before training")
    parser.add_argument("--config", action="append", default=[], help="extra RecBole YAML (later wins); repeatable")
    parser.add_argument("--epochs", type=int, help="cap on epochs (overrides the configs)")
    parser.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN, help="MAX_ITEM_LIST_LENGTH for the export")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help="exports, logs and checkpoints")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--results-md", type=Path, default=RESULTS_MD)
    parser.add_argument("--rescore", action="store_true",
                        help="no training: add our-semantics metrics of the run's saved best checkpoint to its JSON")
    args = parser.parse_args(argv)
    args.cwd = os.getcwd()
    for name in ("work_dir", "results_dir", "results_md"):
        setattr(args, name, getattr(args, name).resolve())
    args.config = [str(Path(c).resolve()) for c in args.config]
    args.canonical = args.canonical.resolve() if args.canonical else None
    try:
        if args.rescore:
            print(f"updated {rescore(args)}")
            return 0
        record = run(args)
    except LearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = write_results(record, args.results_dir, args.results_md)
    print(json.dumps({"valid": record["valid"], "test": record["test"], "test_ours": record["test_ours"],
                      "best_epoch": record["best_epoch"],
                      "epochs_run": record["epochs_run"], "wall_time_s": record["wall_time_s"]}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
