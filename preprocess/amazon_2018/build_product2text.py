"""Seed step 3: write ``product2text.dict`` (+ ``item_text.json``) for each finetune dataset and the pretrain data.

Texts follow :mod:`learn.data.text` (the seed's template and HTML clean-up). Items of ``smap.json`` without meta
are skipped with a message, as the seed does. ``pretrain_data/smap.json`` is generated (first-seen order over
train.json then dev.json) when missing — the authors never ship it (adxcreative/LEARN#2). Run from the folder
that holds ``amazon_2018/``::

    python preprocess/amazon_2018/build_product2text.py [--data-root ./amazon_2018] [--datasets Arts ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone without installing

from learn.cli import guarded  # noqa: E402
from learn.compat import seed_texts_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(guarded(lambda argv: seed_texts_main(argv, description=__doc__)))
