"""What ranking never-trained items is worth: hold items out of training, rank them as new store items, CPU.

    .venv/bin/python benchmarks/bench_new_items.py --work /tmp/newitems          # Scientific (UniSRec split)
    .venv/bin/python benchmarks/bench_new_items.py --work /tmp/q --quick         # tiny synthetic smoke run

1. D = the Scientific split (``prepare --from unisrec``), S = its MiniLM item store (``embed``, every item).
2. H = ``--holdout`` of D's items drawn at random (seed 0). D' = D without them: every interaction with an H item is
   removed from every sequence, which is then re-split leave-one-out (users left with < 3 items dropped), and H is
   removed from the catalogue. H stays in S: to ``learn recommend`` these are items outside the catalogue, added
   after training (what ``learn embed --add`` makes).
3. Two runs on D' with ``configs/scientific_cpu.yaml`` (``--epochs``, selected on D' validation): text towers only
   (``model.item_bias=false``) and the config's per-item bias (``model.item_bias=true``; new items get the mean bias).
4. Every D test user is ranked with the selected model over all of D's items (D' catalogue + H as new items,
   ``learn.recommend.encode_items`` / ``encode_histories``, ``learn.metrics.full_ranks``), history = D's train + val
   (H items in it are new items too). NDCG@10 / Recall@10 per slice: ``new`` (test target in H: never trained),
   ``seen`` (target in the catalogue), ``all``; plus the text baseline (last history item's vector, no training).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from common import machine, machine_line, write_result  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "amazon2018_scientific_unisrec"
PY = sys.executable


def sh(*args: str) -> None:
    print("$", " ".join(args), flush=True)
    subprocess.run([PY, "-m", "learn", *args], cwd=ROOT, check=True)


def holdout_dataset(src: Path, dst: Path, frac: float, seed: int = 0) -> list[str]:
    """Write D' (D without a random ``frac`` of its items) to ``dst``; returns the held-out item keys."""
    from learn.data.formats import SeqDataset, load_dataset, write_dataset

    ds = load_dataset(src)
    rng = np.random.default_rng(seed)
    held = set(rng.choice(ds.item_keys, size=int(round(frac * ds.num_items)), replace=False).tolist())
    keys = [k for k in ds.item_keys if k not in held]
    smap = {k: i for i, k in enumerate(keys)}
    train, val, test, umap = {}, {}, {}, {}
    inv_umap = {str(v): k for k, v in ds.umap.items()}
    for u in ds.users:
        seq = [smap[ds.item_keys[i]] for i in ds.sequence(u) if ds.item_keys[i] not in held]
        if len(seq) < 3:
            continue
        uid = str(len(umap))
        umap[inv_umap.get(u, u)] = int(uid)
        train[uid], val[uid], test[uid] = seq[:-2], [seq[-2]], [seq[-1]]
    if not dst.exists():
        out = SeqDataset(root=dst, name=dst.name, train=train, val=val, test=test, smap=smap, umap=umap,
                         meta={k: v for k, v in ds.meta.items() if k in smap},
                         item_texts={k: v for k, v in (ds.item_texts or {}).items() if k in smap} or None)
        write_dataset(out, dst)
    return sorted(held)


@torch.no_grad()
def slices(run: Path, full: Path, trainable: Path, store: Path, held: set[str]) -> dict:
    """NDCG@10 / Recall@10 of D's test users over all items, per slice (new / seen / all)."""
    from learn.data.formats import load_dataset
    from learn.metrics import full_ranks
    from learn.recommend import encode_histories, encode_items, load_inference

    inf = load_inference(run, trainable, store, "cpu")
    ds = load_dataset(full)
    items = encode_items(inf)
    users, hists, targets = [], [], []
    for u, t in ds.test.items():
        hist = [inf.row(ds.item_keys[i]) for i in ds.history(u, "test")]
        if t and hist:
            users.append(u)
            hists.append(hist)
            targets.append(inf.row(ds.item_keys[t[0]]))
    emb = encode_histories(inf, hists)
    ranks = full_ranks(emb, items, torch.tensor(targets))
    return _per_slice(ranks, [inf.keys[t] in held for t in targets])


