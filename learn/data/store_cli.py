"""``python -m learn store``: inspect an item store and convert to/from the seed's formats.

* ``info STORE`` — the ``__meta__`` record (or what an original-LEARN pickle LMDB holds).
* ``export-txt STORE OUT.txt`` — the seed's ``item_embeddings/{D}.txt`` (lines ``ASIN\\x01v1,v2,...``).
* ``export-pkl STORE OUT.pkl`` — the seed's ``product2emb_{D}.pkl`` ({ASIN: np.float32 array}).
* ``import-txt TXT [TXT ...] --out STORE`` — the authors' ``{D}.txt`` / ``part_{i}.txt`` files.
* ``merge [PREFIX=]STORE ... --out STORE`` — one store from several made by the same LLM, layer and text template
  (a multi-category pretraining corpus: each category's items embedded once, keys ``PREFIX:key`` as
  ``prepare --from mix --keys prefix`` writes them).
* ``import-lmdb LMDB --out STORE`` — the authors' LMDB (values ``pickle.dumps(np.ndarray float64)``, a
  ``num_samples`` key), unpickled with an unpickler that can only rebuild numpy arrays.

Every output is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np

from learn.data.store import DTYPES, ItemStore, StoreMeta, StoreWriter, is_lmdb_dir, shared_env
from learn.errors import ArgumentParser, DataError, LearnError
from learn.io import atomic_open

_CHUNK = 2048


# ------------------------------------------------------------------------------------------- numpy-only unpickler
def _numpy_globals() -> dict[tuple[str, str], object]:
    from numpy._core import multiarray, numeric

    allowed = {"_reconstruct": multiarray._reconstruct, "ndarray": np.ndarray, "dtype": np.dtype,
               "_frombuffer": numeric._frombuffer}
    modules = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric", "numpy")
    return {(mod, name): obj for mod in modules for name, obj in allowed.items()}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays (and plain builtins data) and refuses every other global: no code can run."""

    _GLOBALS = _numpy_globals()

    def find_class(self, module: str, name: str):
        obj = self._GLOBALS.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")
        return obj


def load_numpy_pickle(raw: bytes) -> np.ndarray:
    return NumpyOnlyUnpickler(io.BytesIO(raw)).load()


# ------------------------------------------------------------------------------------------------------ exports
def export_txt(store: str | Path, out: str | Path) -> int:
    """Write the seed's text format; ``%.9g`` round-trips float32 exactly."""
    s = ItemStore(store)
    fmt = ",".join(["%.9g"] * s.dim)
    n = 0
    with atomic_open(Path(out)) as f:
        for keys, arr in s.items(_CHUNK):
            f.write("".join(f"{k}\x01{fmt % tuple(row)}\n" for k, row in zip(keys, arr.tolist())))
            n += len(keys)
    return n


def export_pkl(store: str | Path, out: str | Path) -> int:
    """Write the seed's ``product2emb_{D}.pkl``: {ASIN: np.float32 array of dim D}."""
    s = ItemStore(store)
    table: dict[str, np.ndarray] = {}
    for keys, arr in s.items(_CHUNK):
        table.update(zip(keys, arr.copy()))
    with atomic_open(Path(out), "wb") as f:
        pickle.dump(table, f, protocol=4)
    return len(table)


# ------------------------------------------------------------------------------------------------------ imports
def _meta_from(path: str | Path | None, dim: int, dtype: str, probe: tuple[str, np.ndarray] | None) -> StoreMeta:
    """Meta for an imported store; copied from ``path`` (an item store) when its vectors agree with ours."""
    meta = StoreMeta(dim=dim, dtype=dtype, count=0, model="unknown (imported)", layer=-1, pooling="mean")
    if path is None or not Path(path).exists():
        return meta
    src = ItemStore(path)
    if probe is None or src.dim != dim or probe[0] not in src:
        print(f"note: not copying meta from {path} (different items or dimension)")
        return meta
    if not np.allclose(src.get_one(probe[0]), probe[1], atol=1e-3):
        print(f"note: not copying meta from {path} (its vectors differ from the imported ones)")
        return meta
    return replace(src.meta, dim=dim, dtype=dtype, count=0, created="", extra=dict(src.meta.extra))


