"""Top-k recommendations from a trained model: ``python -m learn recommend --ckpt RUN --data D --store S -k 10 ...``.

``--user ID [ID ...]`` (original user ids, ``umap.json``), ``--history ITEM,ITEM,...`` (a history given by hand,
original item ids) or ``--all --out recs.jsonl`` (every user, streamed to a JSON-lines file). Prints rank, item id,
score and title. The model, run settings (``data.max_history``) and catalogue are loaded as ``learn eval`` loads them.

Candidates: every item of the dataset catalogue plus every item of ``--store`` that is not in the catalogue (items
added later with ``learn embed --add``, never seen in training); ``--catalogue-only`` drops the latter. A new item is
encoded by the item tower from its text vector like any other; a model with ID parts (``model.item_id_embedding``)
gives it a zero ID vector (the embedding's prior mean), and with ``model.item_bias`` the mean of the trained biases.
A model without text input (``model.text_input=false``) cannot rank new items.

A user's history is, by default, the whole sequence (train + val + test: what comes next); ``--history-from test``
uses train + val (the history eval ranks the test item with), ``val`` the train part. The last ``max_history`` items
feed the user tower. Scores are inner products of the user and item embeddings, ranked in blocks of users and item
chunks (:func:`learn.metrics.score_blocking`): memory stays bounded whatever the number of users and items.
``--index EXPORT`` searches the FAISS index of a ``learn export`` folder instead (approximate for hnsw/ivf).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from learn.errors import ArgumentParser, LearnError
from learn.io import atomic_open

HISTORY_FROM = ("full", "test", "val")


@dataclass
class Inference:
    """A loaded model with its dataset, item store and candidate items (catalogue first, then new store items)."""

    model: object  # learn.model.LEARNModel (eval mode)
    weights: Path  # the checkpoint folder
    dataset: object  # learn.data.formats.SeqDataset
    store: object  # learn.data.store.ItemStore
    keys: list[str]  # candidate item keys: dataset.item_keys, then store items outside the catalogue
    table: torch.Tensor  # [len(keys), input_dim] item text vectors (CPU)
    n_catalogue: int  # the first n_catalogue candidates are the dataset's items (index = dataset item index)
    max_history: int
    device: torch.device
    _row: dict[str, int] | None = field(default=None, repr=False)
    _users: dict[str, str] | None = field(default=None, repr=False)
    _split_users: set[str] | None = field(default=None, repr=False)
    _table: torch.Tensor | None = field(default=None, repr=False)

    @property
    def n_new(self) -> int:
        return len(self.keys) - self.n_catalogue

    def device_table(self) -> torch.Tensor:
        """The item text vectors on the model's device (moved once)."""
        if self._table is None:
            self._table = self.table.to(self.device)
        return self._table

    def row(self, key: str) -> int | None:
        """Candidate row of an original item id (None if unknown)."""
        if self._row is None:
            self._row = {k: i for i, k in enumerate(self.keys)}
        return self._row.get(key)

    def user_key(self, user: str) -> str:
        """The split key of an original user id (``umap.json``); a split key itself is accepted too."""
        ds = self.dataset
        if user in ds.umap and str(ds.umap[user]) in self.split_users:
            return str(ds.umap[user])
        if user in self.split_users and not ds.umap:
            return user
        raise LearnError(f"unknown user {user!r}: not in {ds.root / 'umap.json'} (original user ids)")

    @property
    def split_users(self) -> set[str]:
        if self._split_users is None:
            self._split_users = set(self.dataset.train) | set(self.dataset.val) | set(self.dataset.test)
        return self._split_users

    def original_user(self, key: str) -> str:
        if self._users is None:
            self._users = {str(v): k for k, v in self.dataset.umap.items()}
        return self._users.get(key, key)

    def history(self, user_key: str, history_from: str) -> list[int]:
        """Candidate rows of the user's history (all of it; the user tower reads the last max_history)."""
        ds = self.dataset
        return ds.sequence(user_key) if history_from == "full" else ds.history(user_key, history_from)


def _weights_folder(weights: Path) -> Path:
    return weights.parent if weights.suffix == ".safetensors" else weights


