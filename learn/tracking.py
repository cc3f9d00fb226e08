"""Metric logging on rank 0: stdout lines, ``metrics.jsonl`` and wandb (WANDB_MODE respected), one interface."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any


class MetricLogger:
    """``log(metrics, step)``, ``summary(metrics)``, ``close()``; a no-op on non-main ranks."""

    def __init__(self, run_dir: Path, config: dict[str, Any], enabled: bool = True, use_wandb: bool = True,
                 project: str = "LEARN", name: str = "", entity: str = ""):
        self.enabled = enabled
        self.run = self.jsonl = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
        if use_wandb and os.environ.get("WANDB_MODE", "").lower() != "disabled":
            import wandb

            id_file = run_dir / "wandb_id.txt"  # same wandb run across resumes
            run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
            id_file.write_text(run_id)
            self.run = wandb.init(project=project, name=name or None, entity=entity or None, config=config,
                                  dir=str(run_dir), id=run_id, resume="allow")
            self.run.define_metric("global_step")
            self.run.define_metric("*", step_metric="global_step")

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
