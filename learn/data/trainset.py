"""The training data of a run: its sequences (a finetune dataset's train split, or a pretraining corpus) under the
length filters, the samples drawn from them every epoch, the collator that looks up their item vectors, and the
sampler that shards them over the ranks.

A pretraining corpus with ``smap.json`` is, with ``data.stream_corpus``, converted once into a flat file next to the
corpus (``train.seq-<min>-<max>/``, or under the run folder when the corpus is read-only) and read per sample, so no
process holds the corpus in RAM; rank 0 builds it while the others wait. Otherwise it is loaded and validated in
memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data.distributed import DistributedSampler

from learn import distributed as D
from learn.data.bundle import DataBundle, item_table, load_bundle, open_store
from learn.data.corpus import SequenceFile, StreamedSequenceSamples, open_sequence_file
from learn.data.samples import Collator, SequenceSamples
from learn.errors import LearnError


@dataclass
class TrainData:
    eval_data: DataBundle | None  # data.dataset: validated and tested on (and trained on when finetuning)
    keys: list[str]  # the training catalogue's item keys in index order
    store: object  # learn.data.store.ItemStore of those items
    table: torch.Tensor | None  # [items, dim] item vectors (CPU), or None: read from the store per batch
    train_set: SequenceSamples  # (or StreamedSequenceSamples over a flat corpus file)
    collate: Collator
    sampler: DistributedSampler
    sequences: int  # training sequences left after the length filter


def build_train_data(cfg, dist: D.DistInfo, window: int, run_dir: Path) -> TrainData:
    """The training data of the run config ``cfg`` (``window``: the future target window a loss needs, 0 = none)."""
    t = cfg.train
    eval_data = load_bundle(cfg.data.dataset, cfg.data.store) if cfg.data.dataset else None
    if t.stage == "finetune":
        if eval_data is None:
            raise LearnError("finetune needs data.dataset=<prepared dataset folder> and data.store=<item store>")
        ds = eval_data.dataset
        lo, hi = max(2, cfg.data.finetune_min_len), cfg.data.finetune_max_len or 10**9
        seqs = [s for s in ds.train.values() if lo <= len(s) <= hi]
        keys, store, table = ds.item_keys, eval_data.store, eval_data.table
    else:
        if not cfg.data.pretrain_corpus:
            raise LearnError("pretrain needs data.pretrain_corpus=<folder with train.json, meta_data.json>")
        seqs, keys = _pretrain_sequences(cfg, dist, run_dir)
        store = open_store(cfg.data.pretrain_store or cfg.data.store)
        table = item_table(store, keys) if cfg.data.preload_store else None
    if not len(seqs):
        raise LearnError("no training sequences left after the length filter")
    samples_cls = StreamedSequenceSamples if isinstance(seqs, SequenceFile) else SequenceSamples
    train_set = samples_cls(seqs, cfg.data.max_history, mode=t.stage, positions=t.loss_positions, window=window,
                            seed=t.seed, sampling=t.sampling)
    stream = table is None
    collate = Collator(store if stream else None, keys if stream else None)
    sampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=t.seed,
                                 drop_last=len(seqs) >= dist.world_size)
    return TrainData(eval_data, keys, store, table, train_set, collate, sampler, len(seqs))


def _pretrain_sequences(cfg, dist: D.DistInfo, run_dir: Path):
    """(the pretraining sequences as smap indices under the length filter, the corpus's item keys in index order)."""
    from learn.data.formats import load_pretrain_corpus, read_index_map, resolve

    root = Path(cfg.data.pretrain_corpus)
    lo, hi = cfg.data.min_seq_len, cfg.data.max_seq_len
    smap_path = resolve(root / "smap.json")
    if cfg.data.stream_corpus and smap_path.exists():
        smap = read_index_map(smap_path, "item")
        keys = sorted(smap, key=smap.__getitem__)
        cache = None if os.access(root, os.W_OK) else run_dir / "corpus" / f"train.seq-{lo}-{hi}"
        for turn in ("build", "open"):  # rank 0 builds the flat file, then the other ranks open it
            if (turn == "build") == dist.is_main:
                try:
                    seqs = open_sequence_file(root, smap, lo, hi, cache=cache)
                except KeyError as e:
                    raise LearnError(str(e.args[0])) from None
            if dist.enabled:
                D.barrier()
        return seqs, keys
    corpus = load_pretrain_corpus(root)
    smap = corpus.smap
    return [[smap[k] for k in s] for s in corpus.train if lo <= len(s) <= hi], corpus.item_keys
