"""learn.metrics: ranks against hand-computed values and a dense reference, metric formulas, averaging, table."""

from __future__ import annotations

import math

import pytest
import torch

import learn.metrics as M
from learn.metrics import cold_start_mask, full_ranks, metrics_from_ranks
from learn.published import PUBLISHED, results_table


def dense_ranks(users, items, targets, history=None):
    scores = users.float() @ items.float().T
    t = scores.gather(1, targets[:, None])
    scores[torch.arange(len(targets)), targets] = -math.inf
    if history is not None:
        for u, row in enumerate(history.tolist()):
            for h in row:
                if h >= 0 and h != targets[u]:
                    scores[u, h] = -math.inf
    return (scores > t).sum(1)


def test_ranks_by_hand_ties_favour_target():
    users = torch.tensor([[1.0], [1.0], [-1.0]])
    items = torch.tensor([[3.0], [2.0], [2.0], [1.0]])
    # user 0, target item 1 (score 2): only item 0 is strictly higher; item 2 ties -> not counted
    # user 1, target item 3 (score 1): items 0, 1, 2 are higher
    # user 2, target item 0 (score -3): all others are higher
    assert full_ranks(users, items, torch.tensor([1, 3, 0])).tolist() == [1, 3, 3]
    # a tie with every other item: rank 0
    assert full_ranks(torch.ones(1, 2), torch.ones(5, 2), torch.tensor([2])).tolist() == [0]


def test_history_masking_never_masks_target():
    users = torch.tensor([[1.0]])
    items = torch.tensor([[5.0], [4.0], [3.0], [2.0], [1.0]])
    target = torch.tensor([3])
    assert full_ranks(users, items, target).tolist() == [3]
    # items 0 and 1 are history; the target (3) is in the history too and must stay; -1 is padding
    history = torch.tensor([[0, 3, 1, -1, -1]])
    assert full_ranks(users, items, target, history=history).tolist() == [1]
    assert full_ranks(users, items, target, history=torch.tensor([[3, -1]])).tolist() == [3]


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_chunked_equals_dense_reference(monkeypatch, chunk):
    # integer-valued vectors: exact fp32 dot products and many ties, so the reference is exact
    monkeypatch.setattr(M, "_MAX_CHUNK_ELEMS", 32)
    monkeypatch.setattr(M, "_USER_BLOCK", 5)
    monkeypatch.setattr(M, "_MIN_ITEM_CHUNK", 1)
    g = torch.Generator().manual_seed(chunk)
    users = torch.randint(-2, 3, (23, 4), generator=g).float()
    items = torch.randint(-2, 3, (41, 4), generator=g).float()
    targets = torch.randint(0, 41, (23,), generator=g)
    history = torch.randint(-1, 41, (23, 6), generator=g)
    history[:, 0] = targets  # the target inside the history must never be masked
    assert torch.equal(full_ranks(users, items, targets, chunk_size=chunk), dense_ranks(users, items, targets))
    assert torch.equal(full_ranks(users, items, targets, history=history, chunk_size=chunk),
                       dense_ranks(users, items, targets, history))


def test_random_float_data_and_duplicate_of_target():
    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(70, 16, generator=g), torch.randn(300, 16, generator=g)
    targets = torch.randint(0, 300, (70,), generator=g)
    ref = full_ranks(users, items, targets, chunk_size=300)
    assert torch.equal(full_ranks(users, items, targets, chunk_size=11), ref)
    # an exact copy of the target item ties with it, so the rank does not change
    dup = torch.cat([items, items[targets[:1]]])
    assert full_ranks(users[:1], dup, targets[:1], chunk_size=17).tolist() == ref[:1].tolist()


