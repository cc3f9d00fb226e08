"""Seed step 2: write ``{train,val,test}_product.json`` (item keys instead of indices) for each finetune dataset.

Run from the folder that holds ``amazon_2018/`` (as the seed README does)::

    python preprocess/amazon_2018/motify_json.py [--data-root ./amazon_2018] [--datasets Arts Office ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone without installing

from learn.cli import guarded  # noqa: E402
from learn.compat import seed_splits_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(guarded(lambda argv: seed_splits_main(argv, description=__doc__)))
