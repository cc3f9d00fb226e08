"""Seed step 4b: ``item_embeddings/pretrain.txt`` -> the item store ``item_embeddings/item_baichuan_lmdb``.

Only ``pretrain.txt`` is read (the seed ingests every file of ``item_embeddings/``, finetune ``{D}.txt`` included, and
crashes when the LMDB already exists). The output is our item store (raw float vectors + ``__meta__``), not the seed's
pickled float64 arrays; it is rebuilt atomically on every run. Run from the folder that holds ``amazon_2018/``::

    python preprocess/amazon_2018/build_item_baichuan_lmdb_pretrain.py [--data-root ./amazon_2018]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone without installing

from learn.compat import seed_build_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(seed_build_main(None, pretrain=True, description=__doc__))
