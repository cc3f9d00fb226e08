"""Turn a UniSRec downstream dataset (NAME.{valid,test}.inter, item2index, user2index) into our canonical folder.

A stop-gap until ``python -m learn prepare`` reads this format: train.json[u] = the history of u's valid row,
val.json[u] = [valid target], test.json[u] = [test target]; smap.json / umap.json come from NAME.item2index /
NAME.user2index, so item and user indices are exactly UniSRec's. The test row's history must equal train + val
(checked). Histories in the UniSRec files are already cut to 50 items, so for the few users with longer sequences
the earliest interactions are not recoverable (3 users on Scientific).

Usage:
    python benchmarks/baselines/unisrec_to_canonical.py /work/shared/data/amazon2018_scientific_unisrec Scientific OUT
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from learn.errors import DataError, LearnError  # noqa: E402
from learn.io import atomic_dir, atomic_write_json  # noqa: E402


def _read_index(path: Path) -> dict[str, int]:
    try:
        with open(path, encoding="utf-8") as f:
            return {key: int(idx) for key, idx in csv.reader(f, delimiter="\t")}
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except ValueError as e:
        raise DataError(path, f"expected 'id<TAB>index' lines ({e})") from None


def _read_inter(path: Path) -> dict[int, tuple[list[int], int]]:
    rows: dict[int, tuple[list[int], int]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\n").split("\t")
            if header != ["user_id:token", "item_id_list:token_seq", "item_id:token"]:
                raise DataError(path, f"unexpected header {header}")
            for line_no, line in enumerate(f, start=2):
                user, history, target = line.rstrip("\n").split("\t")
                if int(user) in rows:
                    raise DataError(path, f"line {line_no}: user {user} has a second row")
                rows[int(user)] = ([int(i) for i in history.split()], int(target))
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except ValueError as e:
        raise DataError(path, f"malformed row ({e})") from None
    return rows


def convert(src: str | Path, name: str, out: str | Path) -> tuple[int, int]:
    """Write the canonical folder ``out``; returns (users, items)."""
    src = Path(src)
    smap = _read_index(src / f"{name}.item2index")
    umap = _read_index(src / f"{name}.user2index")
    valid = _read_inter(src / f"{name}.valid.inter")
    test = _read_inter(src / f"{name}.test.inter")
    if valid.keys() != test.keys():
        raise DataError(src / f"{name}.test.inter", "valid and test rows are for different users")
    for user, (history, _) in test.items():
        train_seq, val_item = valid[user]
        if history != (train_seq + [val_item])[-len(history):]:
            raise DataError(src / f"{name}.test.inter", f"user {user}: test history is not train + val")
    users = sorted(valid)
    with atomic_dir(out, overwrite=True) as tmp:
        atomic_write_json(tmp / "train.json", {str(u): valid[u][0] for u in users})
        atomic_write_json(tmp / "val.json", {str(u): [valid[u][1]] for u in users})
        atomic_write_json(tmp / "test.json", {str(u): [test[u][1]] for u in users})
        atomic_write_json(tmp / "smap.json", smap)
        atomic_write_json(tmp / "umap.json", umap)
    return len(umap), len(smap)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unisrec_to_canonical.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="folder with NAME.{valid,test}.inter, NAME.item2index, NAME.user2index")
    parser.add_argument("name", help="file prefix, e.g. Scientific")
    parser.add_argument("out", type=Path, help="canonical folder to write")
    args = parser.parse_args(argv)
    try:
        n_users, n_items = convert(args.src, args.name, args.out)
    except LearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {n_users} users, {n_items} items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
