"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

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
