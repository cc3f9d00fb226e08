"""Training curves and results charts as PNG: ``python -m learn plot RUN [RUN ...] --out curves.png``.

For each run folder, ``metrics.jsonl`` gives the training loss (``train/loss``) and the validation metric
(``val/ndcg@10`` by default, ``--metric``) per epoch; several runs are overlaid, labelled by folder name (or
``--labels``). The selected checkpoint (the run's best validation step: ``metrics.json`` ``best_step``, else
``best/val_metrics.json``) is marked with a star. A resumed run's repeated steps count once (the last record).
:func:`results_chart` draws ``learn eval --plot``: our metrics beside the published numbers for the dataset.
Rendered with matplotlib's Agg backend (no display needed); files are written atomically.
"""

from __future__ import annotations

import bisect
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from learn.errors import ArgumentParser, DataError, LearnError


@dataclass
class Curves:
    name: str
    loss: list[tuple[float, float]] = field(default_factory=list)  # (epoch, train loss)
    val: list[tuple[float, float, int]] = field(default_factory=list)  # (epoch, metric, step)
    selected: tuple[float, float] | None = None  # (epoch, metric) of the selected checkpoint


def _records(path: Path) -> list[dict]:
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # a torn last line of a killed run
                break
            raise DataError(path, f"line {n}: not JSON") from None
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _selected_step(run: Path) -> int | None:
    for path, key in ((run / "metrics.json", "best_step"), (run / "best" / "val_metrics.json", "step")):
        try:
            step = json.loads(path.read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(step, int) and step >= 0:
            return step
    return None


def read_curves(run: str | Path, metric: str = "ndcg@10", name: str | None = None) -> Curves:
    """Loss and validation ``metric`` per epoch from ``run/metrics.jsonl`` (x = epoch; step when no epoch logged)."""
    run = Path(run)
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise DataError(path, "file not found (a training run folder holds metrics.jsonl)")
    train: dict[int, dict] = {}
    val: dict[int, float] = {}
    for rec in _records(path):
        step = rec.get("global_step")
        if not isinstance(step, int):
            continue
        if "train/loss" in rec:
            train[step] = rec
        if f"val/{metric}" in rec:
            val[step] = float(rec[f"val/{metric}"])
    steps = sorted(train)

    def epoch_at(step: int) -> float:
        # the epoch of the last training record at or before this step (validation runs at an epoch's end)
        i = bisect.bisect_right(steps, step)
        return float(train[steps[i - 1]].get("epoch", step)) if i else float(step)

    c = Curves(name or run.resolve().name)
    c.loss = [(float(train[s].get("epoch", s)), float(train[s]["train/loss"])) for s in steps]
    c.val = [(epoch_at(s), v, s) for s, v in sorted(val.items())]
    if not c.loss and not c.val:
        raise DataError(path, f"no train/loss nor val/{metric} records")
    best = _selected_step(run)
    hit = [(e, v) for e, v, s in c.val if s == best]
    if hit:
        c.selected = hit[-1]
    elif c.val and best is None and (run / "best").is_dir():
        c.selected = max(c.val, key=lambda t: t[1])[:2]
    return c


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out: str | Path) -> Path:
    """Lay out ``fig``, write it as PNG to ``out`` atomically and close it."""
    from learn.io import atomic_write_bytes

    buf = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)


def plot_curves(curves: list[Curves], out: str | Path, metric: str = "ndcg@10") -> Path:
    """Two panels (training loss, validation ``metric``) with every run overlaid; selected checkpoints starred."""
    plt = _pyplot()
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, c in enumerate(curves):
        color = colors[i % len(colors)]
        if c.loss:
            ax_loss.plot(*zip(*c.loss, strict=True), color=color, label=c.name, lw=1.4)
        if c.val:
            e, v, _ = zip(*c.val, strict=True)
            ax_val.plot(e, v, color=color, marker="o", ms=3, lw=1.4, label=c.name)
        if c.selected:
            ax_val.plot(*c.selected, marker="*", ms=15, color=color, markeredgecolor="black", linestyle="none",
                        label=f"{c.name}: selected ({metric} {c.selected[1]:.4f})")
    label = metric.replace("ndcg", "NDCG").replace("recall", "Recall").replace("mrr", "MRR")
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="loss")
    ax_val.set(title=f"validation {label}", xlabel="epoch", ylabel=label)
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(plt, fig, out)


