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

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"


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
    if (load := load_avg()) is not None:
        info["load_avg_1m"] = load
    return info


def load_avg() -> float | None:
    """The 1-minute load average, rounded to 0.01 (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


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
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling of ``path``, then rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def merge_previous(path: Path, rows: list[dict[str, Any]], notes: str, info: dict[str, Any],
                   key=None) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    """``--append``: the rows of the earlier result file ``path`` (minus those whose ``key(row)`` a new row has)
    followed by ``rows``; the notes and machine of both runs are kept. Without ``path``: the arguments unchanged."""
    if not path.exists():
        return rows, notes, info
    prev = json.loads(path.read_text())
    for r in prev["rows"]:
        r.setdefault("run_command", prev["command"])
    mine = {key(r) for r in rows} if key else set()
    kept = [r for r in prev["rows"] if not key or key(r) not in mine]
    first = prev["notes"]
    if not first.startswith("First run (") and " || Appended run (" not in first:
        first = f"First run ({prev['command']}): {first}"
    notes = f"{first} || Appended run ({command()}, {info.get('torch_threads')} threads): {notes}"
    return kept + rows, notes, {**prev["machine"], "appended_run": info}


MiB = 1 << 20


def best(f, reps: int, before=None) -> float:
    """Best wall time of ``reps`` calls of ``f()``, in seconds (``before()``, untimed, ahead of each call)."""
    times = []
    for _ in range(reps):
        if before is not None:
            before()
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def gemm_peak(n: int, reps: int, dtype_name: str = "float32") -> float:
    """Best FLOP/s of an n x n by n x n matmul into a preallocated output (one untimed warm-up call first)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b, out = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype), torch.empty(n, n, dtype=dtype)
    torch.matmul(a, b, out=out)
    return 2.0 * n**3 / best(lambda: torch.matmul(a, b, out=out), reps)


def model_config(name: str, **overrides: Any):
    """The ``model:`` section of ``configs/<name>.yaml`` as a ``ModelConfig``, with ``overrides`` applied."""
    import yaml

    from learn.model import ModelConfig

    cfg = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())["model"]
    cfg = {k: v for k, v in cfg.items() if k in ModelConfig.__dataclass_fields__}
    return ModelConfig(**{**cfg, **overrides})


def export_rev(rev: str, dest: Path) -> str:
    """Extract ``learn/`` of git revision ``rev`` into ``dest`` (for ``--compare``); returns its short sha."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    archive = subprocess.run(["git", "archive", rev, "learn"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return sha


def run_json_child(script: str | Path, argv: list[str], env: dict[str, str], what: str,
                   python: str = sys.executable, cwd: Path = ROOT) -> dict[str, Any]:
    """Run ``python script *argv`` with ``env`` added to the environment; the JSON object on its last stdout line.
    A failure exits with ``what`` and the end of the child's stderr."""
    proc = subprocess.run([python, str(script), *argv], env=dict(os.environ, **env), capture_output=True, text=True,
                          cwd=str(cwd))
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


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
