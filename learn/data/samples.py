"""Training and evaluation samples: index sequences -> padded id batches (+ item vectors when streamed from LMDB).

Sampling is a pure function of (seed, epoch, sample index), so a run is reproducible whatever the number of DataLoader
workers, and a resumed run sees exactly the batches an uninterrupted run would have seen.

A :class:`Batch` holds item ids (indices into an item-vector table): ``hist``/``mask`` are the right-padded history fed
to the user tower, ``target``/``target_mask`` the item to predict after each position (``loss_positions=all``) or only
after the last one (``target``), and ``window`` a later target window for the dense all-action loss. When vectors are
streamed, ``uniq`` lists the batch's distinct ids and ``vectors`` their rows (read in the worker).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass
class Batch:
    hist: torch.Tensor  # [B, L] long
    mask: torch.Tensor  # [B, L] bool
    target: torch.Tensor  # [B, L] long: next item after each position
    target_mask: torch.Tensor  # [B, L] bool: where a loss is read
    window: torch.Tensor | None = None  # [B, W] long (dense loss)
    window_mask: torch.Tensor | None = None
    uniq: torch.Tensor | None = None  # [U] long, sorted (streaming mode)
    vectors: torch.Tensor | None = None  # [U, D] float32 (streaming mode)

    def to(self, device: torch.device) -> Batch:
        moved = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                 for k, v in self.__dict__.items()}
        return Batch(**moved)


Sampling = Literal["random", "all_prefixes", "windows"]  # train.sampling (see SequenceSamples)


def _rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


class SequenceSamples(Dataset):
    """Random split points over id sequences.

    ``mode="pretrain"``: split point t ~ U[len//2, len-1] (spec 2.1); ``mode="finetune"``: t ~ U[1, len-1] (spec 2.2).
    With ``positions="target"`` the loss is read only at the split point; with ``positions="all"`` the history window
    ``seq[t-L:t]`` predicts ``seq[t-L+1:t+1]`` at every position (the causal mask makes this one forward pass), and t is
    drawn so long sequences are covered (finetune: the end of the sequence unless longer than the window).
    ``sampling="all_prefixes"`` replaces the random draw by every allowed split point, each one sample per epoch
    (RecBole's augmentation). ``sampling="windows"`` (with ``positions="all"``) cuts each sequence, from its end, into
    consecutive windows of ``max_history`` targets, one sample each: every item after the first is a target exactly
    once per epoch, in one causal pass per window (SASRec's own training, over the whole sequence).
    """

    def __init__(self, sequences: Sequence[Sequence[int]], max_history: int, mode: str = "finetune",
                 positions: str = "all", window: int = 0, seed: int = 0, sampling: Sampling = "random"):
        if sampling not in get_args(Sampling):
            raise ValueError(f"unknown sampling {sampling!r}")
        if sampling == "windows" and positions != "all":
            raise ValueError("sampling='windows' reads a loss at every position: it needs positions='all'")
        self.sequences = self._hold(sequences)
        self.max_history = max_history
        self.mode = mode
        self.positions = positions
        self.window = window
        self.seed = seed
        self.epoch = 0
        self.pairs = None  # fixed (sequence index, split point) samples, when not drawn per epoch
        if sampling == "all_prefixes":  # every allowed split point is one sample per epoch
            lengths = self._lengths()
            lows = np.maximum(lengths // 2, 1) if mode == "pretrain" else np.ones_like(lengths)
            self.pairs = self._enumerate(lengths, np.maximum(lengths - lows, 0), lambda k, i: k + lows[i])
        elif sampling == "windows":  # split points n-1, n-1-L, ... (>= 1): disjoint target windows covering 1..n-1
            lengths = self._lengths()
            counts = np.maximum(-(-(lengths - 1) // max_history), 0)
            self.pairs = self._enumerate(lengths, counts, lambda k, i: lengths[i] - 1 - k * max_history)

    @staticmethod
    def _enumerate(lengths: np.ndarray, counts: np.ndarray, split_point) -> np.ndarray:
        """[S,2] (sequence index, split point): ``counts[i]`` samples of sequence i, the k-th at split_point(k, i)."""
        seq_idx = np.repeat(np.arange(len(lengths)), counts)
        k = np.arange(len(seq_idx)) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.stack([seq_idx, split_point(k, seq_idx)], axis=1).astype(np.int64)

    def _hold(self, sequences):
        """The sequences as this dataset keeps them (in RAM: one int64 array each)."""
        return [np.asarray(s, dtype=np.int64) for s in sequences]

    def _lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.sequences], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sequences) if self.pairs is None else len(self.pairs)

    def _split_point(self, n: int, rng: np.random.Generator) -> int:
        if self.positions == "all" and self.mode == "finetune":
            lo = max(1, min(n - 1, self.max_history))  # use the whole tail; long sequences: a random window end
            return int(rng.integers(lo, n)) if lo < n - 1 else n - 1
        lo = n // 2 if self.mode == "pretrain" else 1
        lo = min(max(lo, 1), n - 1)
        return int(rng.integers(lo, n))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.pairs is not None:
            seq_index, t = (int(v) for v in self.pairs[index])
            seq = self.sequences[seq_index]
        else:
            seq = self.sequences[index]
            t = self._split_point(len(seq), _rng(self.seed, self.epoch, index))
        start = max(0, t - self.max_history)
        hist = seq[start:t]
        if self.positions == "all":
            target = seq[start + 1 : t + 1]
        else:
            target = np.full(len(hist), -1, dtype=np.int64)
            target[-1] = seq[t]
        win = seq[t : t + self.window] if self.window else np.empty(0, dtype=np.int64)
        return hist, target, win


def pad(rows: Sequence[np.ndarray], width: int | None = None, fill: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = width or max((len(r) for r in rows), default=1) or 1
    out = np.full((len(rows), width), fill, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
        mask[i, : len(r)] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


class Collator:
    """Pad a list of samples into a :class:`Batch`; with ``store``+``keys``, also read the batch's item vectors."""

    def __init__(self, store=None, keys: Sequence[str] | None = None):
        self.store = store
        self.keys = keys

    def __call__(self, samples) -> Batch:
        hists, targets, wins = zip(*samples, strict=True)
        hist, mask = pad(hists)
        target, _ = pad(targets, width=hist.shape[1], fill=-1)
        target_mask = target >= 0
        target = target.clamp(min=0)
        batch = Batch(hist=hist, mask=mask, target=target, target_mask=target_mask)
        if any(len(w) for w in wins):
            batch.window, batch.window_mask = pad(wins)
        if self.store is not None:
            ids = [batch.hist[batch.mask], batch.target[batch.target_mask]]
            if batch.window is not None:
                ids.append(batch.window[batch.window_mask])
            uniq = torch.unique(torch.cat(ids))
            batch.uniq = uniq
            batch.vectors = torch.from_numpy(self.store.get([self.keys[i] for i in uniq.tolist()]))
        return batch


def lookup(batch: Batch, ids: torch.Tensor, table: torch.Tensor | None) -> torch.Tensor:
    """Item vectors for ``ids`` (any shape): from the preloaded ``table`` or the batch's streamed rows."""
    if table is not None:
        return table[ids]
    local = torch.searchsorted(batch.uniq, ids.clamp(min=int(batch.uniq[0])))
    local = local.clamp(max=len(batch.uniq) - 1)
    return batch.vectors[local]


@dataclass
class EvalUsers:
    """Users to rank for one split: padded histories (last ``max_history`` items) and their single targets."""

    users: list[str]
    hist: torch.Tensor  # [U, L]
    mask: torch.Tensor  # [U, L]
    target: torch.Tensor  # [U]
    skipped: int  # users without any history item


def eval_users(dataset, split: str, max_history: int) -> EvalUsers:
    """``split="val"``: history = train, target = val; ``"test"``: history = train + val, target = test (spec 4)."""
    targets = dataset.val if split == "val" else dataset.test
    users, rows, tgts, skipped = [], [], [], 0
    for user, items in targets.items():
        if not items:
            continue
        hist = dataset.history(user, split)[-max_history:]
        if not hist:
            skipped += 1
            continue
        users.append(user)
        rows.append(np.asarray(hist, dtype=np.int64))
        tgts.append(items[0])
    hist, mask = pad(rows, width=max((len(r) for r in rows), default=1))
    return EvalUsers(users, hist, mask, torch.tensor(tgts, dtype=torch.long), skipped)
