"""Scale: a synthetic corpus with RecFormer's pretraining statistics, the 1M-item LMDB store, the input pipeline
against what the trainer consumes, and peak memory at two corpus sizes, in one run.

    .venv/bin/python benchmarks/bench_scale.py             # 3.6M + 0.36M sequences, 1M items, 384-d float16
    .venv/bin/python benchmarks/bench_scale.py --dim 4096  # the Baichuan-sized store (about 8 GiB)
    .venv/bin/python benchmarks/bench_scale.py --quick     # a tiny smoke run (numbers meaningless)

Synthetic corpus (``--work``, default ``benchmarks/out/scale``; reused when present): ``--items`` item keys
``B000000000``... (ASIN-like, 10 characters); every sequence has a length drawn uniformly from 5..40 (inclusive,
mean 22.5; RecFormer keeps 5..40) and items drawn uniformly at random from the catalogue (no popularity skew: the
worst case for LMDB page locality). Written as the trainer's pretraining corpus (``train.json`` = a JSON list of
item-key lists, ``dev.json``, ``smap.json``, ``meta_data.json``; see ``learn.data.formats.load_pretrain_corpus``).

Every phase runs as a child process under ``/usr/bin/time -v`` (its "Maximum resident set size" is the phase's peak
RSS; with DataLoader workers it is the largest single process, not the sum):

- ``store``: the 1M-item store through ``learn.data.store.StoreWriter`` (random unit vectors); size on disk, time.
- ``seqfile``: ``learn.data.corpus.build_sequence_file``, the streamed conversion of train.json to a flat file.
- ``pipeline``: the real ``Dataset`` + ``Collator`` (item vectors read from LMDB) in a ``torch`` ``DataLoader`` with
  0/1/2 workers, pretraining samples (split point in the second half, target-only loss, history <= 40), batches of
  ``--batch-size``; sequences/s after ``--warmup`` batches. Two dataset paths: ``trainer`` = what ``learn/train.py``
  does today (``load_pretrain_corpus`` + Python lists + ``SequenceSamples``, every sequence in RAM) and ``streamed`` =
  ``learn.data.corpus.StreamedSequenceSamples`` over a flat file read per sample.
- ``train``: training steps (forward, InfoNCE, backward, AdamW) of ``configs/scientific_cpu.yaml``'s towers (width
  256) and ``configs/pretrain_amazon.yaml``'s (4 layers, width 768), on batches from the same pipeline, collated
  before timing; sequences/s = what the trainer consumes. ``pipeline / trainer`` is the issue's ratio (target >= 2).

The pipeline and the trainer are timed one after the other on the same cores; in training they would share them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from common import machine, machine_line, model_config, write_result  # noqa: E402

MiB = 1 << 20
MIN_LEN, MAX_LEN = 5, 40


def key_of(i: int) -> str:
    return f"B{i:09d}"


def du(path: Path) -> int:
    """Bytes on disk (allocated blocks) under ``path``."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def proc_status() -> dict[str, float]:
    """VmHWM/RssAnon/RssFile of this process in MiB (Linux), {} elsewhere."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        k, _, v = line.partition(":")
        if k in ("VmHWM", "RssAnon", "RssFile") and v.strip().endswith("kB"):
            out[k] = int(v.split()[0]) / 1024
    return out


def warm(path: Path) -> None:
    """Read a file or folder once so the page cache holds it (every measured run then starts warm)."""
    for f in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def result(**kw) -> None:
    print("RESULT " + json.dumps(kw), flush=True)


# ------------------------------------------------------------------------------------------------------- phases
def phase_items(a) -> None:
    """smap.json and meta_data.json for --items items (shared by every corpus size through symlinks)."""
    out = Path(a.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    with open(tmp / "smap.json", "w") as f:
        f.write("{" + ",".join(f'"{key_of(i)}":{i}' for i in range(a.items)) + "}")
    with open(tmp / "meta_data.json", "w") as f:
        f.write("{" + ",".join(f'"{key_of(i)}":{{"title":"item {i}","brand":"brand {i % 997}",'
                               f'"category":"cat {i % 31}"}}' for i in range(a.items)) + "}")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    result(items=a.items, seconds=time.perf_counter() - t0)


def phase_gen(a) -> None:
    """train.json with --sequences sequences (lengths uniform 5..40, items uniform), dev.json, links to the items."""
    out, items_dir = Path(a.out), Path(a.items_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(a.seed)
    quoted = [f'"{key_of(i)}"' for i in range(a.items)]
    t0, total = time.perf_counter(), 0

    def write(path: Path, n: int) -> int:
        count = 0
        with open(path, "w") as f:
            f.write("[")
            for c0 in range(0, n, 1 << 16):
                lens = rng.integers(MIN_LEN, MAX_LEN + 1, min(1 << 16, n - c0))
                q = [quoted[x] for x in rng.integers(0, a.items, int(lens.sum())).tolist()]
                ends = np.cumsum(lens).tolist()
                starts = [0, *ends[:-1]]
                f.write(("," if c0 else "") + ",".join("[" + ",".join(q[s:e]) + "]" for s, e in zip(starts, ends)))
                count += len(q)
            f.write("]")
        return count

    n = a.sequences[0]
    total = write(tmp / "train.json", n)
    write(tmp / "dev.json", min(1000, n))
    for name in ("smap.json", "meta_data.json"):
        (tmp / name).symlink_to(os.path.relpath(items_dir / name, out))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    result(sequences=n, interactions=total, train_json_MiB=du(out / "train.json") / MiB,
           seconds=time.perf_counter() - t0)


def phase_store(a) -> None:
    from learn.data.store import StoreMeta, StoreWriter

    out = Path(a.out)
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    with StoreWriter(out, dtype=a.dtype, overwrite=True) as w:
        for c0 in range(0, a.items, 8192):
            n = min(8192, a.items - c0)
            v = rng.standard_normal((n, a.dim), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            w.put_many([key_of(i) for i in range(c0, c0 + n)], v)
        w.finalize(StoreMeta(dim=a.dim, dtype=a.dtype, count=0, model="synthetic (random unit vectors)"))
    dt = time.perf_counter() - t0
    result(items=a.items, dim=a.dim, dtype=a.dtype, seconds=dt, size_MiB=du(out) / MiB,
           apparent_MiB=sum(p.stat().st_size for p in out.iterdir()) / MiB)


def phase_seqfile(a) -> None:
    from learn.data.corpus import build_sequence_file

    corpus = Path(a.corpus)
    t0 = time.perf_counter()
    smap = json.loads((corpus / "smap.json").read_text())
    sf = build_sequence_file(corpus / "train.json", smap, corpus / "train.seq", MIN_LEN, MAX_LEN)
    meta = json.loads((sf / "meta.json").read_text())
    result(sequences=meta["sequences"], interactions=meta["interactions"], seconds=time.perf_counter() - t0,
           size_MiB=du(sf) / MiB)


def build_dataset(path: str, corpus: Path, store_dir: Path, seed: int):
    """(dataset, collate, batches of indices for one epoch) the way each path builds them."""
    from learn.data.samples import Collator, SequenceSamples
    from learn.data.store import ItemStore

    store = ItemStore(store_dir)
    if path == "trainer":  # learn/train.py Trainer._build_data, pretrain branch, verbatim in substance
        from torch.utils.data import DistributedSampler

        from learn.data.formats import load_pretrain_corpus

        c = load_pretrain_corpus(corpus)
        smap, keys = c.smap, c.item_keys
        seqs = [[smap[k] for k in s] for s in c.train if MIN_LEN <= len(s) <= MAX_LEN]
        ds = SequenceSamples(seqs, 40, mode="pretrain", positions="target", window=0, seed=seed)
        sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=True)
        order = list(sampler)
        return ds, Collator(store, keys), order
    from learn.data.corpus import SequenceFile, StreamedSequenceSamples

    smap = json.loads((corpus / "smap.json").read_text())
    keys = sorted(smap, key=smap.__getitem__)
    del smap
    ds = StreamedSequenceSamples(SequenceFile(corpus / "train.seq"), 40, mode="pretrain", positions="target",
                                 window=0, seed=seed)
    order = np.random.default_rng(seed).permutation(len(ds))  # int64, 8 bytes per sequence
    return ds, Collator(store, keys), order


def phase_pipeline(a) -> None:
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ds, collate, order = build_dataset(a.path, Path(a.corpus), Path(a.store), a.seed)
    setup = time.perf_counter() - t0
    bs, n = a.batch_size, a.warmup + a.batches
    batches = [order[i * bs : (i + 1) * bs] for i in range(n)]
    loader = DataLoader(ds, batch_sampler=batches, collate_fn=collate, num_workers=a.workers,
                        persistent_workers=False, prefetch_factor=4 if a.workers else None)
    t_start = t1 = time.perf_counter()
    seen = 0
    for i, b in enumerate(loader):
        if i < a.warmup:  # worker start-up and first reads are not throughput
            t1 = time.perf_counter()
            continue
        seen += b.hist.shape[0]
    dt = time.perf_counter() - t1
    status = proc_status()
    result(path=a.path, workers=a.workers, sequences=len(ds), batch=bs, batches=len(batches) - a.warmup,
           seq_per_s=seen / dt, setup_s=setup, first_batches_s=t1 - t_start, load_avg_1m=os.getloadavg()[0],
           end_rss_anon_MiB=status.get("RssAnon"), end_rss_file_MiB=status.get("RssFile"))


def phase_train(a) -> None:
    import torch

    from learn.data.samples import lookup
    from learn.losses import Objective
    from learn.model import LEARNModel

    torch.manual_seed(a.seed)
    ds, collate, order = build_dataset("streamed", Path(a.corpus), Path(a.store), a.seed)
    bs = a.batch_size
    batches = [collate([ds[int(j)] for j in order[i * bs : (i + 1) * bs]]) for i in range(a.warmup + a.batches)]
    dim = int(batches[0].vectors.shape[1])
    rows = []
    for name in a.configs:
        # the towers' cost; ID options need the catalogue's ids
        cfg = model_config(name, input_dim=dim, item_bias=False, item_id_embedding=False)
        model = LEARNModel(cfg)
        obj = Objective(model, "infonce", 20.0, False, 8192, 4)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        model.train()

        def step(b, obj=obj, opt=opt) -> None:
            vec = lambda ids: lookup(b, ids, None).float()  # noqa: E731
            loss = obj(vec(b.hist), b.mask, b.hist, vec(b.target), b.target, b.target_mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for b in batches[: a.warmup]:
            step(b)
        t0 = time.perf_counter()
        for b in batches[a.warmup :]:
            step(b)
        dt = time.perf_counter() - t0
        rows.append({"config": name, "params": sum(p.numel() for p in model.parameters()), "hidden": cfg.hidden_size,
                     "layers": cfg.num_layers, "batch": bs, "steps": a.batches, "steps_per_s": a.batches / dt,
                     "seq_per_s": a.batches * bs / dt, "threads": torch.get_num_threads(),
                     "load_avg_1m": os.getloadavg()[0]})
    result(rows=rows)


PHASES = {"items": phase_items, "gen": phase_gen, "store": phase_store, "seqfile": phase_seqfile,
          "pipeline": phase_pipeline, "train": phase_train}


# ------------------------------------------------------------------------------------------------------- driver
def child(phase: str, **kw) -> dict:
    """Run one phase under /usr/bin/time -v; its RESULT dict plus peak_rss_MiB and wall_s."""
    args = [sys.executable, __file__, "--phase", phase]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", *([str(x) for x in v] if isinstance(v, list) else [str(v)])]
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    print(f"  $ {' '.join(args[1:])}", flush=True)
    t0 = time.perf_counter()
    p = subprocess.run(timer + args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-4000:])
        raise SystemExit(f"bench_scale: phase {phase} failed (exit {p.returncode})")
    out = json.loads(re.findall(r"^RESULT (.*)$", p.stdout, re.M)[-1])
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    out["peak_rss_MiB"] = int(m.group(1)) / 1024 if m else None
    out["wall_s"] = wall
    print(f"    -> {json.dumps(out)}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke test; numbers meaningless)")
    ap.add_argument("--work", type=Path, default=None, help="corpus/store folder (default benchmarks/out/scale)")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--sequences", type=int, nargs="+", default=[360_000, 3_600_000],
                    help="corpus sizes; the streamed pipeline runs on each (peak RSS vs corpus size)")
    ap.add_argument("--trainer-path-sizes", type=int, nargs="*", default=[360_000, 1_080_000],
                    help="corpus sizes for the trainer's in-RAM path (it needs several GB at 3.6M)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=300, help="timed pipeline batches per measurement")
    ap.add_argument("--train-steps", type=int, default=6, help="timed training steps per model config")
    ap.add_argument("--configs", nargs="+", default=["scientific_cpu", "pretrain_amazon"])
    ap.add_argument("--rebuild", action="store_true", help="regenerate the corpus and the store even if present")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="folder for bench_scale.json (default benchmarks/results)")
    # child-only arguments
    ap.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--items-dir", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--path", default="streamed", help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=10, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.phase:
        if a.phase == "pipeline":
            a.workers = a.workers[0]
        PHASES[a.phase](a)
        return

    if a.quick:
        # one corpus and one tower width: every phase runs once (each child process costs ~2 CPU-s of start-up)
        a.items, a.sequences, a.trainer_path_sizes, a.dim = 3000, [2000], [2000], 32
        a.batch_size, a.batches, a.train_steps, a.workers, a.rebuild = 16, 20, 2, [0, 1], True
        a.configs = a.configs[:1]
    work = a.work or HERE / "out" / ("scale_quick" if a.quick else "scale")
    work.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(machine_line(info), flush=True)
    rows: list[dict] = []
    store = work / f"store_{a.items}_{a.dim}_{a.dtype}"
    items_dir = work / f"items_{a.items}"
    built = work / "built.json"  # how long the reused corpus/store took to build when they were made
    made = json.loads(built.read_text()) if built.exists() and not a.rebuild else {}

    def once(name: str, target: Path, phase: str, **kw) -> dict:
        if name in made and target.exists():
            print(f"  reusing {target} (built earlier)", flush=True)
            return {**made[name], "reused": True}
        made[name] = child(phase, **kw)
        built.write_text(json.dumps(made, indent=1))
        return made[name]

    print("== items and the item store", flush=True)
    once("items", items_dir, "items", items=a.items, out=items_dir)
    st = once(f"store_{a.items}_{a.dim}_{a.dtype}", store, "store", items=a.items, dim=a.dim, dtype=a.dtype,
              out=store)
    rows.append({"table": "builds (reused when present; times from when they were built)",
                 "measure": f"build the {a.items:,}-item LMDB store ({a.dim}-d {a.dtype}, StoreWriter)",
                 "value": st["size_MiB"], "unit": "MiB on disk", "seconds": st["seconds"],
                 "peak_rss_MiB": st["peak_rss_MiB"]})
    corpora = {}
    for n in sorted(set(a.sequences) | set(a.trainer_path_sizes)):
        print(f"== corpus of {n:,} sequences", flush=True)
        d = work / f"corpus_{a.items}_{n}"
        g = once(f"corpus_{a.items}_{n}", d, "gen", items=a.items, sequences=n, items_dir=items_dir, out=d, seed=n)
        s = once(f"seqfile_{a.items}_{n}", d / "train.seq", "seqfile", corpus=d)
        corpora[n] = d
        rows.append({"table": "builds (reused when present; times from when they were built)",
                     "measure": f"synthetic corpus, {n:,} sequences ({g['interactions']:,} interactions): train.json",
                     "value": g["train_json_MiB"], "unit": "MiB", "seconds": g["seconds"],
                     "peak_rss_MiB": g["peak_rss_MiB"]})
        rows.append({"table": "builds (reused when present; times from when they were built)",
                     "measure": f"streamed conversion train.json -> flat sequence file, {n:,} sequences",
                     "value": s["size_MiB"], "unit": "MiB", "seconds": s["seconds"], "peak_rss_MiB": s["peak_rss_MiB"]})
    big = max(a.sequences)
    pipe: dict[tuple, dict] = {}
    print("== input pipeline", flush=True)
    runs = [("streamed", n, 0) for n in sorted(a.sequences)] + [("streamed", big, w) for w in a.workers if w]
    runs += [("trainer", n, 0) for n in sorted(a.trainer_path_sizes)]
    for path, n, w in runs:
        warm(store)
        warm(corpora[n] / ("train.seq" if path == "streamed" else "train.json"))
        r = child("pipeline", path=path, corpus=corpora[n], store=store, workers=w, batch_size=a.batch_size,
                  batches=a.batches)
        pipe[(path, n, w)] = r
        rows.append({"table": "input pipeline (Dataset + Collator with LMDB reads, DataLoader)",
                     "measure": f"pipeline ({path} dataset), {n:,} sequences, {w} DataLoader workers",
                     "value": r["seq_per_s"], "unit": "sequences/s", "seconds": r["setup_s"],
                     "peak_rss_MiB": r["peak_rss_MiB"], "end_rss_anon_MiB": r["end_rss_anon_MiB"],
                     "end_rss_file_MiB": r["end_rss_file_MiB"], "load_avg_1m": r["load_avg_1m"]})
    print("== trainer consumption", flush=True)
    tr = child("train", corpus=corpora[big], store=store, batch_size=a.batch_size, batches=a.train_steps,
               warmup=1, configs=a.configs)
    best_w = max((w for p, n, w in pipe if p == "streamed" and n == big), key=lambda w: pipe[("streamed", big, w)]
                 ["seq_per_s"])
    for t in tr["rows"]:
        rows.append({"table": "trainer consumption (training steps, same run)",
                     "measure": f"trainer consumes: {t['config']} towers ({t['layers']} layers, width {t['hidden']}, "
                                f"{t['params'] / 1e6:.1f}M params), batch {t['batch']}",
                     "value": t["seq_per_s"], "unit": "sequences/s", "seconds": t["steps"] / t["steps_per_s"],
                     "peak_rss_MiB": tr["peak_rss_MiB"], "load_avg_1m": t["load_avg_1m"]})
        for w in sorted({0, best_w}):
            ratio = pipe[("streamed", big, w)]["seq_per_s"] / t["seq_per_s"]
            rows.append({"table": "ratios",
                         "measure": f"ratio pipeline ({w} workers, {big:,} seq) / trainer ({t['config']})",
                         "value": ratio, "unit": "x (target >= 2)", "met": "yes" if ratio >= 2 else "no"})
    small = min(a.sequences)
    r_small, r_big = pipe[("streamed", small, 0)]["peak_rss_MiB"], pipe[("streamed", big, 0)]["peak_rss_MiB"]
    rows.append({"table": "ratios",
                 "measure": f"streamed pipeline peak RSS, {big:,} vs {small:,} sequences (0 workers)",
                 "value": r_big / r_small, "unit": "x (flat = 1.0)"})
    tps = sorted(a.trainer_path_sizes)
    if len(tps) >= 2:
        r0, r1 = pipe[("trainer", tps[0], 0)]["peak_rss_MiB"], pipe[("trainer", tps[-1], 0)]["peak_rss_MiB"]
        rows.append({"table": "ratios",
                     "measure": f"trainer-path peak RSS, {tps[-1]:,} vs {tps[0]:,} sequences (0 workers)",
                     "value": r1 / r0, "unit": f"x (corpus {tps[-1] / tps[0]:.1f}x)"})
    notes = (f"Synthetic corpus: {a.items:,} items, lengths uniform on {MIN_LEN}..{MAX_LEN}, items uniform. "
             f"Pretraining samples (split point in the second half, target-only InfoNCE), batch {a.batch_size}; "
             f"pipeline sequences/s over {a.batches} batches after 10 warm-up batches; `seconds` is the dataset "
             "set-up time for pipeline rows and the build time for builds. Peak RSS from `/usr/bin/time -v` of one "
             "child process per phase (with workers: the largest process). The `trainer` dataset path is what "
             "learn/train.py does now (whole corpus in Python lists); `streamed` is learn.data.corpus (a flat "
             "file read per sample). `end_rss_anon_MiB`/`end_rss_file_MiB`: the main process's anonymous and "
             "file-backed (LMDB pages mapped) RSS when the run ends. Store and corpus files are read once before each "
             "pipeline run (warm page cache). Trainer and pipeline were timed one after the other on the same 2 cores.")
    write_result("bench_scale", rows, notes, info=info, out_dir=a.out_dir, quick=a.quick)


if __name__ == "__main__":
    main()
