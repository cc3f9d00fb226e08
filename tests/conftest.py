"""Shared fixtures: paths to the shared data, tiny helpers, quiet wandb."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LEARN_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared(name: str) -> Path:
    """Path of a dataset folder in ../shared/data; skips the test when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared dataset {name} not available at {path}")
    return path


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None):
    """Run ``python -m learn ...`` in a subprocess; returns the CompletedProcess."""
    import subprocess

    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "learn", *args], capture_output=True, text=True, env=full_env, cwd=cwd or ROOT
    )