def _per_slice(ranks: torch.Tensor, is_new: list[bool]) -> dict:
    from learn.metrics import metrics_from_ranks

    new = torch.tensor(is_new)
    out = {}
    for name, sel in (("new", new), ("seen", ~new), ("all", torch.ones_like(new))):
        m = metrics_from_ranks(ranks[sel], ks=(10,))
        out[name] = {"users": m["count"], "ndcg@10": m["ndcg@10"], "recall@10": m["recall@10"]}
    return out


def text_baseline_slices(full: Path, store: Path, held: set[str]) -> dict:
    from learn.data.formats import load_dataset
    from learn.data.store import ItemStore
    from learn.metrics import full_ranks

    ds = load_dataset(full)
    table = torch.nn.functional.normalize(torch.from_numpy(ItemStore(store).get(ds.item_keys)), dim=1)
    users, targets = [], []
    for u, t in ds.test.items():
        hist = ds.history(u, "test")
        if t and hist:
            users.append(hist[-1])
            targets.append(t[0])
    ranks = full_ranks(table[torch.tensor(users)], table, torch.tensor(targets))
    return _per_slice(ranks, [ds.item_keys[t] in held for t in targets])


def quick_data(work: Path) -> tuple[Path, Path]:
    from tests.conftest import make_tiny_dataset

    return make_tiny_dataset(work, n_items=60, n_users=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="folder for the data, store and runs (reused)")
    ap.add_argument("--holdout", type=float, default=0.1, help="share of the items held out of training")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="tiny synthetic data, 1 epoch (smoke test)")
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args()
    info = machine()
    print(machine_line(info))
    a.work.mkdir(parents=True, exist_ok=True)
    if a.quick:
        full, store = quick_data(a.work)
        config, base = [], ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.ffn_size=64",
                            "model.output_dim=32", "train.batch_size=16", "train.epochs=1", "data.max_history=8"]
    else:
        full, store = a.work / "scientific", a.work / "scientific_minilm"
        if not full.exists():
            sh("prepare", "--from", "unisrec", str(SHARED), str(full))
        sh("embed", "--data", str(full), "--out", str(store))  # a no-op when up to date
        config, base = ["--config", "configs/scientific_cpu.yaml"], [f"train.epochs={a.epochs}"]
    trainable = a.work / "trainable"
    held = set(holdout_dataset(full, trainable, a.holdout))
    print(f"held out {len(held)} items; D' = {trainable}")
    rows = []
    for label, bias in (("text towers (no item bias)", "false"), ("text towers + item bias", "true")):
        name = f"bias-{bias}"
        run = a.work / "runs" / name
        t0 = time.perf_counter()
        if not (run / "metrics.json").exists():
            sh("finetune", *config, f"data.dataset={trainable}", f"data.store={store}",
               f"log.output_dir={a.work / 'runs'}", f"log.run_name={name}", "log.wandb=false", "log.progress=false",
               f"model.item_bias={bias}", *base)
        train_s = time.perf_counter() - t0
        res = slices(run, full, trainable, store, held)
        for sl, m in res.items():
            rows.append({"model": label, "slice": sl, **m, "train_s": train_s})
        print(label, json.dumps(res))
    for sl, m in text_baseline_slices(full, store, held).items():
        rows.append({"model": "text baseline (last item, no training)", "slice": sl, **m})
    notes = (f"{len(held)} of the items ({a.holdout:.0%}, seed 0) held out of training and ranked as new store items "
             "(zero ID vector; with item_bias the mean bias). `new`: test users whose target is a held-out item; "
             "`seen`: the others; ranked over every item of the original dataset, history = train + val. Models "
             f"selected on the reduced dataset's validation NDCG@10, {a.epochs} epochs at most.")
    if a.quick:
        notes = "QUICK smoke run on tiny synthetic data: numbers meaningless. " + notes
    write_result("bench_new_items", rows, notes, info=info,
                 out_dir=a.out_dir or (HERE / "out" / "quick" if a.quick else None))


if __name__ == "__main__":
    main()