def test_metric_formulas_and_k_boundary():
    m = metrics_from_ranks(torch.tensor([0, 9, 10, 49, 50]))
    assert m["count"] == 5
    assert m["recall@10"] == pytest.approx(2 / 5)  # rank 9 is inside the top 10, rank 10 is not
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(11)) / 5)
    assert m["recall@50"] == pytest.approx(4 / 5)
    assert m["ndcg@50"] == pytest.approx((1 + 1 / math.log2(11) + 1 / math.log2(12) + 1 / math.log2(51)) / 5)
    assert m["mrr"] == pytest.approx((1 + 1 / 10 + 1 / 11 + 1 / 50 + 1 / 51) / 5)
    assert set(metrics_from_ranks(torch.tensor([3]), ks=(10, 50, 200))) == {
        "ndcg@10", "recall@10", "ndcg@50", "recall@50", "ndcg@200", "recall@200", "mrr", "count"}


def test_batch_averaging_overweights_last_partial_batch():
    ranks = torch.tensor([0, 100, 100, 100, 0])  # batches of 2: [0,100] [100,100] [0]
    assert metrics_from_ranks(ranks)["recall@10"] == pytest.approx(2 / 5)
    batch = metrics_from_ranks(ranks, average="batch", batch_size=2)
    assert batch["recall@10"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert batch["mrr"] == pytest.approx(((1 + 1 / 101) / 2 + 1 / 101 + 1) / 3)
    # with a batch size dividing the count both averages agree
    same = metrics_from_ranks(ranks[:4], average="batch", batch_size=2)["ndcg@10"]
    assert same == pytest.approx(metrics_from_ranks(ranks[:4])["ndcg@10"])
    with pytest.raises(ValueError):
        metrics_from_ranks(ranks, average="mean")


def test_cold_start_mask():
    mask = cold_start_mask([[1, 2], [3], []], [2, 5, 3, 0])
    assert mask.dtype == torch.bool and mask.tolist() == [False, True, False, True]


def test_results_table_shape():
    rows = [
        {"dataset": "Scientific", "model": "ours", "ndcg@10": 0.1, "recall@10": 0.2, "ndcg@50": 0.3,
         "recall@50": 0.4, "mrr": 0.05, "count": 10, "cold/ndcg@10": 0.0},
        {"dataset": "scientific_unisrec", "model": "ours", "ndcg@10": 0.0528, "recall@10": 0.099},
        {"dataset": "MyData", "model": "ours", "ndcg@10": 0.5, "recall@10": 0.6},
    ]
    lines = results_table(rows).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:2] == ["Dataset", "Metric"] and header[-1] == "ours"
    assert {"LEARN (published)", "RecFormer (published)", "MISSRec (published)"} <= set(header)
    assert all(line.count("|") == len(header) + 1 for line in lines)
    # Scientific: NDCG/Recall @10 and @50 + MRR; UniSRec split and MyData: @10 only
    assert len(lines) == 2 + 5 + 2 + 2
    sci = next(line for line in lines if line.startswith("| Scientific |"))
    assert "0.1060" in sci and "0.1027" in sci and "0.1000" in sci
    uni = next(line for line in lines if line.startswith("| scientific_unisrec |"))
    assert "0.0753" in uni and "0.0528" in uni and "0.1060" not in uni
    mine = next(line for line in lines if line.startswith("| MyData |"))
    assert mine.count(" - ") == len(header) - 3  # no published numbers for an unknown dataset
    assert "cold" not in "\n".join(lines)
    assert len(results_table(rows[:1], published={}).splitlines()[0].split("|")) == 5


def test_published_has_sources():
    assert set(PUBLISHED) == {"Scientific", "Instruments", "Arts", "Office", "Games", "Pet", "Scientific/UniSRec"}
    for entry in PUBLISHED.values():
        assert entry["source"] and entry["models"]
    assert PUBLISHED["Games"]["models"]["LEARN"] == {"ndcg@10": 0.0798, "recall@10": 0.1345}


