"""Streamed pretraining sequences: a flat item-index file read per sample, instead of Python lists.

``load_pretrain_corpus`` + ``SequenceSamples`` hold every sequence in RAM (Python lists of key strings, then of ints,
then one numpy array per sequence): several GB for RecFormer's ~3.6M sequences, and per process. A
:class:`SequenceFile` holds the same sequences (as ``smap`` indices) in two flat files read with ``os.pread`` per
sample, so a process holds none of the corpus (the OS page cache keeps the hot parts, shared by DataLoader workers):

    <folder>/items.bin    int32 [interactions]   every sequence's item indices, concatenated
    <folder>/offsets.bin  int64 [sequences + 1]  sequence i is items[offsets[i]:offsets[i+1]]
    <folder>/meta.json    {"format": 1, "sequences", "interactions", "items", "min_len", "max_len", "source"}

:func:`build_sequence_file` converts a RecFormer ``train.json`` (a JSON list of item-key lists) in one streaming pass
(:func:`iter_json_lists` decodes one inner list at a time), so converting never holds the corpus either; only the
``smap`` (one entry per item) is in memory. :class:`StreamedSequenceSamples` is :class:`SequenceSamples` over a
:class:`SequenceFile`: the same samples for the same (seed, epoch, index), without the per-sequence arrays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from learn.data.samples import SequenceSamples
from learn.io import atomic_dir, open_maybe_gz, resolve

FORMAT = 1
_READ = 1 << 20


def iter_json_lists(path: str | Path, chunk: int = _READ) -> Iterator[list]:
    """Yield the elements of a top-level JSON list one at a time, reading ``chunk`` characters at a time."""
    path = Path(path)
    dec = json.JSONDecoder()
    with open_maybe_gz(path) as f:
        buf, pos, eof = "", 0, False

        def more() -> bool:
            nonlocal buf, pos, eof
            data = f.read(chunk)
            buf, pos, eof = buf[pos:] + data, 0, not data
            return bool(data)

        def skip_ws() -> None:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf) or not more():
                    return

        skip_ws()
        if pos >= len(buf) or buf[pos] != "[":
            raise ValueError(f"{path}: expected a JSON list")
        pos += 1
        skip_ws()
        if pos < len(buf) and buf[pos] == "]":
            return
        while True:
            while True:
                try:
                    value, end = dec.raw_decode(buf, pos)
                    # a value ending exactly at the buffer end may be a truncated number: read on to be sure
                    if end < len(buf) or eof:
                        break
                except json.JSONDecodeError:
                    if eof:
                        raise ValueError(f"{path}: bad JSON near character {pos}") from None
                more()
            pos = end
            yield value
            skip_ws()
            if pos >= len(buf):
                raise ValueError(f"{path}: unterminated JSON list")
            if buf[pos] == "]":
                return
            if buf[pos] != ",":
                raise ValueError(f"{path}: expected ',' or ']' between list elements")
            pos += 1
            skip_ws()


def build_sequence_file(train_json: str | Path, smap: Mapping[str, int], out: str | Path, min_len: int = 1,
                        max_len: int | None = None, batch: int = 1 << 16) -> Path:
    """Convert ``train_json`` (lists of item keys) into a :class:`SequenceFile` folder ``out``, streaming.

    Sequences outside ``[min_len, max_len]`` are dropped, as the trainer's length filter does. The folder is built
    next to ``out`` and renamed into place, so ``out`` is either absent or complete.
    """
    hi = max_len or 1 << 62
    n_seq = n_int = 0
    with atomic_dir(out, overwrite=True) as tmp, open(tmp / "items.bin", "wb") as fi, \
            open(tmp / "offsets.bin", "wb") as fo:
        fo.write(np.zeros(1, dtype="<i8").tobytes())
        ids: list[int] = []
        lens: list[int] = []

        def flush() -> None:
            nonlocal n_int
            fi.write(np.asarray(ids, dtype="<i4").tobytes())
            fo.write((np.cumsum(lens, dtype=np.int64) + n_int).astype("<i8").tobytes())
            n_int += len(ids)
            ids.clear()
            lens.clear()

        for seq in iter_json_lists(train_json):
            if not min_len <= len(seq) <= hi:
                continue
            try:
                ids.extend(smap[k] for k in seq)
            except KeyError as e:
                raise KeyError(f"{train_json}: sequence {n_seq}: item {e.args[0]!r} is not in smap") from None
            lens.append(len(seq))
            n_seq += 1
            if len(lens) >= batch:
                flush()
        flush()
        meta = {"format": FORMAT, "sequences": n_seq, "interactions": n_int, "items": len(smap), "min_len": min_len,
                "max_len": max_len, "source": str(train_json)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return Path(out)


class SequenceFile:
    """Read-only sequences of item indices (see the module docstring), read with ``os.pread`` per sequence.

    Nothing is mapped or cached in the process: a sequence costs two small reads (served from the page cache once
    warm), so the process's memory does not depend on the corpus size. Picklable: file descriptors are opened
    lazily in each process (and shared safely after a fork: ``pread`` has no file position).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{self.folder}: unknown sequence-file format {self.meta.get('format')!r}")
        self._fds: tuple[int, int] | None = None

    def _open(self) -> tuple[int, int]:
        if self._fds is None:
            self._fds = (os.open(self.folder / "offsets.bin", os.O_RDONLY),
                         os.open(self.folder / "items.bin", os.O_RDONLY))
        return self._fds

    def __len__(self) -> int:
        return int(self.meta["sequences"])

    def __getitem__(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        fo, fi = self._open()
        lo, hi = np.frombuffer(os.pread(fo, 16, index * 8), dtype="<i8").tolist()
        return np.frombuffer(os.pread(fi, (hi - lo) * 4, lo * 4), dtype="<i4").astype(np.int64)

    def lengths(self) -> np.ndarray:
        """Every sequence's length (reads the whole offsets file: 8 bytes per sequence)."""
        return np.diff(np.fromfile(self.folder / "offsets.bin", dtype="<i8"))

    def close(self) -> None:
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
            self._fds = None

    def __del__(self) -> None:
        try:
            self.close()
        except (OSError, AttributeError, TypeError):
            pass

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "meta": self.meta, "_fds": None}


def open_sequence_file(corpus_dir: str | Path, smap: Mapping[str, int], min_len: int = 1,
                       max_len: int | None = None, cache: str | Path | None = None) -> SequenceFile:
    """The :class:`SequenceFile` of ``corpus_dir/train.json`` under the length filter, built on first use.

    ``cache`` defaults to ``corpus_dir/train.seq-<min>-<max>``; it is rebuilt when its meta disagrees.
    """
    corpus_dir = Path(corpus_dir)
    src = resolve(corpus_dir / "train.json")
    folder = Path(cache) if cache else corpus_dir / f"train.seq-{min_len}-{max_len or 'inf'}"
    try:
        sf = SequenceFile(folder)
        if (sf.meta["items"], sf.meta["min_len"], sf.meta["max_len"]) == (len(smap), min_len, max_len):
            return sf
    except (OSError, ValueError, KeyError):
        pass
    return SequenceFile(build_sequence_file(src, smap, folder, min_len, max_len))


class StreamedSequenceSamples(SequenceSamples):
    """:class:`SequenceSamples` over a :class:`SequenceFile`: each sample reads its sequence from disk."""

    def _hold(self, sequences: SequenceFile) -> SequenceFile:
        return sequences  # kept on disk: SequenceSamples would copy every sequence into its own array

    def _lengths(self) -> np.ndarray:
        return self.sequences.lengths()
