"""Seed step 4c: embed the items of every ``finetune_data/{D}`` -> ``item_embeddings/{D}.txt``.

A thin wrapper over ``python -m learn embed`` (one resumable store per dataset in ``item_embeddings/cex_stores/{D}``,
exported as the seed's ``ASIN\\x01v1,v2,...`` lines). Every ``finetune_data/{D}/`` with a ``smap.json`` is embedded
(``--datasets`` picks some). Run from the folder that holds ``amazon_2018/``::

    python preprocess/amazon_2018/extract_baichuan_emb_ft.py [--data-root ./amazon_2018] [--datasets Scientific]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone without installing

from learn.compat import seed_embed_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(seed_embed_main(None, pretrain=False, description=__doc__))
