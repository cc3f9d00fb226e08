"""Record one finished baseline run: results/<dataset>_<model>.json plus a row appended to RESULTS.md (stdlib only)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from learn.io import atomic_write_json, atomic_write_text  # noqa: E402

MD_HEADER = (
    "# Baseline results (RecBole 1.2.1 on our splits)\n\n"
    "Appended by run_recbole.py; one row per finished run. Full ranking over all items, no history masking;\n"
    "valid = best epoch on our val rows, test = that checkpoint on our test rows. Details and the exact command:\n"
    "results/<dataset>_<model>.json.\n\n"
    "| finished (UTC) | dataset | model | best/run epochs | valid NDCG@10 | test NDCG@10 | test Recall@10 "
    "| test NDCG@50 | test Recall@50 | test MRR@10 | wall | threads | result file |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def _fmt(result: dict | None, key: str) -> str:
    return "—" if not result or key not in result else f"{result[key]:.4f}"


def write_results(record: dict, results_dir: Path, results_md: Path) -> Path:
    """Write the JSON record and append its row to RESULTS.md (both atomically)."""
    out = results_dir / f"{record['dataset']}_{record['model']}.json"
    atomic_write_json(out, record, indent=2)
    test, valid = record["test"], record["valid"]
    try:
        rel = out.relative_to(results_md.parent)
    except ValueError:
        rel = out
    row = (f"| {record['finished_utc']} | {record['dataset']} | {record['model']} | "
           f"{record['best_epoch']}/{record['epochs_run']} | {_fmt(valid, 'ndcg@10')} | {_fmt(test, 'ndcg@10')} | "
           f"{_fmt(test, 'recall@10')} | {_fmt(test, 'ndcg@50')} | {_fmt(test, 'recall@50')} | "
           f"{_fmt(test, 'mrr@10')} | {record['wall_time_s'] / 60:.1f} min | {record['threads']} | {rel} |\n")
    text = results_md.read_text(encoding="utf-8") if results_md.exists() else MD_HEADER
    atomic_write_text(results_md, text + row)
    return out
