"""Training samples: split-point ranges, determinism per (seed, epoch, index), all-prefix enumeration, collation and
vector lookup (preloaded table vs streamed rows)."""

import numpy as np
import pytest
import torch

from learn.data.samples import Collator, SequenceSamples, lookup


def test_split_points_follow_the_spec_ranges():
    seqs = [list(range(10))] * 200
    pre = SequenceSamples(seqs, 40, mode="pretrain", positions="target")
    ft = SequenceSamples(seqs, 40, mode="finetune", positions="target")
    t_pre = {len(pre[i][0]) for i in range(200)}  # history length == split point
    t_ft = {len(ft[i][0]) for i in range(200)}
    assert t_pre == set(range(5, 10))  # [len//2, len-1]
    assert t_ft == set(range(1, 10))  # [1, len-1]


def test_sampling_is_a_function_of_seed_epoch_index():
    seqs = [list(range(30))] * 8
    a, b = SequenceSamples(seqs, 5, seed=1), SequenceSamples(seqs, 5, seed=1)
    for i in range(8):
        np.testing.assert_array_equal(a[i][0], b[i][0])
    a.set_epoch(1)
    assert any(not np.array_equal(a[i][0], b[i][0]) for i in range(8))


def test_all_positions_window_targets_are_the_next_items():
    ds = SequenceSamples([[3, 4, 5, 6, 7]], 3, mode="finetune", positions="all")
    hist, target, _ = ds[0]
    np.testing.assert_array_equal(hist, [4, 5, 6])
    np.testing.assert_array_equal(target, [5, 6, 7])


def test_all_prefixes_enumerates_every_split_point_once():
    ds = SequenceSamples([[1, 2, 3, 4], [5, 6]], 2, mode="finetune", positions="target", sampling="all_prefixes")
    got = [(tuple(h), int(t[-1])) for h, t, _ in (ds[i] for i in range(len(ds)))]
    assert got == [((1,), 2), ((1, 2), 3), ((2, 3), 4), ((5,), 6)]
    pre = SequenceSamples([[1, 2, 3, 4, 5]], 4, mode="pretrain", positions="target", sampling="all_prefixes")
    assert [int(pre[i][1][-1]) for i in range(len(pre))] == [3, 4, 5]  # split points 2..4


def test_windows_make_every_item_after_the_first_a_target_once():
    seqs = [list(range(1, 12)), [20, 21], [30], list(range(40, 45))]
    ds = SequenceSamples(seqs, 4, mode="finetune", positions="all", sampling="windows")
    got = [(h.tolist(), t.tolist()) for h, t, _ in (ds[i] for i in range(len(ds)))]
    assert got == [
        ([7, 8, 9, 10], [8, 9, 10, 11]), ([3, 4, 5, 6], [4, 5, 6, 7]), ([1, 2], [2, 3]),  # from the end, disjoint
        ([20], [21]),  # a length-1 sequence has no target
        ([40, 41, 42, 43], [41, 42, 43, 44]),
    ]
    for seq in seqs:  # each item but the first is a target exactly once
        targets = sorted(x for _, t in got for x in t if x in seq)
        assert targets == seq[1:]
    with pytest.raises(ValueError, match="positions='all'"):
        SequenceSamples(seqs, 4, positions="target", sampling="windows")


def test_collate_and_lookup_streamed_equals_table():
    table = torch.randn(10, 4)

    class FakeStore:
        def get(self, keys):
            return table[[int(k) for k in keys]].numpy()

    samples = [(np.array([1, 2]), np.array([2, 3]), np.empty(0, dtype=np.int64)),
               (np.array([7]), np.array([-1]), np.empty(0, dtype=np.int64))]
    keys = [str(i) for i in range(10)]
    pre = Collator()(samples)
    streamed = Collator(FakeStore(), keys)(samples)
    assert pre.mask.tolist() == [[True, True], [True, False]]
    assert pre.target_mask.tolist() == [[True, True], [False, False]]
    # padded positions may differ (never read: the model masks them); real positions must match
    torch.testing.assert_close(lookup(pre, pre.hist, table)[pre.mask], lookup(streamed, streamed.hist, None)[pre.mask])
    torch.testing.assert_close(lookup(pre, pre.target, table)[pre.target_mask],
                               lookup(streamed, streamed.target, None)[streamed.target_mask])
