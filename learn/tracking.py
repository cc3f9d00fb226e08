"""Metric logging on rank 0: stdout lines, ``metrics.jsonl`` and wandb (WANDB_MODE respected), one interface.

wandb never stops a run: with ``WANDB_MODE`` unset and no API key configured (``WANDB_API_KEY``, ``wandb login``'s
netrc entry) it logs offline into the run folder (``wandb sync`` uploads it later), and a wandb that cannot start
leaves the metrics to ``metrics.jsonl``; each case prints one notice line.
"""

from __future__ import annotations

import json
import netrc
import os
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def wandb_credentials() -> bool:
    """Whether wandb has an API key without asking: ``WANDB_API_KEY``, an identity token file, or a netrc entry for
    its host (``WANDB_BASE_URL``, default api.wandb.ai), as ``wandb login`` writes it."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode() -> tuple[str | None, str | None]:
    """(mode to pass to ``wandb.init``: None = wandb's own choice, "disabled" = no wandb; a notice line or None)."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode == "disabled":
        return "disabled", None
    if mode or wandb_credentials():
        return None, None
    return "offline", ("wandb: no API key (WANDB_API_KEY or `wandb login`) and WANDB_MODE unset: logging offline into "
                       "the run folder (`wandb sync` uploads it; WANDB_MODE=disabled or log.wandb=false turns it off)")


class MetricLogger:
    """``log(metrics, step)``, ``summary(metrics)``, ``close()``; a no-op on non-main ranks."""

    def __init__(self, run_dir: Path, config: dict[str, Any], enabled: bool = True, use_wandb: bool = True,
                 project: str = "LEARN", name: str = "", entity: str = "", notice=print):
        self.enabled = enabled
        self.run = self.jsonl = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
        mode, line = wandb_mode() if use_wandb else ("disabled", None)
        if mode == "disabled":
            return
        if line:
            notice(line)
        id_file = run_dir / "wandb_id.txt"  # same wandb run across resumes
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        try:
            import wandb

            self.run = wandb.init(project=project, name=name or None, entity=entity or None, config=config,
                                  dir=str(run_dir), id=run_id, resume="allow", mode=mode)
            self.run.define_metric("global_step")
            self.run.define_metric("*", step_metric="global_step")
        except Exception as e:  # a login prompt without a terminal, no network, a broken install: never the run
            self.run = None
            first = (str(e).strip().splitlines() or [""])[0][:200]
            notice(f"wandb: could not start ({type(e).__name__}: {first}); metrics go to {run_dir / 'metrics.jsonl'} "
                   f"only (WANDB_MODE=offline logs without an account)")
            return
        id_file.write_text(run_id)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"global_step": step, "time": round(time.time(), 3), **metrics}) + "\n")
        self.jsonl.flush()
        if self.run is not None:
            self.run.log({"global_step": step, **metrics})

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(metrics)

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()
        if self.run is not None:
            self.run.finish()
