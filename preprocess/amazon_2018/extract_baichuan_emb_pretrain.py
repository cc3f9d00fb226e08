"""Seed step 4a: embed the pretrain items -> ``item_embeddings/pretrain.txt`` (lines ``ASIN\\x01v1,v2,...``).

A thin wrapper over ``python -m learn embed``: the vectors first go to the resumable item store
``item_embeddings/cex_stores/pretrain`` (rerun after a crash to finish), then are exported as the seed's text file.
Texts come from ``pretrain_data/item_text.json`` / ``product2text.dict`` (the seed reads a ``product2item.dict`` that
does not exist), else from ``meta_data.json``. Replaces the seed's 8 manual ``--index`` shards (``part_{i}.txt``):
for several GPUs run it under ``torchrun --nproc_per_node N``. Run from the folder that holds ``amazon_2018/``::

    python preprocess/amazon_2018/extract_baichuan_emb_pretrain.py [--data-root ./amazon_2018] [--llm MODEL]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone without installing

from learn.compat import seed_embed_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(seed_embed_main(None, pretrain=True, description=__doc__))
