"""Seed step 3: write ``product2text.dict`` (+ ``item_text.json``) for each finetune dataset and the pretrain data.

Texts follow :mod:`learn.data.text` (the seed's template and HTML clean-up). Items of ``smap.json`` without meta
are skipped with a message, as the seed does. ``pretrain_data/smap.json`` is generated (first-seen order over
train.json then dev.json) when missing — the authors never ship it (adxcreative/LEARN#2). Run from the folder
that holds ``amazon_2018/``::

    python preprocess/amazon_2018/build_product2text.py [--data-root ./amazon_2018] [--datasets Arts ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone without installing

from learn.cli import guarded  # noqa: E402
from learn.data.formats import load_dataset, load_pretrain_corpus, write_item_texts  # noqa: E402
from learn.data.prepare import seed_finetune_folders  # noqa: E402
from learn.io import atomic_write_json  # noqa: E402

SHOW_MISSING = 10


def texts_from_meta(name: str, data) -> dict[str, str]:
    """{item key: template text} for smap items, printing the seed's messages about items without meta."""
    data.item_texts = None  # always rebuild from meta_data.json, never from a previous run's output
    texts = data.text_map()
    missing = [k for k in data.smap if k not in texts]
    for key in missing[:SHOW_MISSING]:
        print(f"missing {key} in {name}")
    if len(missing) > SHOW_MISSING:
        print(f"... and {len(missing) - SHOW_MISSING:,} more items without meta in {name}")
    print(f" total {len(texts)} items in {name}")
    print(f" total {len(data.smap)} items needs in {name}")
    return texts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=Path("./amazon_2018"), help="holds finetune_data/, pretrain_data/")
    p.add_argument("--datasets", nargs="+", help="default: every finetune_data/<D>/ with a smap.json")
    p.add_argument("--skip-pretrain", action="store_true", help="only the finetune datasets")
    args = p.parse_args(argv)
    for folder in seed_finetune_folders(args.data_root, args.datasets):
        write_item_texts(folder, texts_from_meta(folder.name, load_dataset(folder)))
    pretrain = args.data_root / "pretrain_data"
    if args.skip_pretrain:
        return 0
    if not pretrain.is_dir():
        print(f"{pretrain} not found: pretrain texts skipped")
        return 0
    corpus = load_pretrain_corpus(pretrain)
    if corpus.smap_generated:
        atomic_write_json(pretrain / "smap.json", corpus.smap)
        print(f"wrote {pretrain / 'smap.json'} ({corpus.num_items:,} items, first seen over train then dev)")
    write_item_texts(pretrain, texts_from_meta("pretrain_data", corpus))
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
