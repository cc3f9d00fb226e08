"""Elastic restarts through the launchers: a 2-process gloo run whose worker is killed with SIGKILL is restarted by
torchrun (MAX_RESTARTS=1), resumes from the newest checkpoint and ends with the same weights, bit for bit, as an
uninterrupted run; a launch that fails ends with the worker's one-line error."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from learn.checkpoint import list_steps
from learn.launch import _LauncherFilter
from tests.conftest import ROOT, TINY_MODEL, make_tiny_corpus, make_tiny_dataset

HANG_GUARD_S = 900  # only stops a hung run from blocking the suite; nothing here measures speed


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("restart")
    data, store = make_tiny_dataset(tmp)
    return make_tiny_corpus(tmp, data, store), store


def _pretrain(corpus, out: Path, name: str, max_restarts: int, *extra: str) -> subprocess.Popen:
    corpus_dir, store = corpus
    env = dict(os.environ, NPROC="2", MAX_RESTARTS=str(max_restarts), PYTHON=sys.executable, OMP_NUM_THREADS="1",
               WANDB_MODE="disabled", LEARN_DIST_TIMEOUT="300")
    args = [*TINY_MODEL, "model.input_dim=16", f"log.output_dir={out}", f"log.run_name={name}", "log.progress=false",
            f"data.pretrain_corpus={corpus_dir}", f"data.pretrain_store={store}", "data.dataset=", "data.store=",
            "data.min_seq_len=3", "data.num_workers=0", "train.batch_size=4", "train.epochs=4",  # 5 steps/epoch
            "ckpt.save_every_steps=2", "ckpt.keep_last_n=2", *extra]
    return subprocess.Popen(["bash", str(ROOT / "run_pretrain.sh"), *args], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    """Exit code, stdout, stderr."""
    try:
        out, err = proc.communicate(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the run hung; its stderr:\n{err[-3000:]}")
    return proc.returncode, out, err


def _worker(launcher: int, rank: int) -> int | None:
    """pid of the torchrun worker with RANK=rank below the launcher's process, via /proc."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    for pid in parents:
        p = pid
        while p in parents and p != launcher:
            p = parents[p]
        if p != launcher or pid == launcher:
            continue
        try:
            env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID" in b"".join(env):
            return pid
    return None


def _final_weights(run: Path) -> tuple[int, dict[str, torch.Tensor]]:
    step = max(list_steps(run / "checkpoints"))
    return step, load_file(run / "checkpoints" / f"step-{step:08d}" / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    rc, _, err = _finish(_pretrain(corpus, out, "whole", 0))
    assert rc == 0, err[-3000:]
    return _final_weights(out / "whole")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc")
@pytest.mark.parametrize("victim", [1, 0])
def test_killed_worker_is_restarted_and_ends_equal(corpus, uninterrupted, tmp_path, victim):
    proc = _pretrain(corpus, tmp_path, "killed", 1)
    first = tmp_path / "killed" / "checkpoints" / "step-00000002"  # mid-epoch, dropout on
    killed = None
    while killed is None and proc.poll() is None:
        if first.exists():
            pid = _worker(proc.pid, victim)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed = pid
        time.sleep(0.02)
    rc, out, err = _finish(proc)
    assert killed is not None, f"the run ended before a worker could be killed:\n{err[-3000:]}"
    assert rc == 0, err[-3000:]
    assert f"(pid: {killed})" in err and "resumed from" in out + err, out[-3000:]
    step, weights = _final_weights(tmp_path / "killed")
    ref_step, ref = uninterrupted
    assert step == ref_step == 20
    assert weights.keys() == ref.keys()
    assert all(torch.equal(weights[k], ref[k]) for k in ref)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc")
def test_killed_worker_without_restarts_ends_with_one_line(corpus, tmp_path):
    proc = _pretrain(corpus, tmp_path, "norestart", 0)
    killed = None
    while killed is None and proc.poll() is None:
        if (tmp_path / "norestart" / "checkpoints" / "step-00000002").exists():
            killed = _worker(proc.pid, 1)
            if killed is not None:
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    rc, _, err = _finish(proc)
    assert killed is not None, err[-3000:]
    assert rc == 1
    assert err.strip().splitlines()[-1].startswith("error: rank 1 was killed by SIGKILL"), err[-3000:]
    assert "ChildFailedError" not in err and "Root Cause" not in err


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc")
@pytest.mark.parametrize("target,sig", [("launcher", signal.SIGTERM), ("rank 1", signal.SIGUSR1)])
def test_stop_signal_at_two_ranks_then_resume_equals_uninterrupted(corpus, uninterrupted, tmp_path, target, sig):
    """A scheduler's signal to the launcher (passed on by torchrun to every rank) or to one rank only: the ranks agree
    on the step to stop at, checkpoint it and the launch exits 75 with the "stopped by signal" line last; the same
    command resumes and ends with the uninterrupted run's weights, bit for bit."""
    proc = _pretrain(corpus, tmp_path, "stopped", 0)
    first = tmp_path / "stopped" / "checkpoints" / "step-00000002"
    sent = False
    while not sent and proc.poll() is None:
        if first.exists():
            pid = proc.pid if target == "launcher" else _worker(proc.pid, 1)
            if pid is not None:
                os.kill(pid, sig)
                sent = True
        time.sleep(0.02)
    rc, _, err = _finish(proc)
    assert sent, f"the run ended before the signal could be sent:\n{err[-3000:]}"
    assert rc == 75, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"stopped by signal {sig.name} at step ") and "resume with the same command" in last, last
    assert "Traceback" not in err and "ChildFailedError" not in err
    stopped_at = int(last.split(" at step ")[1].split(",")[0])
    assert 2 <= stopped_at < 20 and max(list_steps(tmp_path / "stopped" / "checkpoints")) == stopped_at
    rc, out, err = _finish(_pretrain(corpus, tmp_path, "stopped", 0))  # the same command
    assert rc == 0 and "resumed from" in out + err, err[-3000:]
    step, weights = _final_weights(tmp_path / "stopped")
    ref_step, ref = uninterrupted
    assert step == ref_step == 20 and weights.keys() == ref.keys()
    assert all(torch.equal(weights[k], ref[k]) for k in ref)


