"""The losses of LEARN and their registry: in-batch InfoNCE (gathered across ranks), dense all-action,
full-catalogue softmax; ``train.loss=<name>`` picks one from ``LOSSES`` and :class:`Objective` runs it on a micro-batch.

A registered loss (:func:`register_loss`) takes the :class:`Objective` (the model and the loss settings) and one
micro-batch as a :class:`LossInput`, encodes what it needs through the model's towers and returns a scalar. The
maths (``info_nce``, ``dense_all_action``, ``full_softmax``) only sees embeddings. Conventions shared by every loss:

- Embeddings are L2-normalised; ``logits = scale * cosine`` (scale 20 = 1 / temperature 0.05, fixed as in the
  authors' code). Logits are computed in at least float32, even under autocast.
- False negatives are *excluded*: their logits are set to ``-inf`` (the authors add ``-10000``, which has the same
  effect in float32 but not in float16), so they leave the softmax denominator entirely. The positive is never masked.
- Gathered losses (``gather=True`` under an initialised process group with world size W > 1) use the items of all
  ranks as negatives, through a differentiable all-gather. Each rank returns ``W * (sum of its rows' losses) /
  (number of rows on all ranks)``. DDP averages gradients over ranks, so the averaged gradient is exactly the
  gradient of the global mean loss on the concatenated batch, and the mean over ranks of the returned values is that
  global loss. With equal row counts per rank the returned value is simply the local mean. Ranks may hold different
  numbers of rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from learn.distributed import world as _world

if TYPE_CHECKING:
    from learn.model import LEARNModel


def _sizes(n: int, device: torch.device) -> list[int]:
    """Row counts of every rank."""
    world, _ = _world()
    mine = torch.tensor([n], dtype=torch.long, device=device)
    out = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(out, mine)
    return [int(t.item()) for t in out]


def _gather_rows(t: Tensor, sizes: list[int]) -> Tensor:
    """Concatenate every rank's rows (padded to the largest count for the collective, padding removed)."""
    pad = max(sizes) - t.shape[0]
    padded = torch.cat([t, t.new_zeros(pad, *t.shape[1:])]) if pad else t.contiguous()
    if t.requires_grad:
        import torch.distributed.nn as dist_nn

        with warnings.catch_warnings():  # deprecated in favour of a private API; still the public autograd gather
            warnings.simplefilter("ignore", FutureWarning)
            parts = dist_nn.all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def _f32(t: Tensor) -> Tensor:
    """At least float32 (half/bfloat16 logits at scale 20 lose precision)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def gather_with_grad(t: Tensor) -> Tensor:
    """All ranks' rows of ``t`` concatenated in rank order ([sum of rows, ...]); ``t`` itself in one process.

    Rank r's rows start at ``sum(rows of ranks < r)``. Gradients flow back to the rank that owns each row
    (``torch.distributed.nn.all_gather``). Ranks may hold different numbers of rows: the collective pads to the
    largest count and the padding is dropped from the result.
    """
    world, _ = _world()
    if world == 1:
        return t
    return _gather_rows(t, _sizes(t.shape[0], t.device))


def _gather_with_offset(tensors: list[Tensor], gather: bool) -> tuple[list[Tensor], int, int, int]:
    """Gather same-row-count tensors; returns (gathered, this rank's row offset, total rows, world size)."""
    world, rank = _world() if gather else (1, 0)
    n = tensors[0].shape[0]
    if world == 1:
        return tensors, 0, n, 1
    sizes = _sizes(n, tensors[0].device)
    return [_gather_rows(t, sizes) for t in tensors], sum(sizes[:rank]), sum(sizes), world


def _total(count: int, device: torch.device, gather: bool) -> int:
    world, _ = _world() if gather else (1, 0)
    if world == 1:
        return count
    t = torch.tensor([count], dtype=torch.long, device=device)
    dist.all_reduce(t)
    return int(t.item())


def info_nce(users: Tensor, items: Tensor, item_ids: Tensor, scale: float = 20.0, gather: bool = True) -> Tensor:
    """User -> item InfoNCE with in-batch negatives (the authors' pretraining loss, plus a cross-rank gather).

    users [M,d], items [M,d] (row i's positive), item_ids [M] (catalogue ids of the positives). Row i's logits are
    ``scale * users[i] @ all_items.T`` over the items of all ranks; its label is its own item's global row. Columns
    whose item id equals row i's target id (other than the label) are excluded. Mean over the global rows, scaled
    for DDP as described in the module docstring.
    """
    (all_items, all_ids), offset, total, world = _gather_with_offset([items, item_ids], gather)
    m = users.shape[0]
    if total == 0:
        return users.sum() * 0.0
    logits = scale * _f32(users) @ _f32(all_items).T  # [M, total]
    labels = offset + torch.arange(m, device=users.device)
    false_neg = item_ids[:, None] == all_ids[None, :]
    false_neg[torch.arange(m, device=users.device), labels] = False
    logits = logits.masked_fill(false_neg, float("-inf"))
    return F.cross_entropy(logits, labels, reduction="sum") * (world / total)


def dense_all_action(user_seq: Tensor, user_mask: Tensor, targets: Tensor, target_mask: Tensor, target_ids: Tensor,
                     scale: float = 20.0, num_user_positions: int = 4, gather: bool = True,
                     generator: torch.Generator | None = None) -> Tensor:
    """Dense all-action loss (PinnerFormer-style): several user positions x every item of a later target window.

    user_seq [B,L,d] (the user tower at every history position), user_mask [B,L]; targets [B,T,d] (item-tower
    embeddings of each user's target window), target_mask [B,T], target_ids [B,T]. Definition:

    1. For each user b, ``P_b = min(num_user_positions, valid positions)`` distinct valid history positions are
       drawn uniformly (without replacement; all valid positions when ``num_user_positions <= 0``).
    2. The candidate columns are the valid target items of every user on every rank (gathered).
    3. Each (user b, sampled position p, valid target t of b) is one term: cross-entropy of
       ``scale * u[b,p] @ columns.T`` against the column of (b, t). User b's negatives exclude every column that
       belongs to b's own window and every column whose item id is one of b's target ids, i.e. b's other
       positives and their duplicates elsewhere in the batch never act as negatives.
    4. The loss is the mean over all terms of all ranks (users with more positions x targets weigh more), scaled
       for DDP as described in the module docstring.
    """
    world, rank = _world() if gather else (1, 0)
    b, n, _ = user_seq.shape
    dev = user_seq.device
    # 1. sample positions: random keys on valid positions, top-k
    k = n if num_user_positions <= 0 else min(num_user_positions, n)
    keys = torch.rand(b, n, device=dev, generator=generator).masked_fill(~user_mask, -1.0)
    top, pos = keys.topk(k, dim=1)
    row_ok = top >= 0  # [B,K]
    users = user_seq[torch.arange(b, device=dev)[:, None], pos]  # [B,K,d]
    # 2. columns: valid targets of all ranks, with their ids and owner (unique per user across ranks)
    me = (rank << 32) + torch.arange(b, device=dev)  # [B]
    owner = me[:, None].expand_as(target_mask)
    (cols, col_ids, col_owner), offset, _, world = _gather_with_offset(
        [targets[target_mask], target_ids[target_mask], owner[target_mask]], gather and world > 1)
    pos_col = offset + torch.cumsum(target_mask.flatten().long(), 0).view_as(target_mask) - 1  # [B,T]
    pos_col = pos_col.clamp(min=0)
    n_terms = _total(int((row_ok.sum(1) * target_mask.sum(1)).sum()), dev, gather)
    if n_terms == 0 or cols.shape[0] == 0:
        return user_seq.sum() * 0.0
    # 3. logits and the per-user negative set
    logits = scale * _f32(users) @ _f32(cols).T  # [B,K,N]
    excluded = col_owner[None, :] == me[:, None]  # [B,N]
    for t in range(target_ids.shape[1]):
        excluded |= (col_ids[None, :] == target_ids[:, t:t + 1]) & target_mask[:, t:t + 1]
    lse_neg = torch.logsumexp(logits.masked_fill(excluded[:, None, :], float("-inf")), dim=-1)  # [B,K]
    s_pos = logits.gather(2, pos_col[:, None, :].expand(b, k, -1))  # [B,K,T]
    term = torch.logaddexp(lse_neg[..., None], s_pos) - s_pos
    weight = row_ok[:, :, None] & target_mask[:, None, :]
    return torch.where(weight, term, torch.zeros_like(term)).sum() * (world / n_terms)


def full_softmax(users: Tensor, catalogue: Tensor, targets: Tensor, scale: float = 20.0,
                 history: Tensor | None = None) -> Tensor:
    """Finetuning loss: softmax over the whole catalogue (the authors' ``construct_classification_loss``).

    users [M,d], catalogue [N,d] (every item, re-encoded by the item tower), targets [M] catalogue indices.
    ``logits = scale * users @ catalogue.T``; mean cross-entropy against ``targets``. With ``history`` [M,H]
    (catalogue indices, -1 = padding) the user's history items are excluded from its softmax, except the target
    itself. No cross-rank gather: every rank already scores the full catalogue; DDP's gradient average equals the
    global mean when ranks hold equal batch sizes.
    """
    logits = scale * _f32(users) @ _f32(catalogue).T  # [M, N]
    if history is not None:
        n = catalogue.shape[0]
        skip = (history < 0) | (history >= n) | (history == targets[:, None])
        index = torch.where(skip, torch.full_like(history, n), history)  # column n is a dummy, dropped below
        masked = torch.zeros(logits.shape[0], n + 1, dtype=torch.bool, device=logits.device)
        masked.scatter_(1, index, True)
        logits = logits.masked_fill(masked[:, :n], float("-inf"))
    return F.cross_entropy(logits, targets)


# ------------------------------------------------------------------------------------------------ registry
class LossInput(NamedTuple):
    """One micro-batch as every loss receives it (item vectors, ids and masks; the extras only where a loss asks)."""

    hist_vec: Tensor
    mask: Tensor
    hist_ids: Tensor
    tgt_vec: Tensor
    tgt_ids: Tensor
    tgt_mask: Tensor
    catalogue: Tensor | None = None  # every item's vector (losses registered with catalogue=True)
    win_vec: Tensor | None = None  # the future target window (losses registered with window=True)
    win_ids: Tensor | None = None
    win_mask: Tensor | None = None


@dataclass(frozen=True)
class LossSpec:
    fn: Callable[[Objective, LossInput], Tensor]
    catalogue: bool = False  # the trainer passes the whole catalogue's vectors
    window: bool = False  # the samples carry a future target window of train.dense_target_window items


LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, catalogue: bool = False, window: bool = False):
    """Add ``fn(objective, batch: LossInput) -> scalar loss`` to the registry; ``train.loss=<name>`` selects it."""

    def add(fn):
        LOSSES[name] = LossSpec(fn, catalogue, window)
        return fn

    return add


