"""A prepared dataset with its item store and item-vector table: what training, evaluation and serving read.

``load_bundle(dataset_dir, store_path)`` is the one loader (the trainer, ``learn eval``, ``learn recommend``/``export``
and the benchmarks); :func:`open_store` and :func:`item_table` are its parts, also used for the pretraining corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from learn.errors import LearnError

STORE_NEEDED = "an item store is needed (data.store=<folder made by `python -m learn embed`>)"


@dataclass
class DataBundle:
    dataset: object  # learn.data.formats.SeqDataset
    store: object  # learn.data.store.ItemStore
    table: torch.Tensor  # [N, D] item vectors in item-index order (CPU)


def open_store(path: str | Path):
    """The LMDB item store at ``path`` (refused in one line when no path is given)."""
    from learn.data.store import ItemStore

    if not path:
        raise LearnError(STORE_NEEDED)
    return ItemStore(path)


def item_table(store, keys: Sequence[str]) -> torch.Tensor:
    """[N, D] float tensor (CPU): the store's vectors of ``keys``, in that order."""
    return torch.from_numpy(store.get(keys))


def load_bundle(dataset_dir: str | Path, store_path: str | Path) -> DataBundle:
    from learn.data.formats import load_dataset

    if not store_path:  # before the dataset is read
        raise LearnError(STORE_NEEDED)
    dataset = load_dataset(dataset_dir)
    store = open_store(store_path)
    return DataBundle(dataset, store, item_table(store, dataset.item_keys))
