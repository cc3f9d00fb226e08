"""Atomic file and folder writes (temp + rename) and strict JSON reads with one-line errors.

Outputs get the modes of a plain ``open``/``mkdir`` under the user's umask (0o644/0o755 with umask 022), never
mkstemp's 0600 / mkdtemp's 0700, so a group can read them on a shared cluster. A failed write deletes its temporary
file or folder (and any parent folder it created) and names the output in its OSError (``ENOSPC``, ``EFBIG``).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from learn.errors import DataError


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` would briefly set it for every thread)."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status", encoding="ascii") as f:
        return int(next((line for line in f if line.startswith("Umask:")), "").split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def dir_mode() -> int:
    """Mode of a new folder under the current umask (0o755 with umask 022): what ``os.mkdir`` would give."""
    return 0o777 & ~current_umask()


def make_temp_dir(path: Path) -> Path:
    """``tempfile.mkdtemp`` next to ``path`` with the usual umask-based mode (mkdtemp itself makes 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        os.chmod(tmp, dir_mode())
    except BaseException:
        os.rmdir(tmp)
        raise
    return tmp


def missing_parents(folder: str | Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    p = Path(folder)
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def remove_empty(created: list[Path]) -> None:
    """Remove the folders :func:`missing_parents` listed, deepest first, as long as they are empty."""
    with contextlib.suppress(OSError):  # the first one that is not empty (or is gone) stops the walk up
        for p in created:
            p.rmdir()


def check_output_dir(path: str | Path, what: str = "output folder") -> None:
    """Refuse (one-line DataError) a folder to be written that is a file, or that lies under a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(path, f"exists and is not a folder (the {what} must be a folder)")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise DataError(parent, f"is not a folder, so the {what} {path} cannot be created")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _parents_of(path: Path) -> Iterator[None]:
    """Create ``path``'s missing parent folders; on failure remove them again and give an OSError without a file
    name (``f.write`` leaves it unnamed) the name of ``path``."""
    created = missing_parents(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield
    except BaseException as e:
        remove_empty(created)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator:
    """A file object for ``path`` ("w": UTF-8 text, "wb": bytes) written to a temporary sibling and renamed into
    place (after fsync) when the block succeeds; on failure the temporary file goes and the output is untouched."""
    path = Path(path)
    with _parents_of(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": "\n"} if "b" not in mode else {})) as f:
                os.fchmod(fd, 0o666 & ~current_umask())  # what open(path, "w") would give, not mkstemp's 0600
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = None) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False))


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder (same parent, so the final rename never crosses filesystems); on success
    rename it to ``path``, on failure delete it."""
    path = Path(path)
    with _parents_of(path):
        tmp = make_temp_dir(path)
        try:
            yield tmp
            if path.exists() and not overwrite:
                raise FileExistsError(f"{path} already exists")
            replace_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def replace_dir(src: Path, dst: Path) -> None:
    """Move the finished folder ``src`` to ``dst``; an existing ``dst`` is moved aside, then removed."""
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}") if dst.exists() else None
    if old:
        os.replace(dst, old)
    os.replace(src, dst)
    if old:
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(dst.parent)


def open_maybe_gz(path: str | Path, mode: str = "rt") -> Any:
    """``gzip.open`` for a ``.gz`` path, ``open`` otherwise; text modes read UTF-8."""
    opener = gzip.open if Path(path).suffix == ".gz" else open
    return opener(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve(path: str | Path) -> Path:
    """``path``, or ``path.gz`` when only the gzipped file exists."""
    path = Path(path)
    gz = path.with_name(path.name + ".gz")
    return gz if not path.exists() and gz.exists() else path


def read_json(path: str | Path, unique_keys: bool = False) -> Any:
    """Read a JSON file (or ``path.gz`` when only that exists); a missing file, bad JSON and, with ``unique_keys``,
    a duplicate object key raise a one-line DataError."""
    path = resolve(path)

    def unique(pairs: list[tuple[str, Any]]) -> dict:
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise DataError(path, f"duplicate key {k!r}")
            seen.add(k)
        return dict(pairs)

    try:
        with open_maybe_gz(path) as f:
            return json.load(f, object_pairs_hook=unique if unique_keys else None)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e.reason})") from None
    except (OSError, EOFError) as e:  # a folder, no permission, a damaged .gz
        raise DataError(path, f"cannot read: {getattr(e, 'strerror', None) or e}") from None