def test_launcher_bad_input_ends_with_the_workers_error_line(corpus, tmp_path):
    rc, _, err = _finish(_pretrain(corpus, tmp_path, "bad", 0, f"data.pretrain_corpus={tmp_path / 'missing'}"))
    assert rc == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:") and "missing" in last, err[-3000:]
    assert "Traceback" not in err and "ChildFailedError" not in err


# torchrun's output when a worker exits 2 (trimmed): its traceback and table are dropped, the error line comes last
TORCHRUN_FAILURE = """\
+ torchrun --standalone --nproc-per-node 2 -m learn finetune
error: runs/x: no model.safetensors found
W1201 00:23:15.404000 6258 api.py:1028] Sending process 6312 closing signal SIGTERM
E1201 00:23:15.438000 6258 api.py:1002] failed (exitcode: 2) local_rank: 0 (pid: 6311) of binary: python
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "torch/distributed/launcher/api.py", line 383, in launch_agent
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
learn FAILED
------------------------------------------------------------
Failures:
[1]:
  rank      : 1 (local_rank: 1)
  exitcode  : -15 (pid: 6312)  (SIGTERM)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-01_00:23:15
  rank      : 0 (local_rank: 0)
  exitcode  : 2 (pid: 6311)
============================================================
"""


def _filtered(text: str, rc: int = 1) -> tuple[str, str, int]:
    out = io.StringIO()
    filt = _LauncherFilter(out)
    for line in text.splitlines(keepends=True):
        filt.line(line)
    filt.flush()
    last, code = filt.summary(rc)
    return out.getvalue(), last, code


def test_filter_drops_torchrun_traceback_and_keeps_the_error_line():
    shown, last, code = _filtered(TORCHRUN_FAILURE)
    assert last == "error: runs/x: no model.safetensors found" and code == 2
    assert "Traceback" not in shown and "Root Cause" not in shown and "error: runs/x" in shown


def test_filter_keeps_a_workers_traceback_and_names_its_exception():
    worker = ("Traceback (most recent call last):\n  File \"learn/train.py\", line 1, in fit\n    boom()\n"
              "ValueError: boom\n")
    shown, last, code = _filtered(worker + TORCHRUN_FAILURE.replace("error: runs/x: no model.safetensors found\n", "")
                                  .replace("exitcode  : 2 (pid: 6311)", "exitcode  : 1 (pid: 6311)"))
    assert worker in shown and "ChildFailedError" not in shown
    assert last == "error: rank 0 exited with code 1: ValueError: boom" and code == 1


def test_filter_names_a_signal_and_passes_other_failures_through():
    _, last, code = _filtered(TORCHRUN_FAILURE.replace("error: runs/x: no model.safetensors found\n", "")
                              .replace("exitcode  : 2 (pid: 6311)", "exitcode  : -9 (pid: 6311)"))
    assert last.startswith("error: rank 0 was killed by SIGKILL") and code == 1
    other = "Traceback (most recent call last):\n  File \"run.py\", line 9\n    x()\nOSError: no port\n"
    shown, last, code = _filtered(other, rc=1)
    assert shown == other and last == "error: torchrun failed (exit code 1): OSError: no port" and code == 1


def test_filter_says_which_signal_stopped_torchrun():
    stopped = ("W1201 02:15:57.372000 16144 api.py:753] Received 15 death signal, shutting down workers\n"
               "Traceback (most recent call last):\n  File \"api.py\", line 86, in _terminate_process_handler\n"
               "    raise SignalException(f\"Process {os.getpid()} got signal: {sigval}\", sigval=sigval)\n"
               "torch.distributed.elastic.multiprocessing.api.SignalException: Process 16097 got signal: 15\n")
    shown, last, code = _filtered(stopped)
    assert "Traceback" not in shown and "death signal" in shown
    assert last == "error: stopped by SIGTERM; the workers were stopped too" and code == 143


def test_filter_ends_a_stopped_launch_with_the_stop_line_and_exit_code_75():
    stop = ("stopped by signal SIGTERM at step 3, checkpoint runs/x/checkpoints/step-00000003 written: resume with the "
            "same command (exit code 75)\n")
    signalled = ("W1201 02:15:57.372000 16144 api.py:753] Received 15 death signal, shutting down workers\n" + stop +
                 "Traceback (most recent call last):\n  File \"api.py\", line 86, in _terminate_process_handler\n"
                 "    raise SignalException(f\"Process {os.getpid()} got signal: {sigval}\", sigval=sigval)\n"
                 "torch.distributed.elastic.multiprocessing.api.SignalException: Process 16097 got signal: 15\n")
    shown, last, code = _filtered(signalled)  # torchrun was signalled: the rank's line stays the last one shown
    assert shown.endswith(stop) and last == "" and code == 75
    one_rank = stop + TORCHRUN_FAILURE.replace("error: runs/x: no model.safetensors found\n", "").replace(
        "exitcode  : 2 (pid: 6311)", "exitcode  : 75 (pid: 6311)")  # only a rank got it: torchrun reports the exit
    shown, last, code = _filtered(one_rank)
    assert last == stop.strip() and code == 75 and "ChildFailedError" not in shown
