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
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from learn.errors import ArgumentParser, LearnError
from learn.io import atomic_open, read_json

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

    @property
    def n_new(self) -> int:
        return len(self.keys) - self.n_catalogue

    @cached_property
    def device_table(self) -> torch.Tensor:
        """The item text vectors on the model's device (moved once)."""
        return self.table.to(self.device)

    @cached_property
    def _rows(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}

    def row(self, key: str) -> int | None:
        """Candidate row of an original item id (None if unknown)."""
        return self._rows.get(key)

    @cached_property
    def split_users(self) -> set[str]:
        return set(self.dataset.train) | set(self.dataset.val) | set(self.dataset.test)

    def user_key(self, user: str) -> str:
        """The split key of an original user id (``umap.json``); a split key itself is accepted too."""
        ds = self.dataset
        key = str(ds.umap[user]) if user in ds.umap else None if ds.umap else user
        if key in self.split_users:
            return key
        raise LearnError(f"unknown user {user!r}: not in {ds.root / 'umap.json'} (original user ids)")

    @cached_property
    def _original_users(self) -> dict[str, str]:
        return {str(v): k for k, v in self.dataset.umap.items()}

    def original_user(self, key: str) -> str:
        return self._original_users.get(key, key)

    def history(self, user_key: str, history_from: str) -> list[int]:
        """Candidate rows of the user's history (all of it; the user tower reads the last max_history)."""
        ds = self.dataset
        return ds.sequence(user_key) if history_from == "full" else ds.history(user_key, history_from)


def load_inference(ckpt: str | Path, data: str | Path, store: str | Path, device: str = "auto",
                   max_history: int | None = None, new_items: bool = True, other_catalogue: bool = False) -> Inference:
    """:func:`learn.inference.load_model` (as ``learn eval`` loads a model), then the candidates: the catalogue, then
    the store's items outside it (``new_items``)."""
    from learn.inference import load_model

    loaded = load_model(ckpt, data, store, device, max_history, other_catalogue)
    model, ev = loaded.model, loaded.data
    keys, table = list(ev.dataset.item_keys), ev.table
    extra = [k for k in ev.store.keys() if k not in ev.dataset.smap] if new_items else []
    if extra and not model.cfg.text_input:  # refused before the new items' vectors are read
        raise LearnError(f"{store} holds {len(extra)} items outside the training catalogue, and this model "
                         "has no text input (model.text_input=false): pass --catalogue-only")
    if extra:
        table = torch.cat([table, torch.from_numpy(ev.store.get(extra))])
        keys += extra
    return Inference(model, loaded.folder, ev.dataset, ev.store, keys, table, len(ev.dataset.item_keys),
                     loaded.max_history, loaded.device)


# ------------------------------------------------------------------------------------------------- encoding
def _known_ids(model, n: int) -> int:
    """How many leading candidate rows have a trained item id (all of them when the model uses no ids)."""
    return min(n, model.cfg.num_items) if model.cfg.uses_item_ids else n


