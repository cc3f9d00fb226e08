"""Export the towers' vectors for a vector index: ``python -m learn export --ckpt RUN --data D --store S --out DIR``.

DIR (written atomically: built in a temporary sibling, renamed when complete) holds

- ``items.safetensors`` (``vectors`` [items, dim] float32) + ``item_ids.json``: the item tower's embedding of every
  item of the store that the model can rank: the dataset catalogue, then store items outside it (added with
  ``learn embed --add``; ``--catalogue-only`` leaves them out), as ``learn recommend`` ranks them;
- ``users.safetensors`` (``vectors`` [users, dim]) + ``user_ids.json`` (original user ids): the user tower's embedding
  of every user with a history, from the full sequence by default (``--history-from test``: train + val, the history
  eval ranks the test item with), the last ``max_history`` items as at test time;
- ``index.faiss``: a FAISS index of the item vectors for inner-product search (score = user . item, the model's own
  ranking score). ``--index flat`` (default) is exact (IndexFlatIP); ``hnsw`` (IndexHNSWFlat, M=32) and ``ivf``
  (IndexIVFFlat, about 4*sqrt(items) lists, ``--nprobe`` of them searched) are approximate, for large catalogues;
- ``export.json``: what was exported (checkpoint, data, store, dim, counts, index type and parameters).

With ``model.item_bias`` the vectors carry one extra coordinate (users 1, items b_i): inner products stay exact.
``learn recommend --index DIR`` searches this index with user vectors computed from the checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from learn.errors import ArgumentParser, LearnError
from learn.recommend import HISTORY_FROM, encode_histories, encode_items, load_inference

INDEX_TYPES = ("flat", "hnsw", "ivf")


def build_index(vectors: np.ndarray, kind: str = "flat", hnsw_m: int = 32, ef_search: int = 128,
                nprobe: int = 16):
    """A FAISS inner-product index over ``vectors`` [N, d] float32; returns (index, parameters for export.json)."""
    import faiss

    n, d = vectors.shape
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        index, params = faiss.IndexFlatIP(d), {}
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(40, 2 * hnsw_m)
        index.hnsw.efSearch = ef_search
        params = {"M": hnsw_m, "efConstruction": index.hnsw.efConstruction, "efSearch": ef_search}
    elif kind == "ivf":
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))  # FAISS wants >= 39 training points per list
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # tiny catalogues: no "at least 39 training points" warning
        index.train(x)
        index.nprobe = min(nprobe, nlist)
        params = {"nlist": nlist, "nprobe": index.nprobe}
    else:
        raise LearnError(f"--index must be one of {', '.join(INDEX_TYPES)}, not {kind!r}")
    index.add(x)
    return index, params


def export(ckpt, data, store, out, *, index: str = "flat", history_from: str = "full", catalogue_only: bool = False,
           max_history: int | None = None, batch_size: int = 256, device: str = "auto", overwrite: bool = False,
           hnsw_m: int = 32, ef_search: int = 128, nprobe: int = 16, other_catalogue: bool = False, log=print) -> Path:
    import faiss
    from safetensors.torch import save

    from learn.io import atomic_dir

    out = Path(out)
    if out.exists() and not overwrite:
        raise LearnError(f"{out} already exists (pass --overwrite to replace it)")
    if index not in INDEX_TYPES:
        raise LearnError(f"--index must be one of {', '.join(INDEX_TYPES)}, not {index!r}")
    t0 = time.perf_counter()
    inf = load_inference(ckpt, data, store, device, max_history, new_items=not catalogue_only,
                         other_catalogue=other_catalogue)
    items = encode_items(inf).cpu().contiguous()
    hists = {u: h for u in inf.dataset.users if (h := inf.history(u, history_from))}  # users with a history
    users = list(hists)
    user_vecs = encode_histories(inf, list(hists.values()), batch_size).cpu().contiguous()
    dim = inf.model.cfg.embedding_dim
    if items.shape[1] != dim or user_vecs.shape[1] != dim:  # a guard: both towers must agree with the checkpoint
        raise LearnError(f"internal error: vectors of dim {items.shape[1]}/{user_vecs.shape[1]}, model dim {dim}")
    faiss_index, params = build_index(items.numpy(), index, hnsw_m, ef_search, nprobe)
    info = {
        "checkpoint": str(inf.weights), "data": str(data), "store": str(store), "store_model": inf.store.meta.model,
        "dim": int(items.shape[1]), "items": len(inf.keys), "catalogue_items": inf.n_catalogue,
        "new_items": inf.n_new, "users": len(users), "users_without_history": len(inf.dataset.users) - len(users),
        "history_from": history_from, "max_history": inf.max_history,
        "item_bias": bool(inf.model.cfg.item_bias), "metric": "inner_product",
        "index": {"type": index, "faiss": type(faiss_index).__name__, **params},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_dir(out, overwrite=overwrite) as tmp:
        meta = {"dim": str(info["dim"]), "checkpoint": info["checkpoint"]}
        # bytes through a plain open(): the user's umask (safetensors' save_file creates its files 0600)
        (tmp / "items.safetensors").write_bytes(save({"vectors": items}, metadata={**meta, "ids": "item_ids.json"}))
        (tmp / "users.safetensors").write_bytes(save({"vectors": user_vecs}, metadata={**meta, "ids": "user_ids.json"}))
        (tmp / "item_ids.json").write_text(json.dumps(inf.keys, ensure_ascii=False))
        (tmp / "user_ids.json").write_text(json.dumps([inf.original_user(u) for u in users], ensure_ascii=False))
        faiss.write_index(faiss_index, str(tmp / "index.faiss"))
        (tmp / "export.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    no_history = len(inf.dataset.users) - len(users)
    left_out = f" ({no_history:,} without any history item left out)" if no_history else ""
    log(f"wrote {out}: {len(inf.keys):,} items ({inf.n_new:,} outside the catalogue) and {len(users):,} users"
        f"{left_out} x {info['dim']}, {type(faiss_index).__name__} index, in {time.perf_counter() - t0:.1f}s")
    return out


def load_vectors(folder: str | Path, which: str = "items") -> tuple[list[str], torch.Tensor]:
    """(ids, vectors) of an export's ``items`` or ``users``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    ids = json.loads((folder / f"{which[:-1]}_ids.json").read_text())
    return ids, load_file(str(folder / f"{which}.safetensors"))["vectors"]


