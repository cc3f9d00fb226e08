"""Behaviour fingerprint: tiny fixed-seed runs of every shipped config, hashed (issue 28, point 8).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/fingerprint.py [--configs DIR] [--work DIR] [--keep]

Builds a small synthetic dataset (a learnable item cycle, 60 items, 150 users), a pretraining corpus from its train
sequences and a random-vector item store (fixed seed), then runs ``python -m learn pretrain|finetune`` on every
``configs/*.yaml`` with the config's own settings except: the data paths, tower widths shrunk to 32 (the depth,
item tower, ID table, bias, positions, losses, sampling, EMA... stay the config's), 3 epochs, CPU, no wandb, no
DataLoader workers. A config's ``train.init_from`` points at the fingerprint run of the config it names
(pretrain_amazon -> finetune_amazon*, ml1m_table_cpu -> ml100k_from1m_cpu, demo_pretrain -> demo_finetune as in
scripts/demo.sh). Prints one line per config: sha256 of the final checkpoint's tensors, of best/'s tensors (when
validation kept one) and of metrics.json's val/test/best_step/steps; then, for three runs, of what ``learn eval``
(val/test metrics), ``learn recommend --all`` (each user's items and scores) and ``learn export`` (the vectors) make
of them. Tensor hashes read the tensor contents (sorted names, dtype, shape, raw bytes), not the file, so metadata
in model.safetensors does not change them. Two refactors that keep behaviour print the same lines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# config -> the config whose fingerprint run it starts from (train.init_from)
SOURCE = {"finetune_amazon": "pretrain_amazon", "finetune_amazon_scientific": "pretrain_amazon",
          "ml100k_from1m_cpu": "ml1m_table_cpu", "demo_finetune": "demo_pretrain"}
SMALL = ["model.hidden_size=32", "model.num_heads=2", "model.ffn_size=64", "model.output_dim=32"]
# runs read back by learn eval / recommend / export (text+ID+bias, SASRec-style table towers, text+bias with EMA)
INFERENCE = ("ml100k_cpu", "ml1m_table_cpu", "scientific_cpu")


def make_data(root: Path, n_items: int = 60, n_users: int = 150, dim: int = 24, seed: int = 0):
    """(dataset folder, pretraining corpus folder, item store folder) under ``root``, fixed by ``seed``."""
    import numpy as np

    from learn.data.formats import SeqDataset, write_dataset
    from learn.data.store import write_store

    rng = np.random.default_rng(seed)
    keys = [f"I{i:03d}" for i in range(n_items)]
    train, val, test, umap = {}, {}, {}, {}
    for u in range(n_users):
        n = int(rng.integers(6, 15))
        start, stride = int(rng.integers(0, n_items)), int(rng.integers(1, 3))
        seq = [(start + stride * j) % n_items for j in range(n)]
        train[str(u)], val[str(u)], test[str(u)] = seq[:-2], [seq[-2]], [seq[-1]]
        umap[f"U{u}"] = u
    meta = {k: {"title": f"movie {k} part {i % 7}", "brand": f"studio {i % 5}", "category": "film"}
            for i, k in enumerate(keys)}
    data = root / "data"
    write_dataset(SeqDataset(root=data, name="fp", train=train, val=val, test=test,
                             smap={k: i for i, k in enumerate(keys)}, umap=umap, meta=meta), data)
    vectors = rng.normal(size=(n_items, dim)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = root / "store"
    write_store(store, keys, vectors, meta={"dim": dim, "dtype": "float32", "count": n_items, "model": "random"})
    corpus = root / "corpus"
    corpus.mkdir()
    seqs = [[keys[i] for i in s] + [keys[(s[-1] + 1) % n_items]] for s in train.values()]
    (corpus / "train.json").write_text(json.dumps(seqs))
    (corpus / "dev.json").write_text(json.dumps(seqs[:10]))
    (corpus / "meta_data.json").write_text(json.dumps(meta))
    (corpus / "smap.json").write_text(json.dumps({k: i for i, k in enumerate(keys)}))
    return data, corpus, store


def tensor_hash(path: Path) -> str:
    """sha256 over the tensors of a safetensors file: sorted names, dtype, shape and raw bytes."""
    import torch
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), "pt") as f:
        for name in sorted(f.keys()):
            t = f.get_tensor(name).contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def metrics_hash(path: Path) -> str:
    doc = json.loads(path.read_text())
    picked = {k: doc.get(k) for k in ("val", "test", "best_step", "steps")}
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()


def fingerprint(run: Path) -> str:
    steps = sorted((run / "checkpoints").glob("step-*"))
    final = tensor_hash(steps[-1] / "model.safetensors") if steps else "-"
    best = tensor_hash(run / "best" / "model.safetensors") if (run / "best" / "model.safetensors").exists() else "-"
    return f"final={final} best={best} metrics={metrics_hash(run / 'metrics.json')}"


def inference(run: Path, data: Path, store: Path, work: Path, env: dict) -> str:
    """Hashes of what ``learn eval``, ``learn recommend --all`` and ``learn export`` make of a run (values only)."""
    out = work / "inference" / run.name
    common = ["--ckpt", str(run), "--data", str(data), "--store", str(store), "--device", "cpu"]
    for cmd in (["eval", *common, "--out", str(out / "eval")],
                ["recommend", *common, "--all", "-k", "5", "--exclude-history", "--no-progress",
                 "--out", str(out / "recs.jsonl")],
                ["export", *common, "--out", str(out / "export")]):
        done = subprocess.run([sys.executable, "-m", "learn", *cmd], cwd=ROOT, env=env, capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RuntimeError(f"learn {cmd[0]} on {run.name}: exit {done.returncode}\n{done.stderr[-2000:]}")
    ev = json.loads((out / "eval" / "metrics.json").read_text())
    ev = hashlib.sha256(json.dumps({k: ev.get(k) for k in ("val", "test")}, sort_keys=True).encode()).hexdigest()
    lists = [{k: r.get(k) for k in ("user", "items", "scores")}  # the ranking, not what else a line may carry
             for r in map(json.loads, (out / "recs.jsonl").read_text().splitlines())]
    recs = hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()
    vectors = hashlib.sha256((tensor_hash(out / "export" / "items.safetensors")
                              + tensor_hash(out / "export" / "users.safetensors")
                              + (out / "export" / "item_ids.json").read_text()
                              + (out / "export" / "user_ids.json").read_text()).encode()).hexdigest()
    return f"eval={ev} recommend={recs} export={vectors}"


def order(names: list[str]) -> list[str]:
    """Sources before the configs that start from them."""
    first = [n for n in names if n in SOURCE.values()]
    return first + [n for n in names if n not in first]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=str(ROOT / "configs"))
    p.add_argument("--work", help="work folder (default: a temporary one, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="learn-fp-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    try:
        data, corpus, store = make_data(work)
        names = order(sorted(c.stem for c in Path(args.configs).glob("*.yaml")))
        for name in names:
            stage = "pretrain" if "pretrain" in name else "finetune"  # demo_pretrain, pretrain_*
            over = [f"data.dataset={data}", f"data.store={store}", f"log.output_dir={work / 'runs'}",
                    f"log.run_name={name}", "log.wandb=false", "log.progress=false", "data.num_workers=0",
                    "train.device=cpu", "train.epochs=3", *SMALL]
            if stage == "pretrain":
                over += [f"data.pretrain_corpus={corpus}", f"data.pretrain_store={store}"]
            if name in SOURCE:
                over.append(f"train.init_from={work / 'runs' / SOURCE[name]}")
            cmd = [sys.executable, "-m", "learn", stage, "--config", str(Path(args.configs) / f"{name}.yaml"), *over]
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{name}: FAILED (exit {done.returncode})\n{done.stdout[-2000:]}{done.stderr[-2000:]}",
                      file=sys.stderr)
                return 1
            print(f"{name:28s} {fingerprint(work / 'runs' / name)}", flush=True)
        for name in INFERENCE:
            if name in names:
                print(f"{name + ' (inference)':28s} {inference(work / 'runs' / name, data, store, work, env)}",
                      flush=True)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
