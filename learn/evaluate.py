"""Full-ranking evaluation of a LEARN model: ``python -m learn eval --ckpt RUN_OR_FOLDER --data DIR --store STORE``.

Users are ranked against every item of the dataset (spec 4: rank = number of items scoring strictly higher; history
items are not masked unless asked). Validation targets use the train history, test targets use train + val. The
cold-start slice (test items never seen in any training sequence) is reported separately.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from learn.data.bundle import DataBundle
from learn.data.samples import eval_users
from learn.errors import ArgumentParser, LearnError
from learn.io import atomic_write_json, atomic_write_text
from learn.metrics import cold_start_mask, full_ranks, metrics_from_ranks
from learn.published import results_table


@torch.no_grad()
def encode_all(model, data: DataBundle, split: str, max_history: int, batch_size: int, device: torch.device):
    """User embeddings of the split's users, the whole catalogue's item embeddings, targets and histories."""
    users = eval_users(data.dataset, split, max_history)
    table = data.table.to(device)
    ids = torch.arange(table.shape[0], device=device)
    with_ids = model.cfg.uses_item_ids
    items = model.encode_catalogue(table, ids if with_ids else None, chunk_size=8192, checkpoint=False)
    out = []
    for start in range(0, len(users.users), batch_size):
        hist = users.hist[start : start + batch_size].to(device)
        mask = users.mask[start : start + batch_size].to(device)
        out.append(model.encode_users(table[hist], mask, hist if with_ids else None))
    user_emb = torch.cat(out) if out else items.new_zeros(0, items.shape[1])
    return users, user_emb.float(), items.float()


def evaluate_split(model, data: DataBundle, split: str, max_history: int = 40, batch_size: int = 256,
                   device: torch.device | str = "cpu", ks=(10, 50), mask_history: bool = False,
                   average: str = "user", average_batch: int = 64) -> dict:
    device = torch.device(device)
    was_training = model.training
    model.eval()
    users, user_emb, items = encode_all(model, data, split, max_history, batch_size, device)
    model.train(was_training)
    history = users.hist.masked_fill(~users.mask, -1).to(device) if mask_history else None
    ranks = full_ranks(user_emb, items, users.target.to(device), history=history).cpu()
    metrics = metrics_from_ranks(ranks, ks=ks, average=average, batch_size=average_batch)
    metrics["users"] = len(users.users)
    if users.skipped:  # no history item before the split (e.g. a user only in the test split): nothing to rank from
        metrics["skipped"] = users.skipped
    if split == "test":
        seqs = list(data.dataset.train.values())
        cold = cold_start_mask(seqs, users.target.tolist())
        metrics["cold_users"] = int(cold.sum())
        if cold.any():
            cold_metrics = metrics_from_ranks(ranks[cold], ks=ks, average="user")
            metrics.update({f"cold/{k}": v for k, v in cold_metrics.items() if k != "count"})
    return metrics


def skipped_note(split: str, metrics: dict) -> str | None:
    """The notice line for users left out of a split's mean because they have no history item, or None."""
    n = metrics.get("skipped", 0)
    if not n:
        return None
    return (f"note: {n:,} {split} user(s) without any history item before the {split} item (e.g. only in the "
            f"{split} split) skipped: not ranked, not part of the mean of {metrics.get('users', metrics.get('count'))}")


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="python -m learn eval", description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="run folder, checkpoint step folder or model folder")
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--store", required=True, help="item store of that dataset")
    p.add_argument("--split", choices=["test", "val", "both"], default="both")
    p.add_argument("--max-history", type=int, default=None,
                   help="history items per user (default: the run's data.max_history, else 40)")
    p.add_argument("--ks", default="10,50")
    p.add_argument("--mask-history", action="store_true", help="exclude history items from the ranking")
    p.add_argument("--average", choices=["user", "batch"], default="user",
                   help="user: mean over users (default); batch: the authors' mean of batch means")
    p.add_argument("--average-batch", type=int, default=64, help="batch size for --average batch (LEARN 64)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="folder for metrics.json and results.md (default: the checkpoint folder)")
    p.add_argument("--name", default="", help="dataset name for the results table (default: folder name)")
    p.add_argument("--plot", metavar="PNG", help="also write a bar chart of the results beside the published numbers")
    p.add_argument("--reference", action="append", default=[], metavar="LABEL=METRIC:VALUE,...",
                   help="--plot also draws these numbers measured elsewhere (repeatable), e.g. "
                        "\"SASRec (recorded)=ndcg@10:0.067,recall@10:0.144\"")
    p.add_argument("--other-catalogue", action="store_true",
                   help="rank a catalogue other than the model's own (text-only models: no item-ID table or biases)")
    args = p.parse_args(argv)
    from learn.metrics import parse_ks

    ks = parse_ks(args.ks)  # before the model or any data is loaded
    from learn.plot import parse_reference

    references = dict(parse_reference(r) for r in args.reference)
    if references and not args.plot:
        raise LearnError("--reference draws beside the results chart: pass --plot PNG too")

    from learn.inference import load_model

    loaded = load_model(args.ckpt, args.data, args.store, args.device, args.max_history, args.other_catalogue)
    model, weights, data, device = loaded.model, loaded.weights, loaded.data, loaded.device
    splits = ["val", "test"] if args.split == "both" else [args.split]
    result = {"checkpoint": str(weights), "data": args.data, "mask_history": args.mask_history,
              "average": args.average}
    for split in splits:
        result[split] = evaluate_split(model, data, split, loaded.max_history, args.batch_size, device, ks,
                                       args.mask_history, args.average, args.average_batch)
        if note := skipped_note(split, result[split]):
            print(note, file=sys.stderr)
    name = args.name or Path(args.data).name
    from learn.data.formats import source_format

    lineage = source_format(args.data)
    table = results_table([{"dataset": name, "model": "LEARN (ours)", "source_format": lineage,
                            **result.get("test", result[splits[-1]])}])
    out = Path(args.out) if args.out else weights
    atomic_write_json(out / "metrics.json", result, indent=2)
    atomic_write_text(out / "results.md", table + "\n")
    if args.plot:
        from learn.plot import results_chart

        results_chart(result.get("test", result[splits[-1]]), name, args.plot, source_format=lineage,
                      references=references)
    for split in splits:
        m = result[split]
        print(f"{split}: " + "  ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float)))
    print(table)
    return 0