@register_loss("infonce")
def _infonce(o: Objective, x: LossInput) -> Tensor:
    ids = o.item_ids(x.hist_ids)
    users = o.model.encode_positions(x.hist_vec, x.mask, x.tgt_mask, ids)  # only the loss positions are computed
    targets = x.tgt_ids[x.tgt_mask]
    items = o.model.encode_items(x.tgt_vec[x.tgt_mask], targets if ids is not None else None, o.item_dropout)
    return info_nce(users, items, targets, scale=o.scale)


@register_loss("softmax", catalogue=True)
def _softmax(o: Objective, x: LossInput) -> Tensor:
    ids = o.item_ids(x.hist_ids)
    users = o.model.encode_positions(x.hist_vec, x.mask, x.tgt_mask, ids)
    targets = x.tgt_ids[x.tgt_mask]
    cat_ids = torch.arange(x.catalogue.shape[0], device=x.catalogue.device)
    items = o.model.encode_catalogue(x.catalogue, cat_ids if ids is not None else None, chunk_size=o.catalogue_chunk,
                                     dropout=o.item_dropout)
    history = None
    if o.mask_history:  # row (b, p) may not recommend items seen at positions <= p
        L, dev = x.hist_ids.shape[1], x.mask.device
        upto = torch.arange(L, device=dev)[None, :] <= torch.arange(L, device=dev)[:, None]
        h = x.hist_ids[:, None, :].expand(-1, L, -1).masked_fill(~(upto[None] & x.mask[:, None, :]), -1)
        history = h[x.tgt_mask]
    return full_softmax(users, items, targets, scale=o.scale, history=history)