def parse_reference(text: str) -> tuple[str, dict[str, float]]:
    """``"LABEL=ndcg@10:0.067,recall@10:0.144"`` -> (label, {metric: value}): numbers measured elsewhere (e.g. a
    baseline's recorded run) to draw beside ours; a one-line error for anything else."""
    label, _, pairs = text.rpartition("=")
    values: dict[str, float] = {}
    for pair in pairs.split(","):
        name, _, value = pair.strip().partition(":")
        number = float(value) if re.fullmatch(r"\s*[0-9]*\.?[0-9]+(e-?[0-9]+)?\s*", value) else None
        if number is None or not re.fullmatch(r"(ndcg|recall)@\d+|mrr", name):
            values = {}
            break
        values[name] = number
    if not label.strip() or not values:
        raise LearnError(f"--reference: expected LABEL=METRIC:VALUE[,METRIC:VALUE...] (e.g. \"SASRec=ndcg@10:0.067,"
                         f"recall@10:0.144\"), got {text!r}")
    return label.strip(), values


def results_chart(metrics: dict, dataset: str, out: str | Path, model: str = "LEARN (ours)",
                  published: dict | None = None, source_format: str | None = None,
                  references: dict[str, dict] | None = None) -> Path:
    """Grouped bars: our ``metrics`` (as in metrics.json's test split) beside the published numbers for ``dataset``
    and the ``references`` given ({label: {metric: value}}, e.g. a baseline's recorded run)."""
    from learn.published import _METRIC_ORDER, PUBLISHED, _find_published, _metric_label

    published = PUBLISHED if published is None else published
    key = _find_published(dataset, published, source_format)
    pub = published[key]["models"] if key else {}
    names = [m for m in _METRIC_ORDER if isinstance(metrics.get(m), float)]
    if not names:
        raise LearnError("no metric to plot (expected ndcg@k / recall@k / mrr values)")
    series = ([(f"{m} (published)", vals) for m, vals in pub.items()] + list((references or {}).items())
              + [(model, metrics)])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) * max(1, len(series)) / 2 + 2), 4))
    width = 0.8 / len(series)
    for j, (label, vals) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(names))]
        ys = [float(vals[m]) if isinstance(vals.get(m), int | float) else 0.0 for m in names]
        other = label != model
        bars = ax.bar(xs, ys, width, label=label, hatch=("//" if "published" in label else "..") if other else None,
                      alpha=0.75 if other else 1.0)
        for b, m in zip(bars, names, strict=True):
            if isinstance(vals.get(m), int | float):
                ax.annotate(f"{float(vals[m]):.3f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                            va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(range(len(names)), [_metric_label(m) for m in names])
    src = f"; published: {key}" if key else "; no published numbers for this dataset"
    ax.set(title=f"{dataset}: test{src}", ylabel="value")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, out)


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="python -m learn plot", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="training run folders (each with metrics.jsonl)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--metric", default="ndcg@10", help="validation metric to plot (default ndcg@10)")
    p.add_argument("--labels", nargs="+", help="one legend label per run (default: folder names)")
    a = p.parse_args(argv)
    if a.labels and len(a.labels) != len(a.runs):
        raise LearnError(f"--labels: {len(a.labels)} labels for {len(a.runs)} runs")
    labels = a.labels or [None] * len(a.runs)
    curves = [read_curves(r, a.metric, n) for r, n in zip(a.runs, labels, strict=True)]
    out = plot_curves(curves, a.out, a.metric)
    for c in curves:
        sel = f", selected at epoch {c.selected[0]:g} ({a.metric} {c.selected[1]:.4f})" if c.selected else ""
        print(f"{c.name}: {len(c.loss)} loss points, {len(c.val)} validations{sel}")
    print(f"wrote {out}")
    return 0
