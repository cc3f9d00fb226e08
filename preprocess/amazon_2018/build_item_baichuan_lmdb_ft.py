"""Seed step 4d: ``item_embeddings/{D}.txt`` -> ``finetune_data/{D}_baichuan_lmdb`` + ``product2emb_{D}.pkl``.

For every ``finetune_data/{D}/`` with a ``smap.json`` (``--datasets`` picks some). The LMDB is our item store; the
pickle ({ASIN: np.float32 array}) is the file the authors' finetuning needs but no seed script builds. Run from the
folder that holds ``amazon_2018/``::

    python preprocess/amazon_2018/build_item_baichuan_lmdb_ft.py [--data-root ./amazon_2018] [--datasets Scientific]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone without installing

from learn.compat import seed_build_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(seed_build_main(None, pretrain=False, description=__doc__))
