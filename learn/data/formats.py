"""The canonical on-disk datasets: load with validation, write atomically.

* :class:`SeqDataset` — a RecFormer finetune folder (``train/val/test.json``, ``smap.json``, ``umap.json``,
  ``meta_data.json``) plus LEARN's extras (``{train,val,test}_product.json``, ``product2text.dict``) and our
  ``item_text.json`` (the same texts as JSON, so nothing of ours needs to unpickle).
* :class:`PretrainCorpus` — a RecFormer pretrain folder (``train.json``/``dev.json`` = lists of item-key lists,
  ``meta_data.json``) plus the ``smap.json`` the authors' code needs but never ships (adxcreative/LEARN#2).

Bad input raises :class:`learn.errors.DataError` with a one-line message naming the file; items without meta
are only counted and reported as a warning.
"""

from __future__ import annotations

import builtins
import io
import json
import logging
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from tqdm import tqdm

from learn.data.text import item_text
from learn.errors import DataError
from learn.io import atomic_dir, atomic_write_bytes, atomic_write_json, open_maybe_gz, read_json, resolve

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def progress(it: Iterable, desc: str, total: int | None = None) -> Iterable:
    """A tqdm bar on an interactive terminal (none in logs/tests); only the long loops of big corpora use it."""
    return tqdm(it, desc=desc, total=total, disable=None, leave=False, mininterval=0.5, dynamic_ncols=True)


