"""The LMDB item store: item key -> raw little-endian float16/float32 vector, plus a ``__meta__`` record.

Layout: one LMDB environment (a folder with ``data.mdb``/``lock.mdb``). Keys are item keys in UTF-8, values are
``dim`` little-endian floats (``<f2`` or ``<f4``), and the reserved key ``__meta__`` holds a JSON :class:`StoreMeta`.
``__meta__`` is written last, in the same transaction that completes the store, and the folder is renamed into place
only after that, so a store without ``__meta__`` (or whose entry count disagrees with it) is an unfinished one and
:class:`ItemStore` refuses it.

:class:`ItemStore` is the picklable reader (one lazily opened read-only environment per process, see :class:`_Views`);
:class:`StoreWriter` builds a store in a work folder and renames it into place on :meth:`StoreWriter.finalize`.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from learn.errors import LearnError
from learn.io import make_temp_dir, replace_dir

META_KEY = b"__meta__"
DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
_MAX_KEY_BYTES = 511
_INITIAL_MAP_SIZE = 64 << 20


@dataclass
class StoreMeta:
    """What a store holds and how it was made (``__meta__``, JSON)."""

    dim: int
    dtype: str  # "float16" | "float32" (storage dtype, little-endian)
    count: int  # number of item vectors (``__meta__`` excluded)
    model: str = "unknown"
    layer: int = -1
    pooling: str = "mean"
    text_template_hash: str = ""
    max_length: int | None = None
    normalized: bool = True
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes | str) -> StoreMeta:
        obj = json.loads(raw)
        known = {f.name for f in fields(cls)}
        extra = dict(obj.pop("extra", None) or {})
        extra.update({k: v for k, v in obj.items() if k not in known})
        return cls(**{k: v for k, v in obj.items() if k in known}, extra=extra)


def _encode_key(key: str) -> bytes:
    raw = key.encode("utf-8")
    if not raw or len(raw) > _MAX_KEY_BYTES:
        raise LearnError(f"item key {key[:40]!r} is empty or longer than {_MAX_KEY_BYTES} UTF-8 bytes (LMDB limit)")
    if raw == META_KEY:
        raise LearnError(f"item key {key!r} is reserved by the item store")
    return raw


def _names(keys: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(k) for k in list(keys)[:n])
    return shown + (", ..." if len(keys) > n else "")


def _non_finite(keys: Sequence[str], rows: np.ndarray) -> list[str]:
    """The keys whose row of ``rows`` (``[len(keys), dim]``) holds a NaN/Inf."""
    return [] if np.isfinite(rows).all() else [k for k, row in zip(keys, rows) if not np.isfinite(row).all()]


def check_finite(path: str | Path, keys: Sequence[str], rows: np.ndarray) -> None:
    """Raise a one-line :class:`LearnError` naming the store when any of ``rows`` (``[len(keys), dim]``) is NaN/Inf."""
    if bad := _non_finite(keys, rows):
        raise LearnError(f"item store {path}: {len(bad)} item vectors are not finite (NaN/Inf), e.g. {_names(bad)}; "
                         "rebuild it with `python -m learn embed --overwrite` (a finite store is needed for metrics)")


def is_lmdb_dir(path: str | Path) -> bool:
    return (Path(path) / "data.mdb").is_file()


def open_read(path: Path, lock: bool = False) -> lmdb.Environment:
    """A read-only LMDB environment on ``path`` (``lock=True`` while a writer may still be at work)."""
    return lmdb.open(str(path), readonly=True, lock=lock, readahead=False, subdir=True, max_readers=2048,
                     meminit=False, max_dbs=0)


def damaged(path: str | Path, why: str) -> LearnError:
    """The one-line error for a damaged LMDB folder ``path`` (names its data.mdb and how to rebuild it)."""
    path = Path(path)
    return LearnError(f"{path / 'data.mdb'}: damaged item store ({why}); rebuild it with "
                      f"`python -m learn embed --data DATASET --out {path} --overwrite`")


def _why(e: lmdb.Error, path: Path) -> str:
    """LMDB's message without the folder name (the one-line error names it already)."""
    return str(e).replace(str(path), "").strip(": ") or type(e).__name__


