"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import argparse
from pathlib import Path


class LearnError(Exception):
    """An error caused by bad input or configuration, reported without a traceback."""

    exit_code = 2


class DataError(LearnError):
    """A dataset file is missing or malformed; the message names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UsageError(LearnError):
    """A bad command line (unknown flag, missing argument, ``--ks abc``): one ``error:`` line, exit 2."""


class ArgumentParser(argparse.ArgumentParser):
    """Drop-in :class:`argparse.ArgumentParser` whose errors are one ``error: PROG: ...`` line and exit code 2.

    ``error()`` raises :class:`UsageError` instead of printing the usage block, so :func:`learn.cli.guarded` reports
    it like any other bad input. Subparsers made with ``add_subparsers()`` inherit the class.
    """

    @classmethod
    def from_doc(cls, prog: str, doc: str) -> ArgumentParser:
        """A parser whose description is the first paragraph of a module's ``doc`` and its epilog the rest."""
        return cls(prog=prog, description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                   epilog="\n\n".join(doc.split("\n\n")[1:]))

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {' '.join(message.split())} (see --help)")


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``signal N`` for a number that names no signal (exit and stop messages)."""
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
