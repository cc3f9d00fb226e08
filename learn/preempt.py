"""Graceful stop on a scheduler's signal: SIGTERM (Kubernetes, Slurm at the time limit) or SIGUSR1 (Slurm's
``--signal=USR1@<seconds>``), sent to the launcher, to torchrun or to any rank.

The handler only records the signal. The trainer asks :meth:`GracefulStop.agreed` after every optimizer step (and at
every epoch end): under torchrun an all-reduce of the flag, so every rank stops at the same step even when only one
of them got the signal. It then writes that step's checkpoint, prints :data:`MESSAGE` and exits with
:data:`EXIT_CODE` (75, sysexits' EX_TEMPFAIL: "try again later"), which tells a preemption from a crash (1), bad input
(2) or a kill (128 + N). Running the same command again resumes from that checkpoint, bit-identical to a run that was
never stopped. ``scripts/launch.sh`` makes torchrun pass SIGUSR1 on as it does SIGTERM; torchrun waits
``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` seconds for the ranks to finish their step and checkpoint before it kills them.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch

from learn.errors import signal_name

EXIT_CODE = 75
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
MESSAGE = "stopped by signal"


class Stopped(Exception):
    """Raised on every rank once they agreed to stop and checkpointed; ``line`` is what rank 0 prints."""

    def __init__(self, signum: int, step: int, folder: Path):
        self.signum, self.step, self.folder = signum, step, folder
        super().__init__(self.line)

    @property
    def line(self) -> str:
        return (f"{MESSAGE} {signal_name(self.signum)} at step {self.step}, checkpoint {self.folder} written: resume "
                f"with the same command (exit code {EXIT_CODE})")


class GracefulStop:
    """``with GracefulStop() as stop:`` records SIGTERM / SIGUSR1 instead of dying (the previous handlers come back
    on exit); only in the main thread, where Python runs signal handlers."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    def _record(self, signum: int, _frame) -> None:
        if not self.signum:
            self.signum = signum

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def agreed(self, distributed: bool, device: torch.device) -> int:
        """The signal to stop on (0: go on), the same on every rank: a collective under torchrun, so every rank must
        call it at the same points."""
        if not distributed:
            return self.signum
        flag = torch.tensor([self.signum], dtype=torch.int64, device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())


def ignore_in_worker(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a signal sent to the whole process group leaves the loader's workers running;
    the training process decides when to stop."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
