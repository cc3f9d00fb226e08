"""learn embed under torchrun: 2 CPU ranks (gloo) write disjoint shards that rank 0 merges into the same store."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from learn.cex import embed_dataset
from learn.data.store import ItemStore
from tests.conftest import ROOT
from tests.test_cex import make_dataset, make_model


def test_two_gloo_ranks_equal_one_process(tmp_path):
    model = make_model(tmp_path / "bert", "bert")
    data = make_dataset(tmp_path / "ds", 41)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "learn",
           "embed", "--data", str(data), "--out", str(tmp_path / "two"), "--llm", str(model), "--batch-size", "4",
           "--device", "cpu"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("wrote ") == 1  # only rank 0 merges and reports
    embed_dataset(data, tmp_path / "one", llm=str(model), batch_size=4, device="cpu")
    two, one = ItemStore(tmp_path / "two"), ItemStore(tmp_path / "one")
    assert two.keys() == one.keys() and len(two) == 41
    assert two.meta.extra["world_size"] == 2
    np.testing.assert_allclose(two.get(two.keys()), one.get(one.keys()), atol=1e-6)
    assert not (tmp_path / "two.partial").exists()