def load_inference(ckpt: str | Path, data: str | Path, store: str | Path, device: str = "auto",
                   max_history: int | None = None, new_items: bool = True) -> Inference:
    """Load a checkpoint (as ``learn eval``), the dataset and the store; candidates = catalogue + new store items."""
    from learn.checkpoint import check_model_store, load_pretrained, resolve_weights, verify_weights
    from learn.data.bundle import load_bundle
    from learn.distributed import pick_device
    from learn.evaluate import _run_max_history

    dev = pick_device(device)
    weights = resolve_weights(ckpt)
    verify_weights(weights)  # the sha256 manifest, before anything is loaded (as learn eval)
    folder = _weights_folder(weights)
    model = load_pretrained(folder).to(dev)
    if max_history is None:
        max_history = _run_max_history(weights)
    ev = load_bundle(data, store)
    check_model_store(model, folder, ev.store)
    keys = list(ev.dataset.item_keys)
    table = ev.table
    if new_items:
        known = ev.dataset.smap
        extra = [k for k in ev.store.keys() if k not in known]
        if extra and not model.cfg.text_input:  # refused before the new items' vectors are read
            raise LearnError(f"{store} holds {len(extra)} items outside the training catalogue, and this model "
                             "has no text input (model.text_input=false): pass --catalogue-only")
        if extra:
            table = torch.cat([table, torch.from_numpy(ev.store.get(extra))])
            keys += extra
    return Inference(model, folder, ev.dataset, ev.store, keys, table, len(ev.dataset.item_keys), max_history, dev)


# ------------------------------------------------------------------------------------------------- encoding
def _known_ids(model, n: int) -> int:
    """How many leading candidate rows have a trained item id (all of them when the model uses no ids)."""
    return min(n, model.cfg.num_items) if model.cfg.uses_item_ids else n


def _id_extra(model, ids: torch.Tensor, known: torch.Tensor) -> torch.Tensor | None:
    """ID vectors for ``ids`` with zeros for items without a trained id (``known`` False)."""
    if model.id_embedding is None:
        return None
    safe = torch.where(known, ids, torch.zeros_like(ids))
    return model.id_embedding(safe) * known.unsqueeze(-1).to(model.id_embedding.weight.dtype)


@torch.no_grad()
def encode_items(inf: Inference, chunk_size: int = 8192) -> torch.Tensor:
    """[len(keys), embedding_dim] float32 item embeddings on the device (new items: see the module docstring)."""
    model = inf.model
    table = inf.device_table()
    n_known = _known_ids(model, len(inf.keys))
    with_ids = model.cfg.uses_item_ids
    ids = torch.arange(n_known, device=inf.device)
    items = model.encode_catalogue(table[:n_known], ids if with_ids else None, chunk_size=chunk_size,
                                   checkpoint=False).float()
    if n_known == len(inf.keys):
        return items
    tower = model.item_tower if model.item_tower is not None else model.tower
    bias = float(model.item_bias.detach().float().mean()) if model.item_bias is not None else None
    out = [items]
    for start in range(n_known, len(inf.keys), chunk_size):
        x = table[start:start + chunk_size]
        extra = None
        if model.id_embedding is not None:
            extra = x.new_zeros(x.shape[0], 1, model.cfg.hidden_size, dtype=model.id_embedding.weight.dtype)
        vec = tower(x[:, None, :], None, extra).squeeze(1).float()
        if bias is not None:
            vec = torch.cat([vec, vec.new_full((vec.shape[0], 1), bias)], dim=1)
        out.append(vec)
    return torch.cat(out)


