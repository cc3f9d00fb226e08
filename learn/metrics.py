"""Full-catalogue ranking metrics (spec section 4): ranks, NDCG/Recall@k, MRR, cold-start mask.

Everything here is a pure function of tensors so the trainer, ``learn eval`` and the text baseline share one
definition. ``rank`` is 0-based: the number of items scoring *strictly* higher than the target, so ties favour the
target, exactly as the authors' ``Ranker`` (RecFormer ``utils.py``, LEARN ``tools/metric_tools.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from learn.errors import LearnError

# fp32 score elements materialised at once (users x items of one block): 2**22 floats = 16 MiB on CPU (reused
# buffers; 4 MiB for small vectors, see score_blocking), 16x that on accelerators.
_MAX_CHUNK_ELEMS = 1 << 22
_USER_BLOCK = 1024
_MIN_ITEM_CHUNK = 1024
_SMALL_DIM = 256  # below this vector size, CPU score blocks are 4x smaller (see score_blocking)
_KEY_CHUNK = 1 << 16  # rows per chunk when hashing items for duplicate detection

@torch.no_grad()
def duplicate_items(items: Tensor, probe: int = 8) -> Tensor:
    """Group id per item: ``-1`` if no other item has exactly the same vector, else the smallest index of its group.

    Rows are first bucketed by an exact integer key made of the fp32 bit patterns of ``probe`` fixed coordinates
    (cheap: ``O(N * probe)``); only rows that share a key with another row are then grouped exactly with
    ``torch.unique(dim=0)``. Exact duplicates (e.g. items with the same text) score identically for every user.
    """
    n, d = items.shape
    group = torch.full((n,), -1, dtype=torch.long, device=items.device)
    if n < 2:
        return group
    k = min(d, probe)
    cols = torch.linspace(0, d - 1, k).round().long().to(items.device)
    mult = torch.randint(1, 1 << 28, (k,), generator=torch.Generator().manual_seed(0)).to(items.device)
    key = torch.empty(n, dtype=torch.long, device=items.device)
    for i0 in range(0, n, _KEY_CHUNK):  # in row chunks: the [rows, k] int64 temporaries stay small for 1M items
        bits = (items[i0 : i0 + _KEY_CHUNK, cols].float() + 0.0).view(torch.int32).long()  # + 0.0: -0.0 -> 0.0
        key[i0 : i0 + _KEY_CHUNK] = (bits * mult).sum(1)  # |each term| < 2**59, k <= 8 terms: no int64 overflow
    sorted_key, order = torch.sort(key)
    same = sorted_key[1:] == sorted_key[:-1]
    if not bool(same.any()):
        return group
    shared = torch.zeros(n, dtype=torch.bool, device=items.device)
    shared[1:] |= same
    shared[:-1] |= same
    cand = order[shared]  # rows sharing their key with another row
    _, inverse, counts = torch.unique(items[cand].float() + 0.0, dim=0, return_inverse=True, return_counts=True)
    dup = counts[inverse] > 1
    if not bool(dup.any()):
        return group
    head = torch.full((len(counts),), n, dtype=torch.long, device=items.device)
    head = head.scatter_reduce(0, inverse, cand, reduce="amin")
    group[cand[dup]] = head[inverse[dup]]
    return group


def _mask_pairs(targets: Tensor, history: Tensor | None, group: Tensor,
                sorted_groups: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
    """(rows, cols) of the scores to drop for a block of users, sorted by column.

    Always the target itself; with ``history``, the user's history items other than the target; and every other
    item whose vector equals the target's (an exact tie, which the strict comparison does not count).
    ``sorted_groups`` is ``torch.sort(group)`` (values, indices), or ``None`` when no item has a duplicate.
    """
    rows = [torch.arange(len(targets), device=targets.device)]
    cols = [targets]
    if history is not None:
        r, c = ((history >= 0) & (history != targets[:, None])).nonzero(as_tuple=True)
        rows.append(r)
        cols.append(history[r, c])
    g = group[targets]
    dup_users = (g >= 0).nonzero().squeeze(1)
    if sorted_groups is not None and len(dup_users):
        gid, idx = sorted_groups
        lo = torch.searchsorted(gid, g[dup_users])
        cnt = torch.searchsorted(gid, g[dup_users], right=True) - lo
        rows.append(torch.repeat_interleave(dup_users, cnt))
        offset = torch.arange(int(cnt.sum()), device=targets.device) - torch.repeat_interleave(cnt.cumsum(0) - cnt, cnt)
        cols.append(idx[torch.repeat_interleave(lo, cnt) + offset])
    rows_t, cols_t = torch.cat(rows), torch.cat(cols)
    cols_t, order = torch.sort(cols_t, stable=True)
    return rows_t[order], cols_t


def score_blocking(n_users: int, n_items: int, dim: int, device: torch.device | str = "cpu",
                   chunk_size: int = 65536) -> tuple[int, int]:
    """(users per block, items per chunk) of :func:`full_ranks`: about ``max_elems`` fp32 scores at a time.

    On CPU a block is 16 MiB of scores, or 4 MiB (512 users) when ``dim < 256``: with few flops per score the GEMM
    is bound by writing its output, and a block that stays in cache is up to 2x faster (measured single-threaded
    on a 1M x 64 catalogue). Accelerators use 16x more. Item chunks are evenly split and at most ``chunk_size``.
    """
    cpu = torch.device(device).type == "cpu"
    small = cpu and dim < _SMALL_DIM
    max_elems = (_MAX_CHUNK_ELEMS >> 2 if small else _MAX_CHUNK_ELEMS) if cpu else _MAX_CHUNK_ELEMS * 16
    user_block = max(1, min(n_users, _USER_BLOCK // 2 if small else _USER_BLOCK))
    n_items = max(1, n_items)
    cap = max(1, min(chunk_size, 1 << 24, n_items, max(_MIN_ITEM_CHUNK, max_elems // user_block)))
    return user_block, -(-n_items // -(-n_items // cap))


@torch.no_grad()
def full_ranks(
    users: Tensor, items: Tensor, targets: Tensor, history: Tensor | None = None, chunk_size: int = 65536
) -> Tensor:
    """0-based rank of each user's target among all items: ``#{items with score > target score}``.

    users ``[U, d]``, items ``[N, d]``, targets ``[U]`` item indices; score = ``users @ items.T`` in fp32 on the users'
    device. Items are processed in chunks of at most ``chunk_size`` and users in blocks, so only a few MiB of scores
    exist at once (about 16 MiB on CPU) whatever the catalogue size. Items with exactly the target's vector tie with
    it and are not counted (see :func:`duplicate_items`). ``history`` ``[U, H]`` (``-1`` = padding) removes the
    user's history items from the competition; the target itself is never masked. Returns ``[U]`` long.
    """
    if users.dim() != 2 or items.dim() != 2 or users.shape[1] != items.shape[1]:
        raise ValueError(f"users {tuple(users.shape)} and items {tuple(items.shape)} must be [U, d] and [N, d]")
    n_users, n_items = users.shape[0], items.shape[0]
    if targets.shape != (n_users,):
        raise ValueError(f"targets must have shape [{n_users}], got {tuple(targets.shape)}")
    device = users.device
    users = users.float()
    targets = targets.to(device=device, dtype=torch.long)
    if n_users and (targets.min() < 0 or targets.max() >= n_items):
        raise ValueError(f"target index out of range [0, {n_items})")
    if history is not None:
        history = history.to(device=device, dtype=torch.long)
        if history.shape[0] != n_users:
            raise ValueError(f"history has {history.shape[0]} rows for {n_users} users")
    ranks = torch.zeros(n_users, dtype=torch.long, device=device)
    if n_users == 0:
        return ranks
    # NaN compares false: a non-finite score would rank every target first (NDCG = 1); refuse instead
    _check_finite("user", users)
    _check_finite("item", items)
    # finite inputs can still overflow fp32 in the dot product only when max|u| * max|i| * d reaches fp32's range
    bound = users.abs().amax().item() * items.abs().amax().float().item() * max(1, users.shape[1])
    check_scores = not bound < 1e38
    group = duplicate_items(items).to(device)
    sorted_groups = torch.sort(group) if bool((group >= 0).any()) else None
    user_block, chunk_size = score_blocking(n_users, n_items, users.shape[1], device, chunk_size)
    # a preallocated buffer: fresh multi-MiB tensors per block cost page faults that rival the GEMM itself
    score_buf = torch.empty(user_block * chunk_size, device=device)
    for u0 in range(0, n_users, user_block):
        u1 = min(n_users, u0 + user_block)
        ub, tb = users[u0:u1], targets[u0:u1]
        # the target's score as a row-wise dot product: it may differ from the GEMM's value in the last bit, which
        # only matters for an item tying with the target, and exact ties (identical vectors, the target's own
        # column) are masked instead of compared
        t_score = (ub * items[tb.to(items.device)].to(device=device, dtype=torch.float32)).sum(1, keepdim=True)
        mask_rows, mask_cols = _mask_pairs(tb, None if history is None else history[u0:u1], group, sorted_groups)
        for i0 in range(0, n_items, chunk_size):
            i1 = min(n_items, i0 + chunk_size)
            scores = score_buf[: (u1 - u0) * (i1 - i0)].view(u1 - u0, i1 - i0)
            torch.matmul(ub, items[i0:i1].to(device=device, dtype=torch.float32).T, out=scores)
            if check_scores and not bool(torch.isfinite(scores).all()):
                raise LearnError(f"full ranking: non-finite scores (fp32 overflow) for users {u0}..{u1 - 1}; the "
                                 "model's embeddings are too large to rank")
            lo, hi = torch.searchsorted(mask_cols, torch.tensor([i0, i1], device=device)).tolist()
            scores[mask_rows[lo:hi], mask_cols[lo:hi] - i0] = -math.inf
            # compare in place (1.0 / 0.0) and sum as floats: exact below 2**24 per row, faster than a bool sum
            torch.gt(scores, t_score, out=scores)
            ranks[u0:u1] += scores.sum(1).long()
    return ranks


def _check_finite(what: str, x: Tensor) -> None:
    bad = ~torch.isfinite(x).reshape(x.shape[0], -1).all(1)
    if bool(bad.any()):
        rows = bad.nonzero().squeeze(1)[:5].tolist()
        raise LearnError(f"full ranking: {int(bad.sum())} of {x.shape[0]} {what} embeddings are not finite (NaN/Inf), "
                         f"e.g. rows {rows}; the model or the item store produced non-finite scores")


def parse_ks(text: str, flag: str = "--ks") -> tuple[int, ...]:
    """``"10,50"`` -> ``(10, 50)``; anything but comma-separated positive integers is a :class:`LearnError`."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        ks = tuple(int(p) for p in parts)
    except ValueError:
        raise LearnError(f"{flag} must be comma-separated positive integers (e.g. 10,50), got {text!r}") from None
    if not ks or min(ks) < 1:
        raise LearnError(f"{flag} must be comma-separated positive integers (e.g. 10,50), got {text!r}")
    return tuple(dict.fromkeys(ks))


