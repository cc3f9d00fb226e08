"""Who owns a run folder and which run it holds: ``<run>/.lock`` (one training process per folder), the check of a
resumed run's config against the folder's saved one (``ckpt.on_mismatch``: refuse, move the old run aside, or accept
keys that cannot change what was learnt), and a refused start that leaves nothing behind.

The trainer claims the folder (:meth:`RunFolder.claim`) before it reads or writes anything, checks it
(:meth:`RunFolder.check`) once its config is resolved, and writes ``config.yaml`` only after both passed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from learn import checkpoint as ckpt
from learn.config import retired
from learn.errors import LearnError

# config keys never compared on resume: the resume switches themselves and where the folder or its workers live
IGNORED_ON_RESUME = frozenset({"ckpt.resume", "ckpt.on_mismatch", "log.output_dir", "log.progress", "data.num_workers",
                               "train.init_partial"})
# keys ckpt.on_mismatch=accept lets a resumed run change: how long it runs, how often it validates, logs and saves,
# where it runs; never what it learns from or how (data, model, loss, optimiser, seed)
SAFE_TO_CHANGE = frozenset({"train.epochs", "train.max_steps", "train.patience", "train.eval_every",
                            "train.eval_batch_size", "train.device", "train.compile", "data.preload_store",
                            "ckpt.keep_last_n", "ckpt.save_every_epochs", "ckpt.save_every_steps"})


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def safe_to_change(key: str) -> bool:
    return key in SAFE_TO_CHANGE or key.startswith("log.")


def _short(value, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def config_differences(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """(key, saved value, current value) for every key both configs hold that differs (ignored keys left out), and
    every retired option the saved config had on (learn.config.RETIRED)."""
    old, new = _flat(saved), _flat(current)
    gone = [(k, v, "(retired)") for k, v in old.items() if k not in new and retired(k, v) is not None]
    return [(k, old[k], v) for k, v in new.items()
            if k in old and k not in IGNORED_ON_RESUME and old[k] != v
            and not (isinstance(v, int | float) and isinstance(old[k], int | float) and float(old[k]) == float(v))
            ] + gone


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<run_dir>/.lock``: one process per run folder.

    The kernel drops the lock when the holder dies (kill -9 included), so no stale lock survives a crash.
    ``created`` says whether this process made the run folder (so a refused start can remove it again).
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        self.made = [d for d in (self.run_dir, *self.run_dir.parents) if not d.exists()]  # to create, innermost first
        self.created = bool(self.made)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise LearnError(f"{self.run_dir}: exists and is not a run folder")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.close()
            if isinstance(e, BlockingIOError | PermissionError):  # EAGAIN / EWOULDBLOCK, EACCES
                raise LearnError(f"{self.run_dir} is in use by another training process (its .lock is held); wait "
                                 f"for it or pick another log.run_name") from None
            raise
        try:  # the file we locked must still be the one at the path (not unlinked by a refused start meanwhile)
            same = os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            f.close()
            raise LearnError(f"{self.run_dir} is being set up or removed by another process; try again")
        self.file = f

    def release(self, remove_folder: bool = False) -> None:
        """Unlock; ``remove_folder``: also delete the run folder when this process created it and it holds nothing
        else (a refused start leaves no trace)."""
        if self.file is None:
            return
        if remove_folder and self.created:
            with contextlib.suppress(OSError):
                self.path.unlink()  # while still locked, so no other process can hold the unlinked file
                for folder in self.made:  # innermost first; stops at the first one that is not empty
                    folder.rmdir()
        self.file.close()
        self.file = None


class RunFolder:
    """The run folder of one training process: claimed (locked, cleaned), checked against its saved run, released."""

    def __init__(self, run_dir: Path, log: Callable[[str], None] = print):
        self.run_dir = Path(run_dir)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.log = log
        self.lock: RunLock | None = None

    def claim(self) -> None:
        """Lock ``<run>/.lock`` (a second process refuses at once) and delete what a killed writer left half-done."""
        self.lock = RunLock(self.run_dir)
        gone = ckpt.remove_partial(self.ckpt_root) + ckpt.remove_partial(self.run_dir)
        if gone:
            self.log(f"removed {len(gone)} half-written folder(s) of an interrupted run: {', '.join(gone)}")

    def release(self, refused: bool = False) -> None:
        """Unlock; after a refused start also remove the folder if this process created it (and it is empty)."""
        if self.lock is not None:
            self.lock.release(remove_folder=refused)
            self.lock = None

    def saved_config(self) -> tuple[Path, dict] | None:
        """The config of the run already in the folder: its config.yaml, else its newest checkpoint's."""
        path = self.run_dir / "config.yaml"
        if not path.exists():
            latest = ckpt.latest_valid(self.ckpt_root, log=lambda _: None)
            if latest is None:
                return None
            path = latest / "config.yaml"
        try:
            saved = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            saved = None
        if not isinstance(saved, dict):
            saved = {"config.yaml": "unreadable"}
        return path, saved

    def check(self, config: dict, on_mismatch: str) -> None:
        """Resume only a run with this ``config``; else refuse (listing the keys), move it aside or accept safe keys."""
        found = self.saved_config()
        if found is None:
            return
        path, saved = found
        diff = config_differences(saved, config)
        if "config.yaml" in saved:
            diff = [("config.yaml", "unreadable", "")]
        if not diff:
            return
        unsafe = [d for d in diff if not safe_to_change(d[0])]
        listed = ", ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, a, b in (unsafe or diff))
        if on_mismatch == "accept" and not unsafe:
            self.log(f"ckpt.on_mismatch=accept: resuming {self.run_dir} with {listed}")
            return
        if on_mismatch == "fresh":
            aside = self.run_dir.with_name(f"{self.run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            old = self.lock
            os.rename(self.run_dir, aside)  # same parent: one atomic rename, nothing deleted
            if (aside / "corpus").is_dir():  # the flat pretraining corpus cache is data, not part of the old run
                self.run_dir.mkdir()
                os.rename(aside / "corpus", self.run_dir / "corpus")
            self.lock = RunLock(self.run_dir)
            old.release()
            self.log(f"ckpt.on_mismatch=fresh: {self.run_dir} held a run with another config ({listed}); moved it "
                     f"to {aside}, starting anew")
            return
        hint = ("only " + ", ".join(sorted(SAFE_TO_CHANGE)) + " and log.* may change on resume"
                if on_mismatch == "accept" else "set ckpt.on_mismatch=fresh to move it aside, ckpt.on_mismatch=accept "
                "for train.epochs/patience/eval_every, logging or saving keys")
        raise LearnError(f"{self.run_dir} holds a run with another config ({listed}; saved in {path}): not resuming "
                         f"it; use another log.run_name or {hint}")