def test_duplicate_items_groups():
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [1.0, 0.0], [0.5, 0.5]])
    assert M.duplicate_items(x).tolist() == [0, 1, 0, 1, -1, 1, -1]
    assert M.duplicate_items(torch.randn(50, 8)).eq(-1).all()
    # rows agreeing on every probed coordinate but not elsewhere are not duplicates
    z = torch.zeros(5, 20)
    z[1, 1] = 1.0
    assert M.duplicate_items(z).tolist() == [0, -1, 0, 0, 0]
    # against torch.unique on data with many repeated rows
    g = torch.Generator().manual_seed(1)
    base = torch.randint(0, 2, (6, 12), generator=g).float()
    rows = base[torch.randint(0, 6, (40,), generator=g)]
    _, inv = torch.unique(rows, dim=0, return_inverse=True)
    group = M.duplicate_items(rows)
    for i in range(40):
        same = (inv == inv[i]).nonzero().squeeze(1)
        assert group[i] == (same.min() if len(same) > 1 else -1)


def test_duplicate_items_hashed_in_row_chunks(monkeypatch):
    g = torch.Generator().manual_seed(2)
    base = torch.randint(0, 2, (5, 16), generator=g).float()
    rows = base[torch.randint(0, 5, (37,), generator=g)]
    ref = M.duplicate_items(rows)
    monkeypatch.setattr(M, "_KEY_CHUNK", 4)  # duplicates fall in different hashing chunks
    assert torch.equal(M.duplicate_items(rows), ref)


def test_duplicates_of_the_target_tie_across_chunks():
    g = torch.Generator().manual_seed(3)
    users, items = torch.randn(9, 32, generator=g), torch.randn(50, 32, generator=g)
    targets = torch.full((9,), 4)
    ref = full_ranks(users, items, targets)
    dup = torch.cat([items, items[4:5], items[4:5]])  # two more copies of the target, in later chunks
    assert torch.equal(full_ranks(users, dup, targets, chunk_size=7), ref)
    assert torch.equal(full_ranks(users, dup, targets + 46, chunk_size=13), ref)  # a copy as the target
    assert torch.equal(full_ranks(users[:1], dup, targets[:1] + 47), ref[:1])  # a single user (GEMV path)


@pytest.mark.parametrize("where", ["user", "item"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_full_ranks_refuses_non_finite_embeddings(where, bad):
    """NaN compares false: without the check every target would rank first (NDCG = 1.0)."""
    from learn.errors import LearnError

    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(6, 4, generator=g), torch.randn(9, 4, generator=g)
    (users if where == "user" else items)[2, 1] = bad
    with pytest.raises(LearnError, match=f"1 of {6 if where == 'user' else 9} {where} embeddings are not finite"):
        full_ranks(users, items, torch.arange(6))


def test_full_ranks_refuses_fp32_overflow_of_finite_inputs():
    from learn.errors import LearnError

    users, items = torch.full((2, 4), 1e20), torch.full((3, 4), 1e20)
    with pytest.raises(LearnError, match="non-finite scores"):
        full_ranks(users, items, torch.tensor([0, 1]))


def test_parse_ks():
    from learn.errors import LearnError

    assert M.parse_ks("10,50") == (10, 50) and M.parse_ks(" 5 , 5,20") == (5, 20)
    for bad in ("abc", "0", "10,-5", "", "10,", "1.5"):
        with pytest.raises(LearnError, match="--ks must be comma-separated positive integers"):
            M.parse_ks(bad)


def test_published_numbers_follow_the_dataset_lineage():
    from learn.published import results_table

    row = {"dataset": "Office", "model": "ours", "ndcg@10": 0.05, "recall@10": 0.1}
    assert "RecFormer (published)" in results_table([row])  # lineage unknown: matched by name as before
    assert "RecFormer (published)" in results_table([{**row, "source_format": "recformer"}])
    amazon2014 = results_table([{**row, "source_format": "lcrec"}])  # Amazon 2014 Office is another dataset
    assert "published" not in amazon2014 and "0.0500" in amazon2014
