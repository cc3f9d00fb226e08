"""No-training text baseline: ``python -m learn text-baseline --data DIR --store STORE``.

The user vector is built from the frozen item vectors of the user's history (last item, plain mean, or
recency-weighted mean with weight ``decay**age``, age 0 = the latest item), then every item of the catalogue is
ranked by cosine similarity with full ranking (spec 4: rank = number of items scoring strictly higher, history not
masked unless asked). A trained model has to clear this by a wide margin: it costs nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from learn.errors import ArgumentParser, LearnError
from learn.evaluate import skipped_note
from learn.io import atomic_write_json
from learn.metrics import full_ranks, metrics_from_ranks, parse_ks
from learn.published import results_table

USER_MODES = ("last", "mean", "recency")


def history_weights(mask: Tensor, mode: str, decay: float = 0.7) -> Tensor:
    """Weights ``[U, L]`` over left-aligned, right-padded histories (``mask`` True = real item), rows summing to 1."""
    if mode not in USER_MODES:
        raise ValueError(f"user mode must be one of {USER_MODES}, got {mode!r}")
    mask = mask.bool()
    lengths = mask.sum(1, keepdim=True)
    pos = torch.arange(mask.shape[1], device=mask.device)[None, :]
    age = (lengths - 1 - pos).clamp(min=0).double()
    if mode == "last":
        w = (age == 0).double()
    elif mode == "mean":
        w = torch.ones_like(age)
    else:
        w = torch.pow(torch.tensor(float(decay), dtype=torch.float64), age)
    w = w * mask
    return (w / w.sum(1, keepdim=True).clamp(min=1e-300)).float()


def user_vectors(table: Tensor, hist: Tensor, mask: Tensor, mode: str, decay: float = 0.7,
                 batch_size: int = 512) -> Tensor:
    """Unit-norm user vectors ``[U, d]``: weighted mean of the unit-norm history item vectors of ``table``."""
    items = F.normalize(table.float(), dim=1)
    weights = history_weights(mask, mode, decay)
    out = [torch.bmm(weights[s : s + batch_size, None, :], items[hist[s : s + batch_size]]).squeeze(1)
           for s in range(0, hist.shape[0], batch_size)]
    users = torch.cat(out) if out else items.new_zeros(0, items.shape[1])
    return F.normalize(users, dim=1)


def text_baseline(dataset, table: Tensor, split: str = "test", mode: str = "last", decay: float = 0.7,
                  max_history: int = 40, ks=(10, 50), mask_history: bool = False, average: str = "user",
                  average_batch: int = 64) -> dict:
    """Metrics of the text baseline on one split of a :class:`learn.data.formats.SeqDataset`.

    ``table`` holds the item vectors in item-index order (``store.get(dataset.item_keys)``). Users without any
    history item are skipped (their cosine is undefined) and counted in ``skipped``.
    """
    from learn.data.samples import eval_users

    users = eval_users(dataset, split, max_history)
    if not users.users:
        raise LearnError(f"{dataset.root}: no {split} users with a history to rank")
    items = F.normalize(table.float(), dim=1)
    user_emb = user_vectors(items, users.hist, users.mask, mode, decay)
    history = users.hist.masked_fill(~users.mask, -1) if mask_history else None
    ranks = full_ranks(user_emb, items, users.target, history=history)
    metrics = metrics_from_ranks(ranks, ks=ks, average=average, batch_size=average_batch)
    metrics["skipped"] = users.skipped
    return metrics


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="python -m learn text-baseline", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="prepared dataset folder (python -m learn prepare)")
    p.add_argument("--store", required=True, help="item store with a vector for every item (python -m learn embed)")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--user", choices=[*USER_MODES, "all"], default="last",
                   help="user vector: last history item, plain mean, recency-weighted mean (decay**age), or all three")
    p.add_argument("--decay", type=float, default=0.7, help="recency decay per step of age (default 0.7)")
    p.add_argument("--max-history", type=int, default=40, help="keep the last N history items (LEARN: 40)")
    p.add_argument("--ks", default="10,50", help="cut-offs for NDCG/Recall (default 10,50)")
    p.add_argument("--mask-history", action="store_true", help="exclude history items from the ranking")
    p.add_argument("--average", choices=["user", "batch"], default="user",
                   help="user: mean over users (default); batch: the authors' mean of batch means")
    p.add_argument("--average-batch", type=int, default=64, help="batch size for --average batch (LEARN 64)")
    p.add_argument("--name", default="", help="dataset name in the results table (default: the folder name)")
    p.add_argument("--out", help="write the metrics as JSON to this file")
    args = p.parse_args(argv)
    if not 0.0 < args.decay <= 1.0:
        raise LearnError(f"--decay must be in (0, 1], got {args.decay}")
    if args.max_history < 1:
        raise LearnError(f"--max-history must be at least 1, got {args.max_history}")
    if args.average_batch < 1:
        raise LearnError(f"--average-batch must be at least 1, got {args.average_batch}")
    ks = parse_ks(args.ks)

    from learn.data.formats import load_dataset, source_format
    from learn.data.store import ItemStore

    dataset = load_dataset(args.data)
    table = torch.from_numpy(ItemStore(args.store).get(dataset.item_keys))
    modes = USER_MODES if args.user == "all" else (args.user,)
    name = args.name or Path(args.data).name
    results: dict[str, dict] = {}
    for mode in modes:
        m = results[mode] = text_baseline(dataset, table, args.split, mode, args.decay, args.max_history, ks,
                                          args.mask_history, args.average, args.average_batch)
        print(f"{args.split} [{mode}] users={m['count']} skipped={m['skipped']}  "
              + "  ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float)))
    if note := skipped_note(args.split, results[modes[0]]):
        print(note, file=sys.stderr)
    label = {"last": "text: last item", "mean": "text: mean", "recency": f"text: recency {args.decay:g}"}
    lineage = source_format(args.data)
    print(results_table([{"dataset": name, "model": label[m], "source_format": lineage, **results[m]} for m in modes]))
    if args.out:
        atomic_write_json(args.out, {"data": str(args.data), "store": str(args.store), "split": args.split,
                                     "decay": args.decay, "max_history": args.max_history,
                                     "mask_history": args.mask_history, "average": args.average, "results": results},
                          indent=2)
    return 0