# ----------------------------------------------------------------------------------------------- reading helpers
class _BuiltinsOnly(pickle.Unpickler):
    """Unpickler that can rebuild plain dicts of strings and nothing else (no code can run)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in ("dict", "str", "list"):
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_text_pickle(path: str | Path) -> dict[str, str]:
    """Load a seed ``product2text.dict`` ({item key: text}) with a builtins-only unpickler."""
    path = Path(path)
    try:
        obj = _BuiltinsOnly(io.BytesIO(path.read_bytes())).load()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except Exception as e:  # any unpickling failure is bad input
        raise DataError(path, f"not a pickled {{str: str}} dict ({e})") from None
    return _check_text_map(path, obj)


def _check_text_map(path: Path, obj: Any) -> dict[str, str]:
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
        raise DataError(path, "expected a {item key: text} mapping of strings")
    return obj


def _type_name(obj: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(obj), type(obj).__name__)


def _read(path: Path, kind: type, what: str) -> Any:
    """The JSON in ``path`` (duplicate keys refused), which must be a ``kind``."""
    obj = read_json(path, unique_keys=True)
    if not isinstance(obj, kind):
        raise DataError(path, f"expected {what}, got {_type_name(obj)}")
    return obj


def read_split(path: Path) -> dict[str, list[int]]:
    """Read one ``{"<user idx>": [item idx, ...]}`` split file."""
    obj = _read(path, dict, 'a JSON object {"<user>": [item ids]}')
    for user, seq in obj.items():
        if not isinstance(seq, list) or not all(type(i) is int for i in seq):
            raise DataError(path, f"user {user!r}: expected a list of integer item ids, got {str(seq)[:60]}")
    return obj


def read_index_map(path: Path, what: str) -> dict[str, int]:
    """Read ``smap.json``/``umap.json`` ({key: int}); two keys with the same index are an error."""
    obj = _read(path, dict, f"a JSON object {{{what} key: index}}")
    owner: dict[int, str] = {}
    for key, idx in obj.items():
        if type(idx) is not int or idx < 0:
            raise DataError(path, f"{what} {key!r}: index must be a non-negative integer, got {idx!r}")
        if idx in owner:
            raise DataError(path, f"duplicate {what}: index {idx} is used by {owner[idx]!r} and {key!r}")
        owner[idx] = key
    return obj


def read_meta(path: Path) -> dict[str, dict]:
    obj = _read(path, dict, "a JSON object {item key: {title, brand, category}}")
    for key, entry in obj.items():
        if not isinstance(entry, dict):
            raise DataError(path, f"item {key!r}: expected an object of fields, got {_type_name(entry)}")
    return obj


def read_item_texts(root: Path) -> dict[str, str] | None:
    if (root / "item_text.json").exists():
        return _check_text_map(root / "item_text.json", read_json(root / "item_text.json", unique_keys=True))
    if (root / "product2text.dict").exists():
        return read_text_pickle(root / "product2text.dict")
    return None


def check_folder(root: Path) -> Path:
    """``root`` when it is a folder, else a DataError saying what it is instead."""
    if not root.is_dir():
        raise DataError(root, "not a folder" if root.exists() else "folder not found")
    return root


def first_seen_smap(*sequence_lists: Iterable[Iterable[str]]) -> dict[str, int]:
    """Item key -> index 0..N-1 in first-seen order over the given sequence lists."""
    ordered = dict.fromkeys(chain.from_iterable(chain.from_iterable(sequence_lists)))  # C speed, keeps order
    return {key: i for i, key in enumerate(ordered)}


def _check_items(root: Path, smap: dict[str, int], meta: dict[str, dict], keys: Iterable[str]) -> list[str]:
    """Raise unless the item indices are exactly 0..N-1; return the warning about ``keys`` without meta."""
    n = len(smap)
    if sorted(smap.values()) != list(range(n)):
        raise DataError(root / "smap.json", f"item indices must be exactly 0..{n - 1}")
    missing = [k for k in keys if k not in meta]
    return [f"{root}: {len(missing):,} items have no entry in meta_data.json (e.g. {missing[0]!r}); "
            "their text is empty"] if missing else []


def _log_warnings(warnings: list[str]) -> list[str]:
    for w in warnings:
        log.warning(w)
    return warnings


# ----------------------------------------------------------------------------------------------- finetune dataset
@dataclass
class SeqDataset:
    """A leave-one-out sequential dataset; item and user indices are RecFormer's (ints, splits keyed by str)."""

    root: Path
    name: str
    train: dict[str, list[int]]
    val: dict[str, list[int]]
    test: dict[str, list[int]]
    smap: dict[str, int]
    umap: dict[str, int]
    meta: dict[str, dict]
    item_keys: list[str] = field(default_factory=list)  # index -> item key (inverse of smap)
    item_texts: dict[str, str] | None = None  # from item_text.json / product2text.dict; else built from meta
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.item_keys:
            self.item_keys = sorted(self.smap, key=self.smap.__getitem__)

    @property
    def users(self) -> list[str]:
        """Every user key of the splits, in first-seen order over train, val, test."""
        return list(dict.fromkeys([*self.train, *self.val, *self.test]))

    @property
    def num_items(self) -> int:
        return len(self.smap)

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_interactions(self) -> int:
        return sum(len(seq) for split in (self.train, self.val, self.test) for seq in split.values())

    def sequence(self, user: str | int) -> list[int]:
        """The user's full chronological sequence (train + val + test)."""
        u = str(user)
        return self.train.get(u, []) + self.val.get(u, []) + self.test.get(u, [])

    def history(self, user: str | int, split: str) -> list[int]:
        """Items a model may see when predicting ``split``: "val" -> train; "test" -> train + val."""
        u = str(user)
        if split == "val":
            return list(self.train.get(u, []))
        if split == "test":
            return self.train.get(u, []) + self.val.get(u, [])
        raise ValueError(f"history() split must be 'val' or 'test', got {split!r}")

    def text_map(self) -> dict[str, str]:
        """{item key: text} for smap items that have text, in index order (what product2text.dict holds):
        the stored item text, else the template over the item's meta."""
        out = {}
        for key in progress(self.item_keys, "item texts"):
            text = self.item_texts.get(key) if self.item_texts is not None else None
            text = item_text(self.meta.get(key)) if text is None else text
            if text:
                out[key] = text
        return out

    def texts(self) -> list[str]:
        """Item text in index order ("" for an item without meta or text)."""
        m = self.text_map()
        return [m.get(k, "") for k in self.item_keys]

    def product_splits(self) -> dict[str, dict[str, list[str]]]:
        """The splits with item indices mapped back to item keys (LEARN's ``*_product.json``)."""
        keys = self.item_keys
        return {s: {u: [keys[i] for i in seq] for u, seq in getattr(self, s).items()} for s in SPLITS}

    def report(self) -> str:
        size = f"{self.num_users:,} users, {self.num_items:,} items, {self.num_interactions:,} interactions"
        return "\n".join([f"{self.name}: {size}", *(f"warning: {w}" for w in self.warnings)])


