"""What every benchmark shares: the machine description, the exact command, and one JSON result file per benchmark.

Each ``benchmarks/bench_*.py`` prints its table and calls :func:`write_result`, which stores
``benchmarks/results/<name>.json`` = ``{"name", "command", "machine", "date", "rows", "notes"}``; a row is a flat dict
of what was measured (numbers unrounded, units in the key names). ``benchmarks/report.py`` renders RESULTS.md from
these files, so a rerun of one benchmark refreshes its section and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def command() -> str:
    """The command line that produced this run, with the interpreter path made relative to the repository."""
    exe = sys.executable
    root = str(Path(__file__).resolve().parents[1]) + os.sep
    exe = exe[len(root):] if exe.startswith(root) else exe
    argv = [a[len(root):] if a.startswith(root) else a for a in sys.argv]
    return shlex.join([exe, *argv])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict[str, Any]:
    """CPU model and count, torch version and threads, GPU name when one is visible, and the load at start."""
    info: dict[str, Any] = {"cpu": _cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info


def machine_line(info: dict[str, Any] | None = None) -> str:
    info = info or machine()
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return (f"{info['cpus']} x {info['cpu']}{gpu}, torch {info.get('torch', '?')} with "
            f"{info.get('torch_threads', '?')} threads, load average {info.get('load_avg_1m', '?')} at start")


def git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_result(name: str, rows: list[dict[str, Any]], notes: str = "", info: dict[str, Any] | None = None,
                 out_dir: Path | None = None, quick: bool = False) -> Path:
    """Write ``results/<name>.json`` atomically and return its path.

    ``quick`` (a ``--quick`` smoke run) marks the notes and writes to ``out/quick`` unless ``out_dir`` is given, so
    quick runs stay out of RESULTS.md.
    """
    if quick:
        notes = "QUICK smoke run: sizes too small to mean anything. " + notes
        out_dir = out_dir or RESULTS_DIR.parent / "out" / "quick"
    out_dir = out_dir or RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"name": name, "command": command(), "machine": info or machine(), "git": git_rev(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "rows": rows, "notes": notes}
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")
    return path


MiB = 1 << 20


def best(f, reps: int) -> float:
    """Best wall time of ``reps`` calls of ``f()``, in seconds."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def add_child_args(ap: argparse.ArgumentParser) -> None:
    """The hidden flags of a peak-memory child (``--child N --users U --dim D [--no-rank]``)."""
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--users", type=int, default=1000, help=argparse.SUPPRESS)
    ap.add_argument("--dim", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--no-rank", action="store_true", help=argparse.SUPPRESS)


def peak_rss(script: str, n_items: int, users: int, dim: int, rank: bool) -> tuple[float, float]:
    """(max RSS MiB, wall s of the ranking) of ``script --child ...`` run under /usr/bin/time -v."""
    cmd = ["/usr/bin/time", "-v", sys.executable, script, "--child", str(n_items), "--users", str(users),
           "--dim", str(dim)] + ([] if rank else ["--no-rank"])
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    wall = float(re.search(r"child_wall_s=([\d.]+)", p.stdout).group(1))
    return kb * 1024 / MiB, wall
