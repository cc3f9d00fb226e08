"""Losses vs explicit-loop hand computations, and the 2-process gloo gather vs the 1-process concatenated batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from learn.losses import dense_all_action, full_softmax, gather_with_grad, info_nce
from learn.model import LEARNModel, ModelConfig


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def test_info_nce_matches_hand_computation_with_duplicate_target():
    users, items = unit(4, 5, seed=1), unit(4, 5, seed=2)
    ids = torch.tensor([7, 3, 7, 9])  # rows 0 and 2 share their target item
    scale = 20.0
    expect = 0.0
    for i in range(4):
        denom = 0.0
        for j in range(4):
            if j != i and ids[j] == ids[i]:
                continue  # false negative: excluded
            denom += math.exp(scale * float(users[i] @ items[j]))
        expect += -scale * float(users[i] @ items[i]) + math.log(denom)
    expect /= 4
    got = info_nce(users, items, ids, scale=scale)
    assert got.item() == pytest.approx(expect, rel=1e-10)
    # without duplicates nothing is masked: plain cross-entropy with labels = arange
    ids2 = torch.tensor([1, 2, 3, 4])
    torch.testing.assert_close(info_nce(users, items, ids2), F.cross_entropy(20 * users @ items.T, torch.arange(4)))


def test_full_softmax_matches_hand_computation():
    users, cat = unit(3, 4, seed=3), unit(6, 4, seed=4)
    targets = torch.tensor([2, 0, 5])
    history = torch.tensor([[1, 2, 4, -1], [-1, -1, -1, -1], [5, 5, 0, 3]])  # target in history is never masked
    scale = 20.0

    def hand(mask_history: bool) -> float:
        total = 0.0
        for m in range(3):
            skip = {int(h) for h in history[m] if h >= 0 and h != targets[m]} if mask_history else set()
            denom = sum(math.exp(scale * float(users[m] @ cat[j])) for j in range(6) if j not in skip)
            total += -scale * float(users[m] @ cat[targets[m]]) + math.log(denom)
        return total / 3

    assert full_softmax(users, cat, targets, scale).item() == pytest.approx(hand(False), rel=1e-10)
    assert full_softmax(users, cat, targets, scale, history=history).item() == pytest.approx(hand(True), rel=1e-10)


def _dense_hand(user_seq, user_mask, targets, target_mask, target_ids, scale, positions):
    """Explicit loops over (user, position, target) terms; ``positions[b]`` = the history positions used for b."""
    b_size, t_size = target_mask.shape
    cols = [(b, t) for b in range(b_size) for t in range(t_size) if target_mask[b, t]]
    total, count = 0.0, 0
    for b in range(b_size):
        own_ids = {int(target_ids[b, t]) for t in range(t_size) if target_mask[b, t]}
        for p in positions[b]:
            u = user_seq[b, p]
            for t in range(t_size):
                if not target_mask[b, t]:
                    continue
                denom = 0.0
                for cb, ct in cols:
                    is_pos = (cb, ct) == (b, t)
                    if not is_pos and (cb == b or int(target_ids[cb, ct]) in own_ids):
                        continue
                    denom += math.exp(scale * float(u @ targets[cb, ct]))
                total += -scale * float(u @ targets[b, t]) + math.log(denom)
                count += 1
    return total / count


def _dense_case():
    user_seq, targets = unit(3, 4, 5, seed=5), unit(3, 3, 5, seed=6)
    user_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    target_mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    target_ids = torch.tensor([[4, 8, 0], [8, 0, 0], [2, 4, 6]])  # item 8 in users 0 and 1; item 4 in users 0 and 2
    return user_seq, user_mask, targets, target_mask, target_ids


def test_dense_all_action_matches_hand_computation_all_positions():
    user_seq, user_mask, targets, target_mask, target_ids = _dense_case()
    positions = [[0, 1], [0, 1, 2, 3], [0]]
    expect = _dense_hand(user_seq, user_mask, targets, target_mask, target_ids, 20.0, positions)
    for k in (4, 10, 0):  # >= L or <= 0: every valid position is used
        got = dense_all_action(user_seq, user_mask, targets, target_mask, target_ids, num_user_positions=k)
        assert got.item() == pytest.approx(expect, rel=1e-10)


def test_dense_all_action_sampling_uses_valid_positions_only():
    user_seq, _, targets, target_mask, target_ids = _dense_case()
    user_mask = torch.tensor([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)  # one valid each
    expect = _dense_hand(user_seq, user_mask, targets, target_mask, target_ids, 20.0, [[2], [1], [0]])
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        got = dense_all_action(user_seq, user_mask, targets, target_mask, target_ids, num_user_positions=2,
                               generator=g)
        assert got.item() == pytest.approx(expect, rel=1e-10)
    # with 2 of 4 valid positions, the loss is the hand value of the positions the same generator draws
    full_mask = torch.ones(3, 4, dtype=torch.bool)
    keys = torch.rand(3, 4, generator=torch.Generator().manual_seed(7))
    chosen = keys.topk(2, dim=1).indices.tolist()
    expect = _dense_hand(user_seq, full_mask, targets, target_mask, target_ids, 20.0, chosen)
    got = dense_all_action(user_seq, full_mask, targets, target_mask, target_ids, num_user_positions=2,
                           generator=torch.Generator().manual_seed(7))
    assert got.item() == pytest.approx(expect, rel=1e-10)


def test_losses_are_differentiable_and_finite_in_float32():
    users = unit(4, 5, seed=1).float().requires_grad_()
    items = unit(4, 5, seed=2).float().requires_grad_()
    loss = info_nce(users, items, torch.tensor([1, 1, 1, 1]))  # all duplicates: only positives remain -> 0
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(users.grad).all()
    assert gather_with_grad(items) is items  # no process group: identity


# ---------------------------------------------------------------- 2 processes (gloo) vs 1 process

N_ROWS, SPLIT, L, T, DIM = 7, 3, 4, 2, 12  # rank 0 holds rows [0, 3), rank 1 rows [3, 7): unequal


def _tiny_model() -> LEARNModel:
    torch.manual_seed(0)
    cfg = ModelConfig(input_dim=DIM, hidden_size=16, num_layers=1, num_heads=2, ffn_size=32, output_dim=8)
    return LEARNModel(cfg).double().eval()  # float64: gathering only changes summation order


def _data():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(N_ROWS, L, DIM, generator=g)
    lengths = torch.tensor([4, 2, 3, 1, 4, 2, 3])
    mask = torch.arange(L)[None] < lengths[:, None]
    tx = torch.randn(N_ROWS, DIM, generator=g)
    ids = torch.tensor([5, 1, 2, 5, 3, 2, 9])  # duplicates across the two ranks
    dx = torch.randn(N_ROWS, T, DIM, generator=g)
    dmask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 0], [0, 0], [1, 1], [1, 0]], dtype=torch.bool)
    dids = torch.tensor([[5, 1], [1, 0], [2, 7], [5, 0], [0, 0], [8, 1], [9, 0]])
    x, tx, dx = (t.double() for t in (x, tx, dx))
    return x * mask[..., None], mask, tx, ids, dx, dmask, dids


def _losses_and_grads(rows: slice) -> dict:
    m = _tiny_model()
    x, mask, tx, ids, dx, dmask, dids = (t[rows] for t in _data())
    out = {}
    users = m.encode_users(x, mask)
    items = m.encode_items(tx)
    loss = info_nce(users, items, ids)
    loss.backward()
    out["info_nce"] = (loss.detach(), [p.grad.clone() for p in m.parameters()])
    m.zero_grad()
    seq = m.encode_sequence(x, mask)
    targets = m.encode_items(dx.reshape(-1, DIM)).view(dx.shape[0], T, -1)
    loss = dense_all_action(seq, mask, targets, dmask, dids, num_user_positions=L)
    loss.backward()
    out["dense"] = (loss.detach(), [p.grad.clone() for p in m.parameters()])
    out["gathered_items"] = gather_with_grad(items.detach())
    return out


def _worker(rank: int, store: str, result_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        rows = slice(0, SPLIT) if rank == 0 else slice(SPLIT, N_ROWS)
        out = _losses_and_grads(rows)
        for key in ("info_nce", "dense"):  # DDP-style: average the gradients over ranks
            for g in out[key][1]:
                dist.all_reduce(g)
                g /= dist.get_world_size()
        torch.save(out, f"{result_dir}/rank{rank}.pt")
        dist.barrier()  # both ranks done with every collective before the group is torn down
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_two_rank_gather_equals_single_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = _losses_and_grads(slice(0, N_ROWS))
    for key in ("info_nce", "dense"):
        loss, grads = single[key]
        mean_loss = (ranks[0][key][0] + ranks[1][key][0]) / 2  # what a rank-averaged log shows
        torch.testing.assert_close(mean_loss, loss, rtol=1e-10, atol=1e-12)
        for r in range(2):
            for g_rank, g_single in zip(ranks[r][key][1], grads):
                torch.testing.assert_close(g_rank, g_single, rtol=1e-9, atol=1e-12)
    for r in range(2):
        torch.testing.assert_close(ranks[r]["gathered_items"], single["gathered_items"])
