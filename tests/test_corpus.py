"""learn.data.corpus: streaming JSON lists, the flat sequence file, and samples identical to SequenceSamples."""

from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pytest

from learn.data.corpus import (
    SequenceFile,
    StreamedSequenceSamples,
    build_sequence_file,
    iter_json_lists,
    open_sequence_file,
)
from learn.data.samples import SequenceSamples


def corpus(n=300, items=40, seed=0):
    rng = np.random.default_rng(seed)
    return [[f"k{int(x)}" for x in rng.integers(0, items, rng.integers(1, 14))] for _ in range(n)]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_iter_json_lists_any_chunk(tmp_path, chunk):
    seqs = corpus()
    (tmp_path / "a.json").write_text(json.dumps(seqs))
    (tmp_path / "b.json").write_text(json.dumps(seqs, indent=2))
    assert list(iter_json_lists(tmp_path / "a.json", chunk=chunk)) == seqs
    assert list(iter_json_lists(tmp_path / "b.json", chunk=chunk)) == seqs
    (tmp_path / "n.json").write_text(" [ [1, 22, 333], [4444] ,[], 12345 ] ")
    assert list(iter_json_lists(tmp_path / "n.json", chunk=chunk)) == [[1, 22, 333], [4444], [], 12345]
    (tmp_path / "e.json").write_text("[]")
    assert list(iter_json_lists(tmp_path / "e.json", chunk=chunk)) == []


def test_iter_json_lists_gzip_and_errors(tmp_path):
    seqs = corpus(20)
    with gzip.open(tmp_path / "t.json.gz", "wt") as f:
        json.dump(seqs, f)
    assert list(iter_json_lists(tmp_path / "t.json.gz", chunk=5)) == seqs
    for bad in ("{}", "[[1,2]", "[[1,2] [3]]", "[[1,"):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(ValueError):
            list(iter_json_lists(tmp_path / "bad.json", chunk=2))


def test_sequence_file_matches_the_trainer_filter_and_samples(tmp_path):
    seqs = corpus()
    (tmp_path / "train.json").write_text(json.dumps(seqs))
    smap = {f"k{i}": i for i in range(40)}
    sf = open_sequence_file(tmp_path, smap, min_len=3, max_len=10)
    kept = [[smap[k] for k in s] for s in seqs if 3 <= len(s) <= 10]  # what learn/train.py builds
    assert len(sf) == len(kept) and sf.meta["interactions"] == sum(map(len, kept))
    assert all(sf[i].tolist() == kept[i] for i in range(len(kept)))
    assert sf[-1].tolist() == kept[-1] and sf[0].dtype == np.int64
    assert sf.lengths().tolist() == [len(s) for s in kept]
    with pytest.raises(IndexError):
        sf[len(kept)]
    again = pickle.loads(pickle.dumps(sf))  # DataLoader workers under spawn
    assert again[5].tolist() == kept[5]
    assert open_sequence_file(tmp_path, smap, min_len=3, max_len=10).folder == sf.folder  # reused
    for sampling in ("random", "all_prefixes", "windows"):
        for mode, positions in (("pretrain", "target"), ("finetune", "all")):
            if sampling == "windows" and positions != "all":
                continue
            a = SequenceSamples(kept, 4, mode=mode, positions=positions, seed=3, sampling=sampling, window=2)
            b = StreamedSequenceSamples(sf, 4, mode=mode, positions=positions, seed=3, sampling=sampling, window=2)
            a.set_epoch(2)
            b.set_epoch(2)
            assert len(a) == len(b)
            for i in range(len(a)):
                assert all(np.array_equal(x, y) for x, y in zip(a[i], b[i], strict=True))


def test_build_sequence_file_unknown_key(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps([["a", "b"], ["a", "zz"]]))
    with pytest.raises(KeyError, match="zz"):
        build_sequence_file(tmp_path / "train.json", {"a": 0, "b": 1}, tmp_path / "seq")
    assert not (tmp_path / "seq").exists()
    sf = SequenceFile(build_sequence_file(tmp_path / "train.json", {"a": 0, "b": 1, "zz": 2}, tmp_path / "seq"))
    assert [sf[i].tolist() for i in range(len(sf))] == [[0, 1], [0, 2]]