def metrics_from_ranks(
    ranks: Tensor, ks: Sequence[int] = (10, 50), average: str = "user", batch_size: int = 64
) -> dict[str, float]:
    """NDCG@k, Recall@k (= HR@k) and MRR from 0-based ranks, plus ``count`` (number of users).

    ``average="user"``: plain mean over users. ``average="batch"``: the authors' mean of per-batch means over
    consecutive batches of ``batch_size`` users (``AverageMeter.update(v)`` with n=1), which over-weights the last
    partial batch; LEARN evaluates 64 users per batch, RecFormer 16.
    """
    if average not in ("user", "batch"):
        raise ValueError(f"average must be 'user' or 'batch', got {average!r}")
    r = ranks.detach().to("cpu", torch.float64).reshape(-1)
    per_user: dict[str, Tensor] = {}
    for k in ks:
        hit = r < k
        per_user[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(r + 2.0), torch.zeros_like(r))
        per_user[f"recall@{k}"] = hit.double()
    per_user["mrr"] = 1.0 / (r + 1.0)
    out: dict[str, float] = {}
    for name, v in per_user.items():
        if v.numel() == 0:
            out[name] = float("nan")
        elif average == "user":
            out[name] = v.mean().item()
        else:
            out[name] = torch.stack([b.mean() for b in v.split(batch_size)]).mean().item()
    out["count"] = int(r.numel())
    return out


def cold_start_mask(train_seqs: Iterable[Sequence[int]], targets: Sequence[int]) -> Tensor:
    """``True`` where the target item never occurs in any training sequence (a cold-start item)."""
    seen: set[int] = set()
    for seq in train_seqs:
        seen.update(int(i) for i in seq)
    return torch.tensor([int(t) not in seen for t in targets], dtype=torch.bool)