def _put_all(w: StoreWriter, vectors: Iterator[tuple[str, np.ndarray]]) -> int:
    """Write ``(key, vector)`` pairs ``_CHUNK`` at a time; returns how many were written."""
    n = 0
    while batch := list(islice(vectors, _CHUNK)):
        w.put_many([k for k, _ in batch], np.stack([v for _, v in batch]))
        n += len(batch)
    return n


def import_txt(files: list[str | Path], out: str | Path, dtype: str = "float32", overwrite: bool = False,
               meta_from: str | Path | None = None) -> int:
    """Import one or more ``ASIN\\x01v1,v2,...`` files (later duplicates of a key are an error)."""
    seen: set[str] = set()
    probe = None

    def vectors(w: StoreWriter) -> Iterator[tuple[str, np.ndarray]]:
        nonlocal probe
        for file in map(Path, files):
            if not file.is_file():
                raise DataError(file, "file not found")
            with open(file, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    line = line.rstrip("\n")
                    if not line:
                        continue
                    key, sep, values = line.partition("\x01")
                    if not sep:
                        raise DataError(file, f"line {lineno}: no \\x01 separator between item key and vector")
                    try:
                        vec = np.array(values.split(","), dtype=np.float64)
                    except ValueError:
                        raise DataError(file, f"line {lineno}: item {key!r} has a non-numeric value") from None
                    if not np.isfinite(vec).all():
                        raise DataError(file, f"line {lineno}: item {key!r} has a non-finite value (NaN/Inf)")
                    if w.dim is None:
                        w.dim = len(vec)
                    if len(vec) != w.dim:
                        raise DataError(file, f"line {lineno}: item {key!r} has {len(vec)} values, expected {w.dim}")
                    if key in seen:
                        raise DataError(file, f"line {lineno}: duplicate item {key!r}")
                    seen.add(key)
                    probe = probe or (key, vec.astype(np.float32))
                    yield key, vec

    with StoreWriter(out, dtype, overwrite=overwrite) as w:
        if not _put_all(w, vectors(w)):
            raise LearnError(f"no vectors found in {', '.join(map(str, files))}")
        w.finalize(_meta_from(meta_from, w.dim, dtype, probe))
    return len(seen)


def import_lmdb(src: str | Path, out: str | Path, dtype: str = "float32", overwrite: bool = False) -> int:
    """Import the authors' LMDB of pickled float64 arrays (checks ``num_samples``)."""
    src = Path(src)
    if not is_lmdb_dir(src):
        raise DataError(src, "not an LMDB folder (no data.mdb)")
    declared = None

    def vectors(txn, w: StoreWriter) -> Iterator[tuple[str, np.ndarray]]:
        nonlocal declared
        for k, v in txn.cursor():
            if k == b"num_samples":
                try:
                    declared = int(bytes(v).decode())
                except (UnicodeDecodeError, ValueError):
                    raise DataError(src, f"num_samples is not an integer: {bytes(v)[:40]!r}") from None
                continue
            try:
                key = bytes(k).decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(src, f"key {bytes(k)[:40]!r} is not UTF-8") from None
            try:
                arr = np.asarray(load_numpy_pickle(v), dtype=np.float64).reshape(-1)
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
                raise DataError(src, f"item {key!r}: value is not a pickled numpy array ({e})") from None
            if not np.isfinite(arr).all():
                raise DataError(src, f"item {key!r}: non-finite vector (NaN/Inf)")
            if w.dim is None:
                w.dim = len(arr)
            if len(arr) != w.dim:
                raise DataError(src, f"item {key!r}: {len(arr)} values, expected {w.dim}")
            yield key, arr

    with shared_env(src).begin() as txn, StoreWriter(out, dtype, overwrite=overwrite) as w:
        n = _put_all(w, vectors(txn, w))
        if n == 0:
            raise DataError(src, "no item vectors in this LMDB")
        if declared is not None and declared != n:
            raise DataError(src, f"num_samples says {declared} items but the LMDB holds {n}")
        w.finalize(StoreMeta(dim=w.dim, dtype=dtype, count=n, model="unknown (imported original-LEARN LMDB)",
                             extra={"imported_from": str(src)}))
    return n


MERGE_MUST_AGREE = ("dim", "model", "layer", "pooling", "text_template_hash", "max_length", "normalized")


def merge(sources: list[str], out: str | Path, dtype: str | None = None, overwrite: bool = False) -> int:
    """Copy the vectors of ``[PREFIX=]STORE`` sources into one store, keys ``PREFIX:key`` (no prefix: as they are).

    The sources must agree on how their vectors were made (:data:`MERGE_MUST_AGREE`); the merged store keeps that
    meta, so a model trained on it checks against the same LLM, layer and template. A key met twice is an error.
    """
    parsed = []
    for spec in sources:
        prefix, sep, path = spec.partition("=")
        prefix, path = (prefix, path) if sep else ("", spec)
        if sep and (not prefix or ":" in prefix):
            raise LearnError(f"merge: {spec!r}: the prefix before '=' must be a non-empty name without ':'")
        parsed.append((prefix, Path(path), ItemStore(path)))
    first = parsed[0][2].meta
    for _, path, store in parsed[1:]:
        differ = [f for f in MERGE_MUST_AGREE if getattr(store.meta, f) != getattr(first, f)]
        if differ:
            raise LearnError(f"merge: {path} was made differently from {parsed[0][1]} ({', '.join(differ)} differ)")
    dtype = dtype or first.dtype
    seen: set[str] = set()

    def vectors() -> Iterator[tuple[str, np.ndarray]]:
        for prefix, path, store in parsed:
            for keys, arr in store.items(_CHUNK):
                for key, row in zip(keys, arr):
                    key = f"{prefix}:{key}" if prefix else key
                    if key in seen:
                        raise DataError(path, f"item {key!r} is already in an earlier source (pass prefixes)")
                    seen.add(key)
                    yield key, row

    with StoreWriter(out, dtype, overwrite=overwrite) as w:
        w.dim = first.dim
        n = _put_all(w, vectors())
        extra = dict(first.extra, merged_from=[f"{p}={path}" if p else str(path) for p, path, _ in parsed])
        w.finalize(replace(first, dtype=dtype, count=n, created="", extra=extra))
    return n


def info(path: str | Path) -> dict:
    path = Path(path)
    if is_lmdb_dir(path):
        with shared_env(path).begin() as txn:
            ns = txn.get(b"num_samples")
            has_meta = txn.get(b"__meta__") is not None
        if ns is not None and not has_meta:
            return {"path": str(path), "format": "original-LEARN pickle LMDB", "num_samples": int(ns.decode())}
    s = ItemStore(path)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return {"path": str(path), "format": "learn item store", "bytes": size, **json.loads(s.meta.to_json())}


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="python -m learn store", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="print the store's meta as JSON").add_argument("store")
    for name, what in (("export-txt", "the seed's {D}.txt"), ("export-pkl", "the seed's product2emb_{D}.pkl")):
        q = sub.add_parser(name, help=f"write {what}")
        q.add_argument("store")
        q.add_argument("out")
    q = sub.add_parser("import-txt", help="build a store from the seed's ASIN\\x01v1,v2,... files")
    q.add_argument("files", nargs="+")
    q.add_argument("--meta-from", default=None, help="copy model/layer/template meta from this store if it matches")
    q2 = sub.add_parser("import-lmdb", help="build a store from the authors' pickle LMDB")
    q2.add_argument("lmdb")
    q3 = sub.add_parser("merge", help="one store from [PREFIX=]STORE ... made alike (keys PREFIX:key)")
    q3.add_argument("sources", nargs="+", metavar="[PREFIX=]STORE")
    for q_ in (q, q2, q3):
        q_.add_argument("--out", required=True)
        q_.add_argument("--store-dtype", default=None if q_ is q3 else "float32", choices=sorted(DTYPES),
                        help="storage dtype (merge: the sources' by default)")
        q_.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    if a.cmd == "info":
        print(json.dumps(info(a.store), indent=2))
        return 0
    n = {"export-txt": lambda: export_txt(a.store, a.out), "export-pkl": lambda: export_pkl(a.store, a.out),
         "import-txt": lambda: import_txt(a.files, a.out, a.store_dtype, a.overwrite, a.meta_from),
         "import-lmdb": lambda: import_lmdb(a.lmdb, a.out, a.store_dtype, a.overwrite),
         "merge": lambda: merge(a.sources, a.out, a.store_dtype, a.overwrite)}[a.cmd]()
    print(f"wrote {n} items to {a.out}")
    return 0