@torch.no_grad()
def encode_items(inf: Inference, chunk_size: int = 8192) -> torch.Tensor:
    """[len(keys), embedding_dim] float32 item embeddings on the device (new items: see the module docstring)."""
    model, table = inf.model, inf.device_table
    n_known = _known_ids(model, len(inf.keys))
    ids = torch.arange(n_known, device=inf.device) if model.cfg.uses_item_ids else None
    items = model.encode_catalogue(table[:n_known], ids, chunk_size=chunk_size, checkpoint=False).float()
    if n_known == len(inf.keys):
        return items
    tower = model.item_tower if model.item_tower is not None else model.tower
    bias = float(model.item_bias.detach().float().mean()) if model.item_bias is not None else None
    out = [items]
    for start in range(n_known, len(inf.keys), chunk_size):
        x = table[start:start + chunk_size]
        extra = None
        if model.id_embedding is not None:  # zero ID vectors: the embedding's prior mean
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
        hist, mask = (t.to(inf.device) for t in pad(rows))
        x = inf.device_table[hist]
        if not with_ids or int(hist.max()) < n_known:
            out.append(model.encode_users(x, mask, hist if with_ids else None).float())
        else:  # a history holding items without a trained id (new items): zero ID vectors for those
            extra, known = None, hist < n_known
            if model.id_embedding is not None:
                extra = model._id_vectors(hist, known)  # rows past the trained catalogue are looked up as id 0
                extra = extra * known.unsqueeze(-1).to(extra.dtype)
            readout = (mask.sum(1) - 1).clamp(min=0)
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
def load_export_index(path: str | Path, dim: int | None = None) -> tuple[object, list[str]]:
    """(faiss index, item id of each row) of a ``learn export`` folder; ``dim`` checks the vectors' size."""
    import faiss

    path = Path(path)
    files = [path / n for n in ("index.faiss", "item_ids.json", "export.json")]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise LearnError(f"{path}: not a `learn export` folder (missing {', '.join(missing)})")
    try:
        index = faiss.read_index(str(files[0]))
        ids = json.loads(files[1].read_text())
        json.loads(files[2].read_text())  # readable, though nothing in it is needed here
    except (RuntimeError, ValueError, OSError) as e:
        raise LearnError(f"{path}: unreadable export ({str(e).strip().splitlines()[0][:200]})") from None
    if index.ntotal != len(ids):
        raise LearnError(f"{path}: the index holds {index.ntotal} vectors but item_ids.json lists {len(ids)}")
    if dim is not None and index.d != dim:
        raise LearnError(f"{path}: index vectors have dim {index.d}, the checkpoint's embeddings have dim {dim} "
                         f"(export made with another model?)")
    return index, ids


def check_export_items(path: str | Path, item_ids: Sequence[str], keys: Sequence[str]) -> None:
    """Refuse an export whose items are not the candidates ranked here (``keys``): an index made before items were
    added to the store (``learn embed --add``) would silently never return them."""
    have, want = set(item_ids), set(keys)
    if have == want:
        return
    missing = [k for k in keys if k not in have]
    extra = [k for k in item_ids if k not in want]
    parts = []
    if missing:
        parts.append(f"{len(missing):,} of the {len(keys):,} items ranked here are not in its index (e.g. "
                     f"{missing[0]!r}: added to the store after the export, or left out by its --catalogue-only)")
    if extra:
        parts.append(f"its index holds {len(extra):,} items that are not ranked here (e.g. {extra[0]!r}: "
                     f"--catalogue-only here, or another dataset or store)")
    raise LearnError(f"{path}: the export does not match the items ranked here: {'; '.join(parts)}; re-run "
                     f"`learn export` on this store (with the same --catalogue-only choice)")


def search_index(index, item_ids: list[str], users: torch.Tensor, k: int,
                 exclude: Sequence[Sequence[str]] | None = None) -> list[tuple[list[str], list[float]]]:
    """(item ids, scores) per user from the FAISS index; ``exclude[u]`` are item ids to drop."""
    q = np.ascontiguousarray(users.detach().float().cpu().numpy())
    extra = max((len(set(e)) for e in exclude), default=0) if exclude is not None else 0
    scores, rows = index.search(q, max(1, min(index.ntotal, k + extra)))
    out = []
    for u in range(len(q)):
        drop = set(exclude[u]) if exclude is not None else set()
        got = [(item_ids[r], float(s)) for s, r in zip(scores[u], rows[u], strict=True)
               if r >= 0 and item_ids[r] not in drop][:k]
        out.append(([i for i, _ in got], [s for _, s in got]))
    return out


# ------------------------------------------------------------------------------------------------- output
def title_of(titles: dict, key: str) -> str:
    entry = titles.get(key)
    text = (entry.get("title") or entry.get("name") if isinstance(entry, dict) else entry) or ""
    text = " ".join(str(text).split())
    return text if len(text) <= 90 else text[:87] + "..."