@torch.no_grad()
def encode_histories(inf: Inference, histories: Sequence[Sequence[int]], batch_size: int = 256) -> torch.Tensor:
    """[len(histories), embedding_dim] float32 user embeddings from candidate-row histories (last max_history)."""
    from learn.data.samples import pad

    model = inf.model
    with_ids = model.cfg.uses_item_ids
    n_known = _known_ids(model, len(inf.keys))
    out = []
    for start in range(0, len(histories), batch_size):
        rows = [np.asarray(list(h)[-inf.max_history:], dtype=np.int64) for h in histories[start:start + batch_size]]
        hist, mask = pad(rows)
        hist, mask = hist.to(inf.device), mask.to(inf.device)
        x = inf.device_table()[hist]
        if not with_ids or int(hist.max()) < n_known:
            out.append(model.encode_users(x, mask, hist if with_ids else None).float())
        else:  # a history holding items without a trained id (new items): zero ID vectors for those
            readout = (mask.sum(1) - 1).clamp(min=0)
            extra = _id_extra(model, hist, hist < n_known)
            out.append(model._users_out(model.tower(x, mask, extra, readout=readout).squeeze(1)).float())
    if not out:
        return torch.zeros(0, model.cfg.embedding_dim, device=inf.device)
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------- scoring
@torch.no_grad()
def topk_blocked(users: torch.Tensor, items: torch.Tensor, k: int, exclude: Sequence[Sequence[int]] | None = None,
                 chunk_size: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k items by inner product for each user: (scores [U,k], item rows [U,k]) on the users' device.

    The same blocking as :func:`learn.metrics.full_ranks` (users in blocks, items in chunks, one reused score
    buffer): a few MiB of scores at a time, never a users x items matrix. ``exclude[u]`` are item rows removed
    from user u's candidates; a user with fewer than k candidates gets score ``-inf`` and row ``-1`` at the end.
    """
    from learn.metrics import score_blocking

    n_users, n_items = users.shape[0], items.shape[0]
    k = max(0, min(k, n_items))
    device = users.device
    users, items = users.float(), items.to(device=device, dtype=torch.float32)
    out_s = torch.full((n_users, k), -math.inf, device=device)
    out_i = torch.full((n_users, k), -1, dtype=torch.long, device=device)
    if n_users == 0 or k == 0:
        return out_s, out_i
    user_block, chunk = score_blocking(n_users, n_items, users.shape[1], device, chunk_size)
    buf = torch.empty(user_block * chunk, device=device)
    for u0 in range(0, n_users, user_block):
        u1 = min(n_users, u0 + user_block)
        ex_r = ex_c = None
        if exclude is not None:
            pairs = [(r, c) for r, row in enumerate(exclude[u0:u1]) for c in set(row)]
            if pairs:
                ex = torch.tensor(pairs, dtype=torch.long, device=device)
                ex_c, order = torch.sort(ex[:, 1])
                ex_r = ex[order, 0]
        best_s, best_i = out_s[u0:u1], out_i[u0:u1]
        for i0 in range(0, n_items, chunk):
            i1 = min(n_items, i0 + chunk)
            scores = buf[: (u1 - u0) * (i1 - i0)].view(u1 - u0, i1 - i0)
            torch.matmul(users[u0:u1], items[i0:i1].T, out=scores)
            if ex_c is not None:
                lo, hi = torch.searchsorted(ex_c, torch.tensor([i0, i1], device=device)).tolist()
                scores[ex_r[lo:hi], ex_c[lo:hi] - i0] = -math.inf
            s, i = scores.topk(min(k, i1 - i0), dim=1)
            s, pick = torch.cat([best_s, s], 1).topk(k, dim=1)
            best_i = torch.cat([best_i, i + i0], 1).gather(1, pick)
            best_s = s
        best_i[torch.isinf(best_s)] = -1
        out_s[u0:u1], out_i[u0:u1] = best_s, best_i
    return out_s, out_i


# ------------------------------------------------------------------------------------------------- exports
@dataclass
class ExportIndex:
    """A ``learn export`` folder's FAISS index of items with the item ids of its rows."""

    path: Path
    index: object  # faiss.Index
    item_ids: list[str]
    info: dict


def load_export_index(path: str | Path, dim: int | None = None) -> ExportIndex:
    """Read ``index.faiss`` + ``item_ids.json`` (+ ``export.json``); ``dim`` checks the vectors' size."""
    import faiss

    path = Path(path)
    files = [path / n for n in ("index.faiss", "item_ids.json", "export.json")]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise LearnError(f"{path}: not a `learn export` folder (missing {', '.join(missing)})")
    try:
        index = faiss.read_index(str(files[0]))
        ids = json.loads(files[1].read_text())
        info = json.loads(files[2].read_text())
    except (RuntimeError, ValueError, OSError) as e:
        raise LearnError(f"{path}: unreadable export ({str(e).strip().splitlines()[0][:200]})") from None
    if index.ntotal != len(ids):
        raise LearnError(f"{path}: the index holds {index.ntotal} vectors but item_ids.json lists {len(ids)}")
    if dim is not None and index.d != dim:
        raise LearnError(f"{path}: index vectors have dim {index.d}, the checkpoint's embeddings have dim {dim} "
                         f"(export made with another model?)")
    return ExportIndex(path, index, ids, info)


def search_index(exp: ExportIndex, users: torch.Tensor, k: int, exclude: Sequence[Sequence[str]] | None = None
                 ) -> tuple[np.ndarray, list[list[str]]]:
    """(scores [U,k] float32, item ids per user) from the FAISS index; ``exclude[u]`` are item ids to drop."""
    q = np.ascontiguousarray(users.detach().float().cpu().numpy())
    extra = max((len(set(e)) for e in exclude), default=0) if exclude is not None else 0
    kk = max(1, min(exp.index.ntotal, k + extra))
    scores, rows = exp.index.search(q, kk)
    out_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    out_ids: list[list[str]] = []
    for u in range(len(q)):
        drop = set(exclude[u]) if exclude is not None else set()
        got = [(float(s), exp.item_ids[r]) for s, r in zip(scores[u], rows[u], strict=True)
               if r >= 0 and exp.item_ids[r] not in drop][:k]
        out_s[u, : len(got)] = [s for s, _ in got]
        out_ids.append([i for _, i in got])
    return out_s, out_ids


# ------------------------------------------------------------------------------------------------- output
def _item_titles(dataset, extra_meta: dict | None) -> dict:
    return {**(dataset.item_texts or {}), **dataset.meta, **(extra_meta or {})}


def title_of(titles: dict, key: str) -> str:
    entry = titles.get(key)
    if isinstance(entry, dict):
        text = entry.get("title") or entry.get("name") or ""
    else:
        text = entry or ""
    text = " ".join(str(text).split())
    return text if len(text) <= 90 else text[:87] + "..."


def _parse_history(inf: Inference, spec: str) -> list[int]:
    keys = [k.strip() for k in spec.split(",") if k.strip()]
    if not keys:
        raise LearnError("--history: give item ids separated by commas, e.g. --history B0001,B0002")
    rows = []
    for k in keys:
        r = inf.row(k)
        if r is None and k in inf.store:
            raise LearnError(f"--history: item id {k!r} is outside the dataset catalogue and --catalogue-only leaves "
                             "such items out")
        if r is None:
            raise LearnError(f"--history: unknown item id {k!r} (not in the dataset catalogue nor in the item store "
                             f"{inf.store.path})")
        rows.append(r)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser.from_doc("python -m learn recommend", __doc__)
    p.add_argument("--ckpt", required=True, help="run folder, checkpoint step folder or model folder")
    p.add_argument("--data", required=True, help="prepared dataset folder (users, histories, item titles)")
    p.add_argument("--store", required=True, help="item store (the catalogue's items, plus any added ones)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", nargs="+", metavar="ID", help="original user id(s) (umap.json)")
    who.add_argument("--history", metavar="ITEM,ITEM,...", help="a history by hand: original item ids, oldest first")
    who.add_argument("--all", action="store_true", help="every user with a history (needs --out)")
    p.add_argument("-k", "--top-k", type=int, default=10, dest="k", help="items per user (default 10)")
    p.add_argument("--exclude-history", action="store_true", help="never recommend an item of the user's history")
    p.add_argument("--history-from", choices=HISTORY_FROM, default="full",
                   help="users' histories: full (train+val+test, default), test (train+val, as eval), val (train)")
    p.add_argument("--catalogue-only", action="store_true", help="rank only the dataset's items, not added ones")
    p.add_argument("--index", metavar="EXPORT", help="search the FAISS index of a `learn export` folder instead")
    p.add_argument("--out", help="write JSON lines {user, items, scores, titles} (atomic; required with --all)")
    p.add_argument("--meta", help="extra titles: a JSON {item id: {title: ...}} or {item id: text} (new items)")
    p.add_argument("--max-history", type=int, default=None, help="default: the run's data.max_history, else 40")
    p.add_argument("--batch-size", type=int, default=1024, help="users per step: encoded together, then ranked")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar for --all")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.k < 1:
        raise LearnError("-k must be >= 1")
    if args.all and not args.out:
        raise LearnError("--all writes every user's list to a file: pass --out recs.jsonl")
    extra_meta = None
    if args.meta:
        from learn.io import read_json

        extra_meta = read_json(args.meta)
        if not isinstance(extra_meta, dict):
            raise LearnError(f"{args.meta}: expected a JSON object {{item id: title or fields}}")
    inf = load_inference(args.ckpt, args.data, args.store, args.device, args.max_history,
                         new_items=not args.catalogue_only)
    titles = _item_titles(inf.dataset, extra_meta)
    exp = load_export_index(args.index, inf.model.cfg.embedding_dim) if args.index else None
    items = encode_items(inf) if exp is None else None

    def rank(histories: list[list[int]]) -> list[tuple[list[str], list[float]]]:
        users = encode_histories(inf, histories, args.batch_size)
        if exp is not None:
            ex = [[inf.keys[r] for r in h] for h in histories] if args.exclude_history else None
            scores, ids = search_index(exp, users, args.k, ex)
            return [(ids[u], scores[u, : len(ids[u])].tolist()) for u in range(len(ids))]
        scores, rows = topk_blocked(users, items, args.k, histories if args.exclude_history else None)
        scores, rows = scores.cpu(), rows.cpu()
        out = []
        for s, r in zip(scores.tolist(), rows.tolist(), strict=True):
            keep = [j for j, row in enumerate(r) if row >= 0]
            out.append(([inf.keys[r[j]] for j in keep], [s[j] for j in keep]))
        return out

    if args.all:
        return _recommend_all(inf, args, rank, titles)
    if args.history is not None:
        jobs = [("(given history)", _parse_history(inf, args.history))]
    else:
        jobs = []
        for user in args.user:
            hist = inf.history(inf.user_key(user), args.history_from)
            if not hist:
                raise LearnError(f"user {user!r} has no history items before the {args.history_from} split")
            jobs.append((user, hist))
    results = rank([h for _, h in jobs])
    n_cand = len(exp.item_ids) if exp is not None else len(inf.keys)
    records = []
    for (user, hist), (ids, scores) in zip(jobs, results, strict=True):
        last = inf.keys[hist[-1]]
        print(f"user {user}: {len(hist)} history items (last: {last} {title_of(titles, last)!r}); "
              f"top {len(ids)} of {n_cand:,} items")
        for r, (key, s) in enumerate(zip(ids, scores, strict=True), 1):
            new = "  [new]" if (inf.row(key) or 0) >= inf.n_catalogue else ""
            print(f"  {r:3d}  {key:<14} {s:8.4f}  {title_of(titles, key)}{new}")
        rec = {"user": user, "items": ids, "scores": scores, "titles": [title_of(titles, k) for k in ids]}
        if args.history is not None:
            rec = {"history": [inf.keys[r] for r in hist], **{k: v for k, v in rec.items() if k != "user"}}
        records.append(rec)
    if args.out:
        with atomic_open(args.out) as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return 0


def _recommend_all(inf: Inference, args, rank, titles) -> int:
    """Every user with a history, in blocks of users, streamed to ``args.out``: memory does not grow with users."""
    from tqdm import tqdm

    users = inf.dataset.users
    block = max(1, args.batch_size)  # users per step: encoded together, then ranked in score_blocking's blocks
    main_rank = int(os.environ.get("RANK", "0")) == 0
    bar = tqdm(total=len(users), unit="user", desc="recommend", dynamic_ncols=True,
               disable=args.no_progress or not main_rank)
    written = skipped = 0
    with atomic_open(args.out) as f:
        for u0 in range(0, len(users), block):
            keys, hists = [], []
            for u in users[u0:u0 + block]:
                h = inf.history(u, args.history_from)
                if h:
                    keys.append(u)
                    hists.append(h)
                else:
                    skipped += 1
            for u, (ids, scores) in zip(keys, rank(hists) if hists else [], strict=True):
                f.write(json.dumps({"user": inf.original_user(u), "items": ids, "scores": scores},
                                   ensure_ascii=False) + "\n")
                written += 1
            bar.update(min(block, len(users) - u0))
    bar.close()
    note = f" ({skipped} without history skipped)" if skipped else ""
    print(f"wrote {args.out}: top {args.k} for {written:,} users{note}")
    return 0