# LMDB allows one environment per file per process: readers of the same store share it (and its _Views). Keyed by
# process and by the identity of data.mdb, so a store replaced on disk (new inode) or a forked worker gets its own.
_ENVS: dict[tuple[int, int, int], lmdb.Environment] = {}
_VIEWS: dict[tuple[int, int, int], _Views] = {}
# stores whose value sizes were checked in this process: (env key, file size, mtime, row bytes)
_LAYOUT_OK: set[tuple] = set()


def _env_key(path: Path) -> tuple[int, int, int]:
    st = os.stat(path / "data.mdb")
    return os.getpid(), st.st_dev, st.st_ino


def _close(key: tuple[int, int, int]) -> None:
    """Close the views, then the environment, of ``key``."""
    views = _VIEWS.pop(key, None)
    if views is not None:
        views.close()
    env = _ENVS.pop(key, None)
    if env is not None:
        env.close()


def _release(path: Path) -> None:
    """Close this process's shared environment of ``path`` (so a writer may open it)."""
    _close(_env_key(path))


def _close_inherited_envs() -> None:
    """In a forked child: close the parent's environments (never use them across fork) so they can be reopened."""
    for key in [k for k in _ENVS if k[0] != os.getpid()]:
        with suppress(lmdb.Error):
            _close(key)


os.register_at_fork(after_in_child=_close_inherited_envs)


def _open_checked(path: Path) -> lmdb.Environment:
    """Open ``path`` read-only after checking that ``data.mdb`` holds every page its environment records.

    LMDB memory-maps the file: touching a page past the end of a truncated file kills the process with SIGBUS, so
    the size check runs before any record is read (LMDB reads its header with ``pread``, not through the map, and
    refuses page numbers at or past the recorded last page, so a file that holds them all is safe to read).
    """
    size = (path / "data.mdb").stat().st_size
    if size == 0:
        raise damaged(path, "data.mdb is empty")
    try:
        env = open_read(path)
    except lmdb.Error as e:
        raise damaged(path, f"LMDB cannot open it: {_why(e, path)}") from None
    try:
        psize = env.stat()["psize"]
        need = (env.info()["last_pgno"] + 1) * psize
    except lmdb.Error as e:
        env.close()
        raise damaged(path, f"unreadable header: {e}") from None
    if size < need or size < 2 * psize:
        env.close()
        raise damaged(path, f"the file has {size:,} bytes but its pages need {need:,}: it was truncated")
    return env


def shared_env(path: str | Path) -> lmdb.Environment:
    """This process's read-only environment of the LMDB folder ``path`` (opened once, shared by all readers).

    The first open in a process checks the file against the environment's recorded size (see :func:`_open_checked`)
    and raises a one-line :class:`LearnError` for an empty, truncated or garbage ``data.mdb``.
    """
    path = Path(path)
    key = _env_key(path)
    if key not in _ENVS:
        _ENVS[key] = _open_checked(path)
    return _ENVS[key]


class _Views:
    """One long-lived read transaction of a shared environment and the zero-copy value views read through it.

    A view (``memoryview`` into LMDB's memory map) stays valid while the transaction is open; the store is read-only
    and never modified in place (writers build a new folder and rename it), so the transaction may live as long as
    the environment. Views cost ~0.3 KB of RAM each, not the vector: the data stays in the page cache. The map is
    cleared when it holds more than ``cap`` views, so memory is bounded for any catalogue size.
    """

    def __init__(self, env: lmdb.Environment, cap: int):
        self.cap = max(1, cap)
        self.txn = env.begin(buffers=True)
        self.map: dict[str, memoryview] = {}
        self.lock = threading.Lock()

    def fill(self, keys: Sequence[str], row_bytes: int, path: Path, dtype: np.dtype) -> None:
        """Look up the keys not yet held; each new value's size and finiteness is checked once, before it is kept."""
        distinct = list(dict.fromkeys(keys))
        with self.lock:  # an LMDB transaction serves one thread at a time
            new = [k for k in distinct if k not in self.map]
            if len(self.map) + len(new) > self.cap:
                self.map.clear()
                new = distinct
            found: dict[str, memoryview] = {}
            missing: list[str] = []
            for k in new:  # one pass: this runs for every streamed batch
                v = self.txn.get(k.encode("utf-8"))
                if v is None:
                    missing.append(k)
                    continue
                found[k] = v
                if len(v) != row_bytes:
                    raise LearnError(f"item store {path}: item {k!r} has {len(v)} bytes, expected {row_bytes}; "
                                     "the store is corrupt (a value has the wrong size)")
            if found:
                rows = np.frombuffer(bytearray().join(found.values()), dtype).reshape(len(found), -1)
                check_finite(path, list(found), rows)
                self.map.update(found)
        if missing:
            raise LearnError(f"item store {path}: {len(missing)} of {len(distinct)} requested items are missing "
                             f"(e.g. {_names(missing)})")

    def close(self) -> None:
        self.map.clear()
        with suppress(lmdb.Error):
            self.txn.abort()