def main(argv: list[str]) -> int:
    p = ArgumentParser.from_doc("python -m learn export", __doc__)
    p.add_argument("--ckpt", required=True, help="run folder, checkpoint step folder or model folder")
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--store", required=True, help="item store (catalogue items, plus any added ones)")
    p.add_argument("--out", required=True, help="export folder to write (atomically)")
    p.add_argument("--index", choices=INDEX_TYPES, default="flat",
                   help="flat: exact inner product (default); hnsw / ivf: approximate, for large catalogues")
    p.add_argument("--hnsw-m", type=int, default=32, help="HNSW graph degree (--index hnsw)")
    p.add_argument("--ef-search", type=int, default=128, help="HNSW search breadth stored in the index")
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists searched, stored in the index")
    p.add_argument("--history-from", choices=HISTORY_FROM, default="full",
                   help="users' histories: full (train+val+test, default), test (train+val, as eval), val (train)")
    p.add_argument("--catalogue-only", action="store_true", help="export only the dataset's items, not added ones")
    p.add_argument("--other-catalogue", action="store_true",
                   help="export a catalogue other than the model's own (text-only models: no item-ID table or biases)")
    p.add_argument("--max-history", type=int, default=None, help="default: the run's data.max_history, else 40")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    export(**vars(p.parse_args(argv)))  # every flag is an argument of export() of the same name
    return 0
