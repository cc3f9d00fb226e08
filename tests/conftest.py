"""Shared fixtures: paths to the shared data, tiny helpers, quiet wandb."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LEARN_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests use tiny tensors: one intra-op thread is fastest and avoids oversubscribing a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def shared(name: str) -> Path:
    """Path of a dataset folder in ../shared/data; skips the test when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared dataset {name} not available at {path}")
    return path


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None):
    """Run ``python -m learn ...`` in a subprocess; returns the CompletedProcess."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "learn", *args], capture_output=True, text=True, env=full_env, cwd=cwd or ROOT
    )


def run_here(*args) -> subprocess.CompletedProcess:
    """``python -m learn ARGS`` through :func:`learn.cli.main` in this process, stdout and stderr captured; returns a
    CompletedProcess like :func:`run_cli`. For cases that do not depend on a fresh interpreter (refusals, their files):
    it saves the 2 CPU-seconds of starting Python and importing torch. Whole-process behaviour (exactly one stderr line
    from start to exit) stays pinned by run_cli tests of each command."""
    from learn.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return subprocess.CompletedProcess(["learn", *argv], rc, out.getvalue(), err.getvalue())


TINY_MODEL = [
    "model.hidden_size=32",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.ffn_size=64",
    "model.output_dim=32",
    "model.dropout=0.1",
]


def make_tiny_dataset(root: Path, n_items: int = 30, n_users: int = 40, dim: int = 16, seed: int = 0):
    """A learnable toy dataset + item store: each user walks the item cycle i -> i+1 with a random start.

    Returns (dataset folder, store folder).
    """
    import numpy as np

    from learn.data.formats import SeqDataset, write_dataset
    from learn.data.store import write_store

    rng = np.random.default_rng(seed)
    keys = [f"I{i:03d}" for i in range(n_items)]
    smap = {k: i for i, k in enumerate(keys)}
    train, val, test, umap = {}, {}, {}, {}
    for u in range(n_users):
        n = int(rng.integers(5, 12))
        start = int(rng.integers(0, n_items))
        seq = [(start + j) % n_items for j in range(n)]
        train[str(u)], val[str(u)], test[str(u)] = seq[:-2], [seq[-2]], [seq[-1]]
        umap[f"U{u}"] = u
    meta = {k: {"title": f"item {k}", "brand": "b", "category": "c"} for k in keys}
    ds = SeqDataset(root=root / "tiny", name="tiny", train=train, val=val, test=test, smap=smap, umap=umap,
                    meta=meta)
    write_dataset(ds, root / "tiny")
    vectors = rng.normal(size=(n_items, dim)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    write_store(root / "tiny_store", keys, vectors, meta={"dim": dim, "dtype": "float32", "count": n_items,
                                                          "model": "random"})
    return root / "tiny", root / "tiny_store"


def make_tiny_corpus(root: Path, dataset: Path, store: Path):
    """A pretraining corpus (RecFormer format) from the tiny dataset's train sequences, same item keys and store."""
    import json

    train = json.loads((dataset / "train.json").read_text())
    smap = json.loads((dataset / "smap.json").read_text())
    keys = sorted(smap, key=smap.get)
    seqs = [[keys[i] for i in s] + [keys[(s[-1] + 1) % len(keys)]] for s in train.values()]
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "train.json").write_text(json.dumps(seqs))
    (corpus / "dev.json").write_text(json.dumps(seqs[:5]))
    (corpus / "meta_data.json").write_text((dataset / "meta_data.json").read_text())
    (corpus / "smap.json").write_text(json.dumps(smap))
    return corpus