class ItemStore:
    """Read-only view of a finished item store; ``get(keys)`` returns float32 ``[n, dim]``."""

    def __init__(self, path: str | Path, view_cache: int = 1 << 18):
        self.path = Path(path)
        self.view_cache = int(view_cache)
        if not self.path.exists():
            raise LearnError(f"item store {self.path} not found (build it with: python -m learn embed --out {path})")
        if not is_lmdb_dir(self.path):
            raise LearnError(f"{self.path} is not an LMDB item store (no data.mdb)")
        self._env: lmdb.Environment | None = None
        try:
            env = self._get_env()
            with env.begin(buffers=False) as txn:
                raw = txn.get(META_KEY)
                legacy = raw is None and txn.get(b"num_samples") is not None
            self._validate(raw, legacy, env.stat()["entries"])
            self.dim = int(self.meta.dim)
            self._np_dtype = DTYPES[self.meta.dtype]
            self._row_bytes = self.dim * self._np_dtype.itemsize
            self._check_layout(env)
        except (LearnError, lmdb.Error) as e:
            self._env = None
            _release(self.path)
            if isinstance(e, lmdb.Error):
                raise damaged(self.path, f"LMDB: {_why(e, self.path)}") from None
            raise

    def _check_layout(self, env: lmdb.Environment) -> None:
        """Every value has ``dim`` floats (a walk over the keys: values are not read); once per process and file."""
        st = os.stat(self.path / "data.mdb")
        stamp = (self._key, st.st_size, st.st_mtime_ns, self._row_bytes)
        if stamp in _LAYOUT_OK:
            return
        with env.begin(buffers=True) as txn:
            for k, v in txn.cursor().iternext(keys=True, values=True):
                if len(v) != self._row_bytes and bytes(k) != META_KEY:
                    raise damaged(self.path, f"item {bytes(k)[:40].decode('utf-8', 'replace')!r} has {len(v)} "
                                  f"bytes, expected {self._row_bytes} ({self.dim} x {self.meta.dtype})")
        _LAYOUT_OK.add(stamp)

    def _validate(self, raw: bytes | None, legacy: bool, entries: int) -> None:
        if raw is None:
            if legacy:
                raise LearnError(f"{self.path} is an original-LEARN pickle LMDB; convert it with: "
                                 f"python -m learn store import-lmdb {self.path} --out NEW_STORE")
            raise LearnError(f"item store {self.path} is incomplete (no __meta__ record): the run that wrote it did "
                             "not finish; rerun `python -m learn embed` to resume it")
        try:
            self.meta = StoreMeta.from_json(raw)
        except (ValueError, TypeError, AttributeError) as e:
            raise LearnError(f"item store {self.path}: unreadable __meta__ record ({e})") from None
        dim = self.meta.dim
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise LearnError(f"item store {self.path}: __meta__ records an invalid dim {dim!r}")
        if not isinstance(self.meta.dtype, str) or self.meta.dtype not in DTYPES:
            raise LearnError(f"item store {self.path}: unknown dtype {self.meta.dtype!r} in __meta__")
        if entries - 1 != self.meta.count:
            raise LearnError(f"item store {self.path} is incomplete or corrupt: __meta__ says {self.meta.count} "
                             f"items but it holds {entries - 1}")

    # -- lazy per-process environment -------------------------------------------------------------------------
    def _get_env(self) -> lmdb.Environment:
        # reopened when unpickled, in a forked child (which closed its parent's environments) and after _release
        if self._env is None or _ENVS.get(self._key) is not self._env:
            self._key = _env_key(self.path)  # this reader's snapshot: the store file as it was when opened
            self._env = shared_env(self.path)
        return self._env

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_env": None}

    def close(self) -> None:
        """Drop this reader's handle (the per-process environment stays open for other readers of the store)."""
        self._env = None

    # -- reads --------------------------------------------------------------------------------------------------
    def get(self, keys: Sequence[str]) -> np.ndarray:
        """float32 ``[len(keys), dim]`` (repeated keys allowed); missing keys raise a :class:`LearnError`.

        Each key is looked up in LMDB once per process: the value's zero-copy view into the memory map is kept (see
        :class:`_Views`), so a batch is one ``join`` of views, as fast as a gather from an in-RAM table.
        """
        keys = keys if isinstance(keys, list) else list(keys)
        views = self._views()
        try:
            raw = bytearray().join([views.map[k] for k in keys])
        except KeyError:
            views.fill(keys, self._row_bytes, self.path, self._np_dtype)
            raw = bytearray().join([views.map[k] for k in keys])
        out = np.frombuffer(raw, dtype=self._np_dtype).reshape(len(keys), self.dim)
        return out if out.dtype == np.float32 else _to_float32(out)

    def _views(self) -> _Views:
        env = self._get_env()
        if self._key not in _VIEWS:
            _VIEWS[self._key] = _Views(env, self.view_cache)
        return _VIEWS[self._key]

    def get_one(self, key: str) -> np.ndarray:
        return self.get([key])[0]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or key.encode("utf-8") == META_KEY:
            return False
        with self._get_env().begin(buffers=True) as txn:
            return txn.get(key.encode("utf-8")) is not None

    def __len__(self) -> int:
        return self.meta.count

    def keys(self) -> list[str]:
        """All item keys, in byte order."""
        with self._get_env().begin(buffers=True) as txn:
            return [bytes(k).decode("utf-8") for k in txn.cursor().iternext(keys=True, values=False)
                    if bytes(k) != META_KEY]

    def items(self, chunk: int = 4096) -> Iterator[tuple[list[str], np.ndarray]]:
        """Iterate ``(keys, float32 [n, dim])`` chunks in key order (for exports)."""
        with self._get_env().begin(buffers=True) as txn:
            pairs = ((bytes(k), bytes(v)) for k, v in txn.cursor() if bytes(k) != META_KEY)
            while batch := list(islice(pairs, chunk)):
                keys = [k.decode("utf-8") for k, _ in batch]
                rows = np.frombuffer(b"".join(v for _, v in batch), self._np_dtype).reshape(-1, self.dim)
                check_finite(self.path, keys, rows)
                yield keys, rows.astype(np.float32)

    def to_array(self, keys: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
        """Load the whole store (or ``keys``) into RAM: ``(keys, float32 [n, dim])``."""
        if keys is not None:
            return list(keys), self.get(keys)
        chunks = list(self.items())
        all_keys = [k for ks, _ in chunks for k in ks]
        return all_keys, (np.concatenate([v for _, v in chunks]) if chunks else np.empty((0, self.dim), np.float32))

    def check(self, dim: int | None = None, model: str | None = None) -> None:
        """Raise a :class:`LearnError` when the store's dimension or model differs from what the caller expects."""
        if dim is not None and int(dim) != self.dim:
            raise LearnError(f"item store {self.path} holds {self.dim}-d vectors (model {self.meta.model}) but "
                             f"{dim}-d were expected; re-embed with the right --llm or change the model input dim")
        if model is not None and model != self.meta.model:
            raise LearnError(f"item store {self.path} was built with model {self.meta.model!r}, not {model!r}")

    def __repr__(self) -> str:
        return f"ItemStore({str(self.path)!r}, count={self.meta.count}, dim={self.dim}, dtype={self.meta.dtype})"


def _to_float32(half: np.ndarray, chunk: int = 1 << 14) -> np.ndarray:
    """float16 -> float32 through torch's vectorised (F16C) copy, ~6x faster than ``ndarray.astype`` here.

    Copied in chunks below torch's parallel grain size: each copy stays on the calling thread, so a busy machine's
    sleeping OpenMP workers never delay a data-loading call.
    """
    out = np.empty(half.shape, np.float32)
    if half.size:
        import torch

        src = torch.from_numpy(np.ascontiguousarray(half).reshape(-1).view(np.int16)).view(torch.float16)
        dst = torch.from_numpy(out.reshape(-1))
        for i in range(0, src.numel(), chunk):
            dst[i : i + chunk].copy_(src[i : i + chunk])
    return out


class StoreWriter:
    """Write vectors into a work LMDB and rename it to ``path`` on :meth:`finalize`.

    By default the work folder is a fresh temporary sibling of ``path`` that is deleted if the writer is left without
    finalizing. With ``work_dir`` the folder is persistent (created or reopened, kept on errors): a resumable run
    writes batches as they finish and a rerun sees them in :meth:`done_keys`.

    Reserved bookkeeping keys (:meth:`reserve`, :meth:`put_record`, e.g. a run configuration) are kept out of the
    counts and removed at :meth:`finalize`.
    """

    def __init__(self, path: str | Path, dtype: str = "float32", *, work_dir: str | Path | None = None,
                 overwrite: bool = False):
        if dtype not in DTYPES:
            raise LearnError(f"store dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
        self.path = Path(path)
        self.dtype = dtype
        self.overwrite = overwrite
        self.persistent = work_dir is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a temporary folder gets the umask-based mode, not mkdtemp's 0700
        self.work = make_temp_dir(self.path) if work_dir is None else Path(work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.dim: int | None = None
        self._reserved: set[bytes] = {META_KEY}
        # metasync=False: each commit is still atomic and survives a killed process (ACI, not D on power loss)
        self._env = lmdb.open(str(self.work), map_size=_INITIAL_MAP_SIZE, subdir=True, meminit=False, metasync=False)
        self._env.set_mapsize(max(self._env.info()["map_size"], _INITIAL_MAP_SIZE))
        self._finalized = False

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._finalized:
            self.abort()

    def _write(self, fn) -> None:
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    fn(txn)
                return
            except lmdb.MapFullError:
                self._env.set_mapsize(self._env.info()["map_size"] * 2)

    def reserve(self, key: bytes) -> None:
        """Declare a bookkeeping key (kept out of counts and removed at finalize)."""
        self._reserved.add(key)

    def put_record(self, key: bytes, value: bytes) -> None:
        self.reserve(key)
        self._write(lambda txn: txn.put(key, value))

    def put_many(self, keys: Sequence[str], array: np.ndarray) -> None:
        """Write one batch in one transaction (committed, so it survives a crash of the process)."""
        array = np.asarray(array)
        if array.ndim != 2 or array.shape[0] != len(keys):
            raise LearnError(f"put_many: expected a [{len(keys)}, dim] array, got shape {array.shape}")
        if self.dim is None:
            self.dim = int(array.shape[1])
        elif array.shape[1] != self.dim:
            raise LearnError(f"put_many: vectors of dim {array.shape[1]} in a store of dim {self.dim}")
        with np.errstate(over="ignore"):  # an overflow is reported below, naming the items
            rows = np.ascontiguousarray(array, dtype=DTYPES[self.dtype])
        # after the cast: a float16 store overflows above 65504
        self._refuse_non_finite(keys, rows, "; float16 holds values up to 65504" if self.dtype == "float16" else "")
        pairs = [(_encode_key(k), rows[i].tobytes()) for i, k in enumerate(keys)]
        self._write(lambda txn: txn.cursor().putmulti(pairs))

    def put_raw(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        """Write already-encoded (key, value) pairs (same dtype and dim) in one transaction."""
        pairs = list(pairs)
        if pairs:
            sizes = {len(v) for _, v in pairs}
            if len(sizes) != 1:
                raise LearnError(f"{self.path}: put_raw values of different sizes {sorted(sizes)}")
            keys = [bytes(k).decode("utf-8", "replace") for k, _ in pairs]
            rows = np.frombuffer(b"".join(v for _, v in pairs), DTYPES[self.dtype]).reshape(len(pairs), -1)
            self._refuse_non_finite(keys, rows)
        self._write(lambda txn: txn.cursor().putmulti(pairs))

    def _refuse_non_finite(self, keys: Sequence[str], rows: np.ndarray, hint: str = "") -> None:
        if bad := _non_finite(keys, rows):
            raise LearnError(f"{self.path}: refusing to write non-finite (NaN/Inf) vectors for {len(bad)} items "
                             f"(e.g. {_names(bad)}{hint})")

    def copy_from(self, txn: lmdb.Transaction, keep: Callable[[bytes], bool], chunk: int = 4096) -> None:
        """Copy the records of another store's read transaction whose key passes ``keep``, ``chunk`` at a time."""
        pairs = ((bytes(k), bytes(v)) for k, v in txn.cursor() if keep(bytes(k)))
        while batch := list(islice(pairs, chunk)):
            self.put_raw(batch)

    def delete_many(self, keys: Iterable[str]) -> None:
        enc = [k.encode("utf-8") for k in keys]
        self._write(lambda txn: [txn.delete(k) for k in enc])

    def done_keys(self) -> set[str]:
        with self._env.begin(buffers=True) as txn:
            return {bytes(k).decode("utf-8") for k in txn.cursor().iternext(keys=True, values=False)
                    if bytes(k) not in self._reserved}

    def count(self) -> int:
        with self._env.begin() as txn:
            reserved = sum(txn.get(k) is not None for k in self._reserved)
        return self._env.stat()["entries"] - reserved

    def finalize(self, meta: StoreMeta | dict | None = None) -> Path:
        """Drop bookkeeping keys, write ``__meta__`` (count, dim, dtype filled in) and rename into place."""
        if self.dim is None:  # a resumed run: the size of the vectors already written
            with self._env.begin() as txn:
                size = next((len(v) for k, v in txn.cursor() if k not in self._reserved), None)
            if size is None:
                raise LearnError(f"refusing to finalize an empty item store {self.path}")
            self.dim = size // DTYPES[self.dtype].itemsize
        meta = StoreMeta(**meta) if isinstance(meta, dict) else (meta or StoreMeta(dim=0, dtype=self.dtype, count=0))
        meta.dim, meta.dtype = self.dim, self.dtype
        meta.created = meta.created or time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._write(lambda txn: [txn.delete(k) for k in self._reserved - {META_KEY}])
        meta.count = self.count()
        self._write(lambda txn: txn.put(META_KEY, meta.to_json()))
        self._env.sync(True)
        self._env.close()
        if self.path.exists() and not self.overwrite:
            raise LearnError(f"{self.path} already exists (pass --overwrite to replace it)")
        replace_dir(self.work, self.path)
        self._finalized = True
        self.meta = meta
        return self.path

    def abort(self) -> None:
        """Close; a temporary work folder is deleted, a persistent one is kept for resuming."""
        try:
            self._env.close()
        finally:
            if not self.persistent:
                shutil.rmtree(self.work, ignore_errors=True)


def write_store(path: str | Path, keys: Sequence[str], array: np.ndarray, meta: StoreMeta | dict | None = None,
                dtype: str = "float32", overwrite: bool = False, chunk: int = 8192) -> Path:
    """Write a whole store at once (built in a temporary folder, renamed into place)."""
    if len(set(keys)) != len(keys):
        raise LearnError("write_store: duplicate item keys")
    with StoreWriter(path, dtype=dtype, overwrite=overwrite) as w:
        for i in range(0, len(keys), chunk):
            w.put_many(keys[i:i + chunk], array[i:i + chunk])
        return w.finalize(meta)