def validate_dataset(ds: SeqDataset) -> list[str]:
    """Raise DataError on structural problems; return warnings (items without meta)."""
    root, n = ds.root, len(ds.smap)
    warnings = _check_items(root, ds.smap, ds.meta, ds.item_keys)
    umap_ids = {str(i) for i in ds.umap.values()}
    for s in SPLITS:
        for user, seq in getattr(ds, s).items():
            bad = next((i for i in seq if not 0 <= i < n), None)
            if bad is not None:
                raise DataError(root / f"{s}.json", f"user {user!r}: unknown item id {bad} (smap.json has 0..{n - 1})")
            if ds.umap and user not in umap_ids:
                raise DataError(root / f"{s}.json", f"user {user!r} is not an index in umap.json")
    for user in ds.users:
        if not (ds.train.get(user) or ds.val.get(user) or ds.test.get(user)):
            raise DataError(root / "train.json", f"empty user {user!r}: no train items and no val/test item")
    return warnings


def load_dataset(path: str | Path, validate: bool = True) -> SeqDataset:
    """Load a canonical (RecFormer finetune) folder; ``train.json`` may be ``train.json.gz``."""
    root = check_folder(Path(path))
    train, val, test = (read_split(root / f"{s}.json") for s in SPLITS)
    smap, umap = read_index_map(root / "smap.json", "item"), read_index_map(root / "umap.json", "user")
    meta = read_meta(root / "meta_data.json")
    ds = SeqDataset(root, root.resolve().name, train, val, test, smap, umap, meta, item_texts=read_item_texts(root))
    if validate:
        ds.warnings = _log_warnings(validate_dataset(ds))
    return ds


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def _write_folder(out: str | Path, overwrite: bool, files: dict[str, Any], texts: dict[str, str]) -> None:
    """Write ``files`` ({name: JSON object}) and the item texts (JSON and the seed's pickle) into ``out`` atomically
    (a temp folder renamed when complete)."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for name, obj in {**files, "item_text.json": texts}.items():
            _dump(tmp / name, obj)
        (tmp / "product2text.dict").write_bytes(pickle.dumps(texts, protocol=4))


def write_dataset(ds: SeqDataset, out: str | Path, overwrite: bool = False) -> None:
    """Write the splits, their ``*_product.json``, the maps, the meta and the item texts into ``out`` atomically."""
    files = {f"{s}.json": getattr(ds, s) for s in SPLITS}
    files.update({f"{s}_product.json": split for s, split in ds.product_splits().items()})
    files.update({"smap.json": ds.smap, "umap.json": ds.umap, "meta_data.json": ds.meta})
    _write_folder(out, overwrite, files, ds.text_map())


def write_product_splits(ds: SeqDataset, folder: str | Path | None = None) -> None:
    """Write LEARN's ``{train,val,test}_product.json`` next to the dataset (each file atomically; seed step 2)."""
    folder = Path(folder or ds.root)
    for s, split in ds.product_splits().items():
        atomic_write_json(folder / f"{s}_product.json", split)


def write_item_texts(folder: str | Path, texts: dict[str, str]) -> None:
    """Write ``product2text.dict`` (the seed's pickle) and ``item_text.json`` into an existing folder (seed step 3)."""
    folder = Path(folder)
    atomic_write_json(folder / "item_text.json", texts)
    atomic_write_bytes(folder / "product2text.dict", pickle.dumps(texts, protocol=4))


def leave_one_out(root: Path, name: str, sequences: dict[str, list[str]], meta: dict[str, dict],
                  smap: dict[str, int] | None = None) -> tuple[SeqDataset, int]:
    """Split chronological item-key sequences: train = all but the last two, val = [-2], test = [-1].

    Users with fewer than 3 interactions are dropped (their count is returned). User indices follow the order of
    ``sequences``; without ``smap``, item indices follow first appearance over the kept users' sequences.
    """
    kept = {u: seq for u, seq in sequences.items() if len(seq) >= 3}
    umap = {u: i for i, u in enumerate(kept)}
    smap = smap if smap is not None else first_seen_smap(kept.values())
    train, val, test = {}, {}, {}
    for u, seq in kept.items():
        key, ids = str(umap[u]), [smap[k] for k in seq]
        train[key], val[key], test[key] = ids[:-2], ids[-2:-1], ids[-1:]
    return SeqDataset(root, name, train, val, test, smap, umap, meta), len(sequences) - len(kept)


