"""Export one of our canonical datasets to RecBole benchmark files, so RecBole trains and evaluates on our exact split.

A canonical dataset folder holds ``train.json`` / ``val.json`` / ``test.json`` (``{"<user idx>": [item idx, ...]}``;
train = all but the last two items, val = [second-to-last], test = [last]) plus ``smap.json`` and ``umap.json``.
It becomes, in the sequential ``item_id_list`` format that UniSRec uses (header
``user_id:token<TAB>item_id_list:token_seq<TAB>item_id:token``, histories cut to the last ``max_len`` items):

- ``NAME.train.inter``: for every user, every prefix of the train sequence -> the next train item;
- ``NAME.valid.inter``: one row per user, the train sequence -> the val item;
- ``NAME.test.inter``: one row per user, train + val -> the test item;
- ``NAME.item``: every item index of smap (so items without interactions still count in the full ranking);
- ``recbole.yaml``: ``data_path``/``dataset``/``benchmark_filename: [train, valid, test]`` and the field set-up.

This module reads our files with plain ``json`` (no dependency on learn.data) and imports RecBole only inside
``check_with_recbole``, so it runs in the project's .venv (tests) and in benchmarks/baselines/.venv alike.

Usage:
    python benchmarks/baselines/export_recbole.py CANONICAL_DIR OUT_DIR --name NAME [--max-len 50] [--check]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from learn.errors import DataError, LearnError  # noqa: E402  (stdlib-only modules, safe in the RecBole venv)
from learn.io import atomic_dir, atomic_write_text, read_json  # noqa: E402

HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
ITEM_HEADER = "item_id:token\n"
SPLITS = ("train", "valid", "test")
DEFAULT_MAX_LEN = 50
RESERVED_NAMES = frozenset({"ml-100k"})  # recbole.config.Configurator forces data_path and presets for it


@dataclass(frozen=True)
class Canonical:
    """Our split, with user keys as ints: ``train[u]`` is a list, ``val[u]`` / ``test[u]`` single items."""

    train: dict[int, list[int]]
    val: dict[int, int]
    test: dict[int, int]
    n_users: int
    n_items: int


@dataclass(frozen=True)
class ExportStats:
    """What an export wrote: counts that RecBole must reproduce."""

    name: str
    out_dir: Path
    n_users: int
    n_items: int
    rows: dict[str, int]
    max_len: int


def _int_key(path: Path, key: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise DataError(path, f"user key {key!r} is not an integer string") from None


def _items(path: Path, key: str, value: object, n_items: int) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise DataError(path, f"user {key}: expected a list of item indices, got {value!r:.80}")
    bad = [i for i in value if not 0 <= i < n_items]
    if bad:
        raise DataError(path, f"user {key}: item index {bad[0]} outside smap's 0..{n_items - 1}")
    return value


def _single(path: Path, key: str, value: object, n_items: int) -> int:
    items = _items(path, key, value, n_items)
    if len(items) != 1:
        raise DataError(path, f"user {key}: expected exactly one item, got {len(items)}")
    return items[0]


def load_canonical(folder: str | Path) -> Canonical:
    """Read and validate a canonical dataset folder with plain json."""
    folder = Path(folder)
    smap = read_json(folder / "smap.json")
    umap = read_json(folder / "umap.json")
    for fname, mapping in (("smap.json", smap), ("umap.json", umap)):
        if not isinstance(mapping, dict) or sorted(mapping.values()) != list(range(len(mapping))):
            raise DataError(folder / fname, "expected {id: index} with indices 0..N-1, each used once")
    n_items, n_users = len(smap), len(umap)
    raw = {split: read_json(folder / f"{split}.json") for split in ("train", "val", "test")}
    for split, data in raw.items():
        if not isinstance(data, dict):
            raise DataError(folder / f"{split}.json", 'expected {"<user idx>": [item idx, ...]}')
    train_path, val_path, test_path = (folder / f"{s}.json" for s in ("train", "val", "test"))
    train = {_int_key(train_path, k): _items(train_path, k, v, n_items) for k, v in raw["train"].items()}
    val = {_int_key(val_path, k): _single(val_path, k, v, n_items) for k, v in raw["val"].items()}
    test = {_int_key(test_path, k): _single(test_path, k, v, n_items) for k, v in raw["test"].items()}
    for split, path, data in (("val", val_path, val), ("test", test_path, test)):
        if data.keys() != train.keys():
            missing = sorted(train.keys() ^ data.keys())[0]
            raise DataError(path, f"user {missing} is in only one of train.json and {split}.json")
    bad_users = [u for u in train if not 0 <= u < n_users]
    if bad_users:
        raise DataError(train_path, f"user index {bad_users[0]} outside umap's 0..{n_users - 1}")
    empty = [u for u, seq in train.items() if not seq]
    if empty:
        raise DataError(train_path, f"user {empty[0]} has an empty train sequence; RecBole needs a history item")
    return Canonical(train=train, val=val, test=test, n_users=n_users, n_items=n_items)


def _row(user: int, history: list[int], target: int, max_len: int) -> str:
    return f"{user}\t{' '.join(map(str, history[-max_len:]))}\t{target}\n"


def build_rows(data: Canonical, max_len: int = DEFAULT_MAX_LEN) -> dict[str, list[str]]:
    """The lines (without header) of the train/valid/test ``.inter`` files, users in index order."""
    if max_len < 1:
        raise LearnError(f"max_len must be at least 1, got {max_len}")
    rows: dict[str, list[str]] = {split: [] for split in SPLITS}
    for user in sorted(data.train):
        seq = data.train[user]
        rows["train"].extend(_row(user, seq[:i], seq[i], max_len) for i in range(1, len(seq)))
        rows["valid"].append(_row(user, seq, data.val[user], max_len))
        rows["test"].append(_row(user, [*seq, data.val[user]], data.test[user], max_len))
    return rows


def recbole_config(data_path: Path, name: str, max_len: int) -> str:
    """The dataset part of the RecBole config (YAML text) for an exported folder."""
    return (
        "# Generated by benchmarks/baselines/export_recbole.py: RecBole reads our split from the benchmark files.\n"
        f"data_path: {str(data_path.resolve())!r}\n"
        f"dataset: {name!r}\n"
        "benchmark_filename: [train, valid, test]\n"
        "USER_ID_FIELD: user_id\n"
        "ITEM_ID_FIELD: item_id\n"
        "alias_of_item_id: [item_id_list]\n"
        "load_col:\n"
        "  inter: [user_id, item_id_list, item_id]\n"
        "  item: [item_id]\n"
        f"MAX_ITEM_LIST_LENGTH: {max_len}\n"
    )


def export(canonical_dir: str | Path, out_dir: str | Path, name: str, max_len: int = DEFAULT_MAX_LEN,
           overwrite: bool = True) -> ExportStats:
    """Write ``out_dir/NAME/NAME.{train,valid,test}.inter``, ``NAME.item`` and ``recbole.yaml`` (atomically)."""
    if not name or "/" in name or name.startswith("."):
        raise LearnError(f"bad dataset name {name!r}")
    if name in RESERVED_NAMES:
        raise LearnError(f"RecBole reserves the dataset name {name!r} (it swaps in its own example data and presets); "
                         f"use another, e.g. {name.replace('-', '')!r}")
    data = load_canonical(canonical_dir)
    rows = build_rows(data, max_len)
    out_dir = Path(out_dir)
    target = out_dir / name
    with atomic_dir(target, overwrite=overwrite) as tmp:
        for split in SPLITS:
            atomic_write_text(tmp / f"{name}.{split}.inter", HEADER + "".join(rows[split]))
        atomic_write_text(tmp / f"{name}.item", ITEM_HEADER + "".join(f"{i}\n" for i in range(data.n_items)))
        atomic_write_text(tmp / "recbole.yaml", recbole_config(out_dir, name, max_len))
    return ExportStats(name=name, out_dir=target, n_users=data.n_users, n_items=data.n_items,
                       rows={split: len(rows[split]) for split in SPLITS}, max_len=max_len)


def check_with_recbole(stats: ExportStats, model: str = "SASRec") -> dict[str, int]:
    """Load the export with RecBole (baselines venv only) and check its user/item/row counts against ours."""
    import numpy as np

    if not hasattr(np, "float"):
        np.float = float  # RecBole 1.2.1 still touches the removed alias
    from recbole.config import Config
    from recbole.data import create_dataset

    config = Config(model=model, config_file_list=[str(stats.out_dir / "recbole.yaml")],
                    config_dict={"device": "cpu", "use_gpu": False, "show_progress": False,
                                 "train_neg_sample_args": None, "eval_args": {"order": "TO", "mode": "full"}})
    dataset = create_dataset(config)
    train, valid, test = dataset.build()
    got = {"users": dataset.user_num - 1, "items": dataset.item_num - 1,
           "train": len(train), "valid": len(valid), "test": len(test)}
    want = {"users": stats.n_users, "items": stats.n_items, **stats.rows}
    if got != want:
        raise LearnError(f"RecBole sees {got}, our dataset has {want}")
    return got


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export_recbole.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("canonical_dir", type=Path, help="folder with train/val/test.json, smap.json, umap.json")
    parser.add_argument("out_dir", type=Path, help="writes OUT_DIR/NAME/ (RecBole data_path = OUT_DIR)")
    parser.add_argument("--name", required=True, help="RecBole dataset name (file prefix)")
    parser.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN, help="history cut (MAX_ITEM_LIST_LENGTH)")
    parser.add_argument("--check", action="store_true", help="load the export with RecBole and compare counts")
    args = parser.parse_args(argv)
    try:
        stats = export(args.canonical_dir, args.out_dir, args.name, args.max_len)
        print(f"exported {stats.n_users} users, {stats.n_items} items, rows {stats.rows} to {stats.out_dir}")
        if args.check:
            print(f"RecBole agrees: {check_with_recbole(stats)}")
    except LearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