def _parse_history(inf: Inference, spec: str) -> list[int]:
    keys = [k.strip() for k in spec.split(",") if k.strip()]
    if not keys:
        raise LearnError("--history: give item ids separated by commas, e.g. --history B0001,B0002")
    for k in keys:
        if inf.row(k) is None and k in inf.store:
            raise LearnError(f"--history: item id {k!r} is outside the dataset catalogue and --catalogue-only leaves "
                             "such items out")
        if inf.row(k) is None:
            raise LearnError(f"--history: unknown item id {k!r} (not in the dataset catalogue nor in the item store "
                             f"{inf.store.path})")
    return [inf.row(k) for k in keys]


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
    p.add_argument("--other-catalogue", action="store_true",
                   help="rank a catalogue other than the model's own (text-only models: no item-ID table or biases)")
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
    extra_meta = read_json(args.meta) if args.meta else {}
    if not isinstance(extra_meta, dict):
        raise LearnError(f"{args.meta}: expected a JSON object {{item id: title or fields}}")
    inf = load_inference(args.ckpt, args.data, args.store, args.device, args.max_history,
                         new_items=not args.catalogue_only, other_catalogue=args.other_catalogue)
    titles = {**(inf.dataset.item_texts or {}), **inf.dataset.meta, **extra_meta}
    index, index_ids = load_export_index(args.index, inf.model.cfg.embedding_dim) if args.index else (None, None)
    if index is not None:
        check_export_items(args.index, index_ids, inf.keys)
    items = encode_items(inf) if index is None else None

    def rank(histories: list[list[int]]) -> list[tuple[list[str], list[float]]]:
        """(item ids, scores) of each history's top k."""
        users = encode_histories(inf, histories, args.batch_size)
        if index is not None:
            ex = [[inf.keys[r] for r in h] for h in histories] if args.exclude_history else None
            return search_index(index, index_ids, users, args.k, ex)
        scores, rows = topk_blocked(users, items, args.k, histories if args.exclude_history else None)
        return [([inf.keys[r] for r in rr if r >= 0], [s for s, r in zip(ss, rr, strict=True) if r >= 0])
                for ss, rr in zip(scores.tolist(), rows.tolist(), strict=True)]

    if args.all:
        return _recommend_all(inf, args, rank, titles)
    if args.history is not None:
        jobs = [("(given history)", _parse_history(inf, args.history))]
    else:
        jobs = []
        for user in args.user:
            jobs.append((user, inf.history(inf.user_key(user), args.history_from)))
            if not jobs[-1][1]:
                raise LearnError(f"user {user!r} has no history items before the {args.history_from} split")
    n_cand = len(index_ids) if index is not None else len(inf.keys)
    records = []
    for (user, hist), (ids, scores) in zip(jobs, rank([h for _, h in jobs]), strict=True):
        last = inf.keys[hist[-1]]
        print(f"user {user}: {len(hist)} history items (last: {last} {title_of(titles, last)!r}); "
              f"top {len(ids)} of {n_cand:,} items")
        for r, (key, s) in enumerate(zip(ids, scores, strict=True), 1):
            new = "  [new]" if (inf.row(key) or 0) >= inf.n_catalogue else ""
            print(f"  {r:3d}  {key:<14} {s:8.4f}  {title_of(titles, key)}{new}")
        who = {"history": [inf.keys[r] for r in hist]} if args.history is not None else {"user": user}
        records.append({**who, "items": ids, "scores": scores, "titles": [title_of(titles, k) for k in ids]})
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
            chunk = users[u0:u0 + block]
            hists = {u: h for u in chunk if (h := inf.history(u, args.history_from))}
            for u, (ids, scores) in zip(hists, rank(list(hists.values())) if hists else [], strict=True):
                f.write(json.dumps({"user": inf.original_user(u), "items": ids, "scores": scores,
                                    "titles": [title_of(titles, k) for k in ids]}, ensure_ascii=False) + "\n")
            written += len(hists)
            skipped += len(chunk) - len(hists)
            bar.update(len(chunk))
    bar.close()
    note = f" ({skipped} without history skipped)" if skipped else ""
    print(f"wrote {args.out}: top {args.k} for {written:,} users{note}")
    return 0