# ----------------------------------------------------------------------------------------------- pretrain corpus
@dataclass
class PretrainCorpus:
    """RecFormer pretrain data: chronological item-key sequences (one per user and category)."""

    root: Path
    train: list[list[str]]
    dev: list[list[str]]
    smap: dict[str, int]
    meta: dict[str, dict]
    item_texts: dict[str, str] | None = None
    smap_generated: bool = False  # True when smap.json was absent and built in first-seen order
    warnings: list[str] = field(default_factory=list)

    @property
    def item_keys(self) -> list[str]:
        return sorted(self.smap, key=self.smap.__getitem__)

    @property
    def num_items(self) -> int:
        return len(self.smap)

    @property
    def num_sequences(self) -> int:
        return len(self.train) + len(self.dev)

    @property
    def num_interactions(self) -> int:
        return sum(map(len, self.train)) + sum(map(len, self.dev))

    text_map = SeqDataset.text_map
    texts = SeqDataset.texts


def read_sequences(path: Path) -> list[list[str]]:
    obj = _read(path, list, "a JSON list of item-key lists")
    # fast path over the distinct keys; the per-sequence loop only runs to locate a problem
    ok = all(type(s) is list and s for s in obj)
    try:
        ok = ok and all(type(k) is str and k for k in set(chain.from_iterable(obj)))
    except TypeError:  # an unhashable element
        ok = False
    if not ok:
        for i, seq in enumerate(obj):
            if not isinstance(seq, list) or not all(isinstance(k, str) and k for k in seq):
                raise DataError(path, f"sequence {i}: expected a list of item-key strings, got {str(seq)[:60]}")
            if not seq:
                raise DataError(path, f"sequence {i} is empty")
    return obj


def validate_corpus(corpus: PretrainCorpus) -> list[str]:
    root = corpus.root
    warnings = _check_items(root, corpus.smap, corpus.meta, corpus.smap)
    for name in ("train", "dev"):
        seqs = getattr(corpus, name)
        if set(chain.from_iterable(seqs)).issubset(corpus.smap):
            continue
        for i, seq in enumerate(seqs):
            missing = next((k for k in seq if k not in corpus.smap), None)
            if missing is not None:
                raise DataError(root / f"{name}.json", f"sequence {i}: unknown item {missing!r} (not in smap.json)")
    return warnings


def load_pretrain_corpus(path: str | Path, validate: bool = True) -> PretrainCorpus:
    """Load a RecFormer pretrain folder; a missing ``smap.json`` is generated (first seen over train then dev)."""
    root = check_folder(Path(path))
    train, dev = read_sequences(root / "train.json"), read_sequences(root / "dev.json")
    has_smap = resolve(root / "smap.json").exists()
    smap = read_index_map(root / "smap.json", "item") if has_smap else first_seen_smap(train, dev)
    corpus = PretrainCorpus(root, train, dev, smap, read_meta(root / "meta_data.json"), read_item_texts(root),
                            smap_generated=not has_smap)
    if validate:
        corpus.warnings = _log_warnings(validate_corpus(corpus))
    return corpus


def write_pretrain_corpus(corpus: PretrainCorpus, out: str | Path, overwrite: bool = False) -> None:
    """Write the sequences, the smap, the meta and the item texts into ``out`` atomically."""
    files = {"train.json": corpus.train, "dev.json": corpus.dev, "smap.json": corpus.smap}
    _write_folder(out, overwrite, {**files, "meta_data.json": corpus.meta}, corpus.text_map())


def is_corpus(path: str | Path) -> bool:
    """True when ``path`` holds a pretrain corpus (train.json is a list) rather than a finetune dataset."""
    p = resolve(Path(path) / "train.json")
    if not p.is_file():
        return False
    try:  # bytes: a non-UTF-8 or damaged file is reported by the loader, with its name
        with open_maybe_gz(p, "rb") as f:
            head = f.read(64).lstrip()
    except (OSError, EOFError):
        return False
    return head.startswith(b"[")


SOURCE_NAME = "source.json"  # written by `learn prepare`: {"format": the --from format, "sources": [paths]}


def source_format(path: str | Path) -> str | None:
    """The ``prepare --from`` format a dataset folder was made from, or None when not recorded (or unreadable)."""
    try:
        fmt = json.loads((Path(path) / SOURCE_NAME).read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return None
    return fmt if isinstance(fmt, str) else None
