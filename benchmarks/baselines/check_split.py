"""Check that a canonical dataset has exactly the split RecBole itself makes from atomic files (LS valid_and_test).

RecBole (benchmarks/baselines/.venv) loads NAME.inter from an atomic-file folder with the settings of the reference
run (configs/ml-100k.yaml; all interactions, no filtering, chronological order ``TO``, ``LS: valid_and_test``,
histories cut to MAX_ITEM_LIST_LENGTH) and builds its augmented train/valid/test rows. The canonical folder is
exported to rows with export_recbole.build_rows. Both sides are compared as (raw user id, raw item-id history,
raw target) rows.

RecBole does not sort by the exact timestamp: for ml-100k (``normalize_all: True`` in its dataset preset) it sorts
by float32((t - min) / (max - min)), about 1.1-second steps over ml-100k's 215 days, and orders equal keys by
file order (stable sort). ``--write-recbole-order OUT`` writes a
copy of the canonical folder re-ordered that way (same umap/smap), whose split is RecBole's own.

Usage:
    benchmarks/baselines/.venv/bin/python benchmarks/baselines/check_split.py CANONICAL_DIR \\
        [--atomic DIR_HOLDING_NAME/] [--name ml-100k] [--max-len 50] [--write-recbole-order OUT]
Default --atomic: the recbole wheel's dataset_example folder (holds ml-100k/). Exit 0 when the splits are identical.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
for path in (str(HERE.parents[1]), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from export_recbole import DEFAULT_MAX_LEN, SPLITS, build_rows, load_canonical  # noqa: E402

from learn.data.formats import load_dataset, write_dataset  # noqa: E402
from learn.errors import LearnError  # noqa: E402
from learn.io import read_json  # noqa: E402

Row = tuple[str, tuple[str, ...], str]


def recbole_rows(atomic: Path, name: str, max_len: int) -> dict[str, Counter[Row]]:
    """RecBole's own augmented rows, in raw tokens."""
    if not hasattr(np, "float"):
        np.float = float  # removed alias that recbole 1.2.1 still uses
    from recbole.config import Config
    from recbole.data import create_dataset

    config = Config(model="SASRec", dataset=name, config_dict={
        "data_path": str(atomic), "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "MAX_ITEM_LIST_LENGTH": max_len,
        "train_neg_sample_args": None, "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "device": "cpu", "use_gpu": False, "show_progress": False})
    dataset = create_dataset(config)
    uid_tok, iid_tok = dataset.field2id_token["user_id"], dataset.field2id_token["item_id"]
    out: dict[str, Counter[Row]] = {}
    for split, part in zip(SPLITS, dataset.build()):
        inter = part.inter_feat
        users, targets = inter["user_id"].numpy(), inter["item_id"].numpy()
        lists, lengths = inter["item_id_list"].numpy(), inter["item_length"].numpy()
        out[split] = Counter(
            (str(uid_tok[u]), tuple(str(iid_tok[i]) for i in seq[:n]), str(iid_tok[t]))
            for u, seq, n, t in zip(users, lists, lengths, targets)
        )
    return out


def canonical_rows(folder: Path, max_len: int) -> dict[str, Counter[Row]]:
    """Our export's rows, mapped back to raw ids through umap/smap."""
    data = load_canonical(folder)
    users = {v: k for k, v in read_json(folder / "umap.json").items()}
    items = {v: k for k, v in read_json(folder / "smap.json").items()}
    out: dict[str, Counter[Row]] = {}
    for split, lines in build_rows(data, max_len).items():
        rows: Counter[Row] = Counter()
        for line in lines:
            user, history, target = line.rstrip("\n").split("\t")
            rows[(users[int(user)], tuple(items[int(i)] for i in history.split()), items[int(target)])] += 1
        out[split] = rows
    return out


def write_recbole_order(canonical_dir: Path, inter_path: Path, out: Path) -> Path:
    """Canonical folder with each user's sequence sorted as RecBole sorts it (float32 of min-max normalised time,
    stable on file order)."""
    umap, smap = read_json(canonical_dir / "umap.json"), read_json(canonical_dir / "smap.json")
    with open(inter_path, encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = [h.split(":")[0] for h in next(reader)]
        i_user, i_item, i_time = (header.index(c) for c in ("user_id", "item_id", "timestamp"))
        rows = [(r[i_user], r[i_item], float(r[i_time])) for r in reader]
    times = np.array([t for _, _, t in rows])
    keys = ((times - times.min()) / (times.max() - times.min())).astype(np.float32)
    events: dict[str, list[tuple[np.float32, str]]] = {}
    for (user, item, _), key in zip(rows, keys):
        events.setdefault(user, []).append((key, item))
    seqs = {umap[u]: [smap[i] for _, i in sorted(ev, key=lambda e: e[0])] for u, ev in events.items()}
    if len(seqs) != len(umap):
        raise LearnError(f"{inter_path} has {len(seqs)} users, {canonical_dir / 'umap.json'} has {len(umap)}")
    users = sorted(seqs)
    # a complete dataset folder (item text, meta, product splits) so `learn embed`/`finetune` can use it directly
    ds = dataclasses.replace(load_dataset(canonical_dir), root=out,
                             train={str(u): seqs[u][:-2] for u in users},
                             val={str(u): [seqs[u][-2]] for u in users},
                             test={str(u): [seqs[u][-1]] for u in users})
    write_dataset(ds, out, overwrite=True)
    return out


def compare(ours: dict[str, Counter[Row]], theirs: dict[str, Counter[Row]]) -> list[str]:
    """One line per split: equal, or how many rows differ with an example."""
    report = []
    for split in SPLITS:
        only_ours, only_theirs = ours[split] - theirs[split], theirs[split] - ours[split]
        if not only_ours and not only_theirs:
            report.append(f"{split}: identical ({sum(ours[split].values())} rows)")
        else:
            example = next(iter(only_ours or only_theirs))
            report.append(f"{split}: {sum(only_ours.values())} rows only in ours, {sum(only_theirs.values())} only in "
                          f"RecBole's; e.g. user {example[0]} -> {example[2]}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check_split.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("canonical_dir", type=Path)
    parser.add_argument("--atomic", type=Path, help="RecBole data_path holding NAME/NAME.inter")
    parser.add_argument("--name", default="ml-100k")
    parser.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN)
    parser.add_argument("--write-recbole-order", type=Path, metavar="OUT",
                        help="also write the canonical folder re-ordered as RecBole orders it, and check it")
    args = parser.parse_args(argv)
    if args.atomic is None:
        import recbole

        args.atomic = Path(recbole.__file__).parent / "dataset_example"
    try:
        theirs = recbole_rows(args.atomic.resolve(), args.name, args.max_len)
        report = compare(canonical_rows(args.canonical_dir, args.max_len), theirs)
        print(f"{args.canonical_dir} vs RecBole's split:\n  " + "\n  ".join(report))
        if args.write_recbole_order:
            out = write_recbole_order(args.canonical_dir, args.atomic / args.name / f"{args.name}.inter",
                                      args.write_recbole_order)
            reordered = compare(canonical_rows(out, args.max_len), theirs)
            print(f"{out} (RecBole order) vs RecBole's split:\n  " + "\n  ".join(reordered))
    except LearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if all("identical" in line for line in report) else 1


if __name__ == "__main__":
    sys.exit(main())
