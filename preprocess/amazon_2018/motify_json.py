"""Seed step 2: write ``{train,val,test}_product.json`` (item keys instead of indices) for each finetune dataset.

Run from the folder that holds ``amazon_2018/`` (as the seed README does)::

    python preprocess/amazon_2018/motify_json.py [--data-root ./amazon_2018] [--datasets Arts Office ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone without installing

from learn.cli import guarded  # noqa: E402
from learn.data.formats import load_dataset, write_product_splits  # noqa: E402
from learn.data.prepare import seed_finetune_folders  # noqa: E402
from learn.errors import LearnError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=Path("./amazon_2018"), help="holds finetune_data/")
    p.add_argument("--datasets", nargs="+", help="default: every finetune_data/<D>/ with a smap.json")
    args = p.parse_args(argv)
    folders = seed_finetune_folders(args.data_root, args.datasets)
    if not folders:
        raise LearnError(f"no finetune dataset (a folder with smap.json) under {args.data_root}/finetune_data")
    for folder in folders:
        ds = load_dataset(folder)
        write_product_splits(ds)
        print(f"{folder}: wrote train/val/test_product.json ({ds.num_users:,} users, {ds.num_items:,} items)")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
