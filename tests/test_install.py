"""The project installs as a package: pyproject pins the same runtime versions as requirements.txt and declares the
`learn` command, and after `bash scripts/setup.sh` both `learn` and `python -m learn` run from a folder outside the
repository (the launchers' own run from elsewhere is in tests/test_train.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from learn.cli import COMMANDS
from tests.conftest import ROOT


def _pins(lines) -> dict[str, str]:
    """name (lower case, '-' for '_') -> pinned version, from `name==version` lines."""
    found = (re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)==(\S+)\s*", line) for line in lines)
    return {m[1].lower().replace("_", "-"): m[2] for m in found if m}


def test_pyproject_pins_what_requirements_pin_and_declares_the_learn_command():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = _pins((ROOT / "requirements.txt").read_text().splitlines())
    runtime = _pins(project["dependencies"])
    tools = _pins(project["optional-dependencies"]["test"])
    assert runtime["torch"] == "2.13.0"
    assert {**runtime, **tools} == required, "pyproject.toml and requirements.txt pin different versions"
    assert project["scripts"] == {"learn": "learn.cli:main"}


def _outside(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the installed package can be found
    return subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True)


def test_learn_command_and_python_m_learn_run_from_another_folder(tmp_path):
    script = Path(sys.executable).parent / "learn"
    assert script.exists(), f"{script} missing: run bash scripts/setup.sh (it installs the project into .venv)"
    for command in ([str(script), "--help"], [sys.executable, "-m", "learn", "--help"]):
        proc = _outside(*command, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert all(name in proc.stdout for name in COMMANDS)
    proc = _outside(str(script), "no-such-command", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown command")
