"""torch.distributed from the torchrun environment: init (gloo on CPU, nccl on CUDA), rank helpers, barriers."""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from learn.errors import LearnError

        raise LearnError("device=cuda requested but no CUDA device is available (use train.device=cpu)")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init(requested_device: str = "auto", timeout_default: float = 1800.0) -> DistInfo:
    """Initialise the process group when launched by torchrun; otherwise a single-process DistInfo."""
    if not launched_by_torchrun():
        return DistInfo(device=pick_device(requested_device))
    return join(pick_device(requested_device, int(os.environ.get("LOCAL_RANK", 0))), timeout_default)


def join(device: torch.device | str, timeout_default: float = 1800.0) -> DistInfo:
    """Join torchrun's process group (nccl on CUDA, else gloo) on a device already chosen; the collective timeout is
    LEARN_DIST_TIMEOUT seconds, else ``timeout_default``. Without torchrun: a single-process DistInfo."""
    device = torch.device(device)
    if not launched_by_torchrun():
        return DistInfo(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        timeout = collective_timeout(timeout_default)
        dist.init_process_group(backend_for(device), store=_round_store(rank, world, timeout), rank=rank,
                                world_size=world, timeout=timeout, **kwargs)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def world() -> tuple[int, int]:
    """(world size, rank); (1, 0) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def collective_timeout(default: float = 1800.0) -> datetime.timedelta:
    """How long a collective (and the store) waits for a silent peer: LEARN_DIST_TIMEOUT seconds, else ``default``
    (1800 for training; CEX passes 6 h).

    A peer that dies on this node is noticed at once (its sockets close and torchrun stops the group); the
    timeout only bounds a peer that hangs or whose machine vanished. Keep it above the longest rank-0-only
    stretch (validation, checkpoint writing), which the other ranks spend waiting in a barrier.
    """
    from learn.errors import LearnError

    raw = os.environ.get("LEARN_DIST_TIMEOUT", str(default))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise LearnError(f"LEARN_DIST_TIMEOUT={raw!r}: expected a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


def _round_store(rank: int, world: int, timeout: datetime.timedelta) -> dist.Store:
    """torchrun's store, with keys private to this restart round where torchrun shares one store across rounds.

    By default torchrun (c10d rendezvous, ``--standalone``) keeps one TCP store for the whole job and hands it to
    every round of workers. Without a per-round prefix, workers restarted after a failure read the dead round's
    gloo addresses (``Gloo connectFullMesh failed ... Connection refused``) or wait for keys that are never written
    again (a hang in a futex). ``TORCHELASTIC_RESTART_COUNT`` names the round, but only with one agent (one node):
    an agent restarted by another node's failure does not count it. Several nodes therefore need a fresh store
    per round, ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (scripts/launch.sh sets it when NNODES > 1).
    """
    store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world, timeout=timeout))
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if not shared or os.environ.get("GROUP_WORLD_SIZE", "1") != "1":
        return store
    return dist.PrefixStore(f"learn/round{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj):
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup() -> None:
    if dist.is_initialized():
        dist.barrier()  # a rank tearing gloo down while another still talks to it aborts the process
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------- the launcher
# scripts/launch.sh runs ``python -m learn.distributed <torchrun arguments>``: torchrun with its stderr passed through
# as it comes, except torchrun's own ChildFailedError traceback and failure table (~30 lines), which are replaced by
# one line at the end: the worker's ``error:`` line (or its exception, or how it died). The exit code is the
# failed worker's when it is a plain exit code (2 for bad input, as in ``python -m learn``), else torchrun's.

_AGENT_TRACEBACK = "Traceback (most recent call last):"
_CHILD_FAILED = "torch.distributed.elastic.multiprocessing.errors.ChildFailedError"
_SIGNALLED = re.compile(r"torch\.distributed\.elastic\.multiprocessing\.api\.SignalException: .* got signal: (\d+)")
_EXCEPTION = re.compile(r"[A-Za-z_][\w.]*(: .*)?$")  # "ValueError: ...", "KeyboardInterrupt"


class _LauncherFilter:
    def __init__(self, out) -> None:
        self.out = out
        self.held: list[str] | None = None  # lines of a traceback block not yet known to be torchrun's own
        self.table = False  # inside torchrun's failure table (dropped)
        self.error_line = ""  # the last worker "error: ..." line
        self.exception_line = ""  # the last exception line that ended a traceback
        self.cause: dict[str, str] = {}  # torchrun's "Root Cause" fields
        self.in_cause = False
        self.indented: dict[str, bool] = {}  # per [rankN]: prefix: was the previous line indented
        self.signal = 0  # the signal that stopped torchrun (Ctrl-C, SIGTERM), when it said so

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def line(self, text: str) -> None:
        """One complete line (with its newline)."""
        bare = text.rstrip("\n")
        prefix, body = "", bare
        if bare.startswith("[rank") and "]:" in bare:  # torch prefixes a worker's uncaught traceback with [rankN]:
            prefix, body = bare.split("]:", 1)
            body = body[1:] if body.startswith(" ") else body
        if body.startswith("error:"):
            self.error_line = body
        elif _EXCEPTION.match(body) and self.indented.get(prefix) and not body.startswith(_CHILD_FAILED):
            self.exception_line = body  # e.g. "RuntimeError: ..." after a traceback's indented source lines
        self.indented[prefix] = body[:1].isspace()
        if self.table:
            self._table_line(bare)
        elif self.held is None:
            if bare == _AGENT_TRACEBACK:  # torchrun's own, or a worker's before the process group existed
                self.held = [text]
            else:
                self.write(text)
        else:
            self.held.append(text)
            if bare.startswith(_CHILD_FAILED):  # torchrun's: drop it and the table that follows
                self.held, self.table = None, True
            elif m := _SIGNALLED.match(bare):  # torchrun stopped by a signal: drop its traceback
                self.held, self.signal = None, int(m.group(1))
            elif self.exception_line == body or len(self.held) > 500:  # a worker's traceback: show it
                self.flush()

    def _table_line(self, bare: str) -> None:
        if bare.startswith("Root Cause"):
            self.in_cause = True
        elif self.in_cause and ":" in bare:
            key, _, value = bare.partition(":")
            self.cause.setdefault(key.strip(), value.strip())

    def flush(self) -> None:
        if self.held:
            self.write("".join(self.held))
        self.held = None

    def summary(self, rc: int) -> tuple[str, int]:
        """The last line to print and the exit code, for a launch that ended with ``rc``."""
        code = self.cause.get("exitcode", "").split(" ")[0]
        who = f"rank {self.cause['rank'].split(' ')[0]}" if "rank" in self.cause else "a worker"
        worker_rc = int(code) if code.lstrip("-").isdigit() else None
        if worker_rc is not None and 0 < worker_rc < 256:
            rc = worker_rc
        if self.error_line:
            return self.error_line, rc
        if self.signal:
            import signal

            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"error: stopped by {name}; the workers were stopped too", 128 + self.signal
        if worker_rc is not None and worker_rc < 0:
            import signal

            try:
                how = f"was killed by {signal.Signals(-worker_rc).name}"
            except ValueError:
                how = f"was killed by signal {-worker_rc}"
            return f"error: {who} {how}; torchrun stopped the others (see the lines above)", rc
        last = f": {self.exception_line}" if self.exception_line else " (see the lines above)"
        if worker_rc is not None:
            return f"error: {who} exited with code {worker_rc}{last}", rc
        return f"error: torchrun failed (exit code {rc}){last}", rc


def launch(torchrun_args: list[str], out=None) -> int:
    """Run torchrun with ``torchrun_args``; filter its stderr as described above; return the exit code."""
    import signal
    import subprocess
    import sys

    out = out or sys.stderr
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *torchrun_args],
                            stderr=subprocess.PIPE)

    def forward(signum, _frame):
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGHUP, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches torchrun directly (same process group)
    filt = _LauncherFilter(out)
    partial, shown = b"", 0  # the incomplete last line; how many of its bytes were written already
    fd = proc.stderr.fileno()
    while chunk := os.read(fd, 65536):
        *lines, partial = (partial + chunk).split(b"\n")
        for raw in lines:
            if shown:  # the rest of a progress bar whose start was written already
                filt.write(raw[shown:].decode("utf-8", "replace") + "\n")
                shown = 0
            else:
                filt.line(raw.decode("utf-8", "replace") + "\n")
        if b"\r" in partial[shown:] and filt.held is None and not filt.table:  # progress bars redraw with "\r"
            end = partial.rindex(b"\r") + 1
            filt.write(partial[shown:end].decode("utf-8", "replace"))
            shown = end
    if partial[shown:]:
        filt.line(partial[shown:].decode("utf-8", "replace") + "\n")
    filt.flush()
    rc = proc.wait()
    if rc != 0:
        last, rc = filt.summary(rc)
        out.write(last + "\n")
        out.flush()
    return rc


if __name__ == "__main__":
    import sys

    sys.exit(launch(sys.argv[1:]))