@register_loss("dense", window=True)
def _dense(o: Objective, x: LossInput) -> Tensor:
    ids = o.item_ids(x.hist_ids)
    seq = o.model.encode_sequence(x.hist_vec, x.mask, ids)  # samples positions of the whole sequence output
    w = o.model.encode_items(x.win_vec.flatten(0, 1), x.win_ids.flatten() if ids is not None else None,
                             o.item_dropout)
    return dense_all_action(seq, x.mask, w.view(*x.win_ids.shape, -1), x.win_mask, x.win_ids, scale=o.scale,
                            num_user_positions=o.dense_user_positions)


class Objective(nn.Module):
    """The whole loss of one micro-batch in one ``forward`` so DDP sees a single forward per backward.

    ``forward`` takes the fields of :class:`LossInput` (positionally, as the benchmarks call it) and hands them to
    the registered loss ``LOSSES[loss]``.
    """

    def __init__(self, model: LEARNModel, loss: str, scale: float, mask_history: bool, catalogue_chunk: int,
                 dense_user_positions: int, item_dropout: bool = True):
        super().__init__()
        self.model = model
        self.loss = loss
        self.spec = LOSSES[loss]
        self.scale = scale
        self.mask_history = mask_history
        self.catalogue_chunk = catalogue_chunk
        self.dense_user_positions = dense_user_positions
        self.item_dropout = item_dropout

    def item_ids(self, hist_ids: Tensor) -> Tensor | None:
        """The history's item ids when the model has an ID table, else None."""
        return hist_ids if self.model.cfg.uses_item_ids else None

    def forward(self, *args, **kwargs) -> Tensor:
        return self.spec.fn(self, LossInput(*args, **kwargs))
