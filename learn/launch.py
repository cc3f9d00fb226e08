"""The torchrun wrapper behind scripts/launch.sh: ``python -m learn.launch <torchrun arguments>``.

torchrun's stderr passes through as it comes, except its own ChildFailedError traceback and failure table (~30
lines), which are replaced by one line at the end: the worker's ``error:`` line (or its exception, or how it died).
SIGTERM, SIGHUP and SIGUSR1 are passed on to torchrun, which passes them on to every rank (scripts/launch.sh names
SIGUSR1 among its ``--signals-to-handle``); ranks that stopped on one (:mod:`learn.preempt`) end the launch with its
exit code, 75, after their "stopped by signal" line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

from learn.errors import signal_name

# The exit code is the failed worker's when it is a plain exit code (2 for bad input, as in ``python -m learn``),
# else torchrun's; 75 when the ranks stopped on a signal and checkpointed (learn.preempt; not imported: no torch here).
_STOPPED = "stopped by signal "
_STOPPED_CODE = 75

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
        self.stopped = ""  # the "stopped by signal ..." line a rank printed (learn.preempt)
        self.last_written = ""

    def write(self, text: str) -> None:
        self.last_written = text
        self.out.write(text)
        self.out.flush()

    def line(self, text: str) -> None:
        """One complete line (with its newline)."""
        bare = text.rstrip("\n")
        prefix, body = "", bare
        if bare.startswith("[rank") and "]:" in bare:  # torch prefixes a worker's uncaught traceback with [rankN]:
            prefix, body = bare.split("]:", 1)
            body = body.removeprefix(" ")
        if body.startswith("error:"):
            self.error_line = body
        elif body.startswith(_STOPPED):
            self.stopped = body
        elif _EXCEPTION.match(body) and self.indented.get(prefix) and not body.startswith(_CHILD_FAILED):
            self.exception_line = body  # e.g. "RuntimeError: ..." after a traceback's indented source lines
        self.indented[prefix] = body[:1].isspace()
        if self.table:  # torchrun's failure table: only its "Root Cause" fields are kept
            if bare.startswith("Root Cause"):
                self.in_cause = True
            elif self.in_cause and ":" in bare:
                key, _, value = bare.partition(":")
                self.cause.setdefault(key.strip(), value.strip())
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

    def flush(self) -> None:
        if self.held:
            self.write("".join(self.held))
        self.held = None

    def summary(self, rc: int) -> tuple[str, int]:
        """The last line to print ("" for none) and the exit code, for a launch that ended with ``rc``."""
        if self.stopped and not self.error_line:  # stopped on a signal and checkpointed: its line is the last word
            return ("" if self.last_written.rstrip("\n").endswith(self.stopped) else self.stopped), _STOPPED_CODE
        code = self.cause.get("exitcode", "").split(" ")[0]
        who = f"rank {self.cause['rank'].split(' ')[0]}" if "rank" in self.cause else "a worker"
        worker_rc = int(code) if code.lstrip("-").isdigit() else None
        if worker_rc is not None and 0 < worker_rc < 256:
            rc = worker_rc
        if self.error_line:
            return self.error_line, rc
        if self.signal:
            return f"error: stopped by {signal_name(self.signal)}; the workers were stopped too", 128 + self.signal
        if worker_rc is not None and worker_rc < 0:
            how = f"was killed by {signal_name(-worker_rc)}; torchrun stopped the others (see the lines above)"
            return f"error: {who} {how}", rc
        last = f": {self.exception_line}" if self.exception_line else " (see the lines above)"
        if worker_rc is not None:
            return f"error: {who} exited with code {worker_rc}{last}", rc
        return f"error: torchrun failed (exit code {rc}){last}", rc


def launch(torchrun_args: list[str], out=None) -> int:
    """Run torchrun with ``torchrun_args``; filter its stderr as described above; return the exit code."""
    out = out or sys.stderr
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *torchrun_args],
                            stderr=subprocess.PIPE)
    for forwarded in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(forwarded, lambda signum, _frame: proc.send_signal(signum))
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
        if last:
            out.write(last + "\n")
            out.flush()
    return rc


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:]))
