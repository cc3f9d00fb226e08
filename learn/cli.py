"""The one way in: ``python -m learn <command> [args]``.

Each command lives in its own module and exposes ``main(argv: list[str]) -> int | None``; the table below
imports it lazily so ``--help`` stays fast. A :class:`learn.errors.LearnError` (bad input; bad flags when the command
uses :class:`learn.errors.ArgumentParser`) or an ``OSError`` such as a full disk becomes one ``error:`` line on stderr
and exit code 2 (see :func:`guarded`).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import select
import sys

from learn.errors import ArgumentParser, UsageError  # noqa: F401 (re-exported: the parser every command should use)

# command -> (module:function, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("learn.data.prepare:main", "convert recformer/recbole/unisrec/lcrec/ml-100k data to LEARN format"),
    "stats": ("learn.data.stats:main", "users, items, interactions and sequence-length distribution of a dataset"),
    "embed": ("learn.cex:main", "content extraction: frozen LLM item embeddings into an LMDB item store"),
    "store": ("learn.data.store_cli:main", "inspect or merge item stores; import/export the seed's .txt/.pkl/LMDB"),
    "pretrain": ("learn.train:main_pretrain", "pretrain the preference-alignment towers (torchrun for several ranks)"),
    "finetune": ("learn.train:main_finetune", "finetune on one downstream dataset with a full-catalogue softmax"),
    "eval": ("learn.evaluate:main", "full-ranking evaluation of a checkpoint (NDCG/Recall@k, MRR)"),
    "recommend": ("learn.recommend:main", "top-k items for users or a given history (--user/--history/--all)"),
    "export": ("learn.export:main", "user and item tower vectors (safetensors) + a FAISS index of the items"),
    "plot": ("learn.plot:main", "training loss and validation NDCG@10 per epoch of one or more runs (PNG)"),
    "text-baseline": ("learn.baselines:main", "no-training baseline: cosine of history item vectors vs every item"),
    "download": ("learn.hub:main", "download checkpoints/data (HTTP with resume + sha256, hf://, Google Drive)"),
    "convert-official": ("learn.convert:main", "convert the authors' epochN.pt checkpoint to a LEARN checkpoint"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(map(len, COMMANDS))
        print("usage: learn <command> [args]   (or python -m learn ...; learn <command> --help)\n\ncommands:")
        print("\n".join(f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r} (one of: {', '.join(COMMANDS)}; see python -m learn --help)",
              file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    return guarded(lambda args: getattr(importlib.import_module(module_name), func_name)(args), rest)


def guarded(func, argv: list[str] | None = None) -> int:
    """Run ``func(argv)`` and turn every expected failure into one ``error:`` line on stderr.

    - :class:`learn.errors.LearnError` (bad input, bad flags via :class:`learn.errors.ArgumentParser`): its exit
      code (2);
    - an ``OSError`` with an errno (disk full, file too large, permission denied, read-only filesystem, ...): one line
      naming the file, exit 2 (writers in :mod:`learn.io` delete their temporary files first);
    - a closed standard output (``learn stats D | head -1``): quiet, exit 141 like a process killed by SIGPIPE;
    - Ctrl-C: exit 130.
    """
    from learn.errors import LearnError

    try:
        rc = func(argv)
        sys.stdout.flush()  # a closed pipe or a full disk behind stdout shows up here, not at interpreter exit
    except LearnError as e:
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        on_stdout = e.filename is None and _stdout_dead()
        if on_stdout:
            _silence_stdout()
            if isinstance(e, BrokenPipeError):
                return 141  # the reader went away (head, less): nothing to report
        if e.errno is None:
            raise
        print(f"error: {_one_line(_os_error_line(e, on_stdout))}", file=sys.stderr)
        return 2
    return int(rc or 0)


def _one_line(text: str) -> str:
    """The promise is one stderr line: a message with line breaks (or a file name holding one) is joined."""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip()) or "failed"


def _stdout_dead() -> bool:
    """True when stdout is a pipe whose reader has gone (or stdout cannot even be flushed)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # stdout without a file descriptor (tests)
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        if any(ev & select.POLLERR for _, ev in poller.poll(0)):
            return True
    try:
        sys.stdout.flush()
        return False
    except OSError:
        return True


def _silence_stdout() -> None:
    """Point a broken stdout at /dev/null, so the flush at interpreter exit does not print 'Exception ignored'."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _os_error_line(e: OSError, on_stdout: bool) -> str:
    what = e.strerror or os.strerror(e.errno)
    hint = {errno.ENOSPC: "free some space", errno.EFBIG: "the file size limit (ulimit -f) was reached",
            errno.EDQUOT: "the disk quota is used up", errno.EROFS: "choose a writable location",
            errno.EACCES: "check the permissions", errno.EPERM: "check the permissions"}.get(e.errno)
    where = "standard output" if on_stdout else ""
    if e.filename is not None:
        where = os.fsdecode(e.filename) + (f" -> {os.fsdecode(e.filename2)}" if e.filename2 is not None else "")
    return (f"{where}: " if where else "") + what + (f" ({hint})" if hint else "")
