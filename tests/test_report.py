"""benchmarks/report.py renders RESULTS.md from quality.md, hand_recorded.md and a results folder, deterministically."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_report():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_result(path: Path, name: str, rows, notes="") -> None:
    machine = {"cpu": "Fake CPU 9000", "cpus": 2, "torch": "2.13.0", "torch_threads": 2, "load_avg_1m": 1.5}
    doc = {"name": name, "command": f".venv/bin/python benchmarks/bench_{name}.py --x 1", "machine": machine,
           "git": "abc1234", "date": "2026-11-28 03:00:00 UTC", "rows": rows, "notes": notes}
    (path / f"{name}.json").write_text(json.dumps(doc))


def test_report_renders_fake_results(tmp_path):
    report = load_report()
    res = tmp_path / "results"
    res.mkdir()
    fake_result(res, "rank", [{"case": "sci", "users_per_s": 4321.123, "bound_share": 0.7412},
                              {"case": "1M", "users_per_s": 81.0, "peak_rss_MiB": 612.5, "extra": 3}],
                notes="ranks are counts")
    fake_result(res, "alpha", [{"table": "speed", "a": 1}, {"table": "memory", "b": 2.5}, {"table": "speed", "a": 3}])
    quality = tmp_path / "quality.md"
    quality.write_text("## Quality\n\n| model | NDCG |\n|---|---|\n| x | 0.06 |\n")
    hand = tmp_path / "hand.md"
    hand.write_text("<!-- intro -->\n\n<!-- superseded-by: rank -->\n## Ranking speed\n\nold rows\n\n"
                    "<!-- superseded-by: embed store -->\n## CEX\n\nold cex\n")
    out = tmp_path / "RESULTS.md"
    assert report.main(["--results", str(res), "--quality", str(quality), "--hand", str(hand), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Measured results\n")
    assert "GENERATED FILE" in text and "bash benchmarks/run_all.sh" in text
    assert "| model | NDCG |\n|---|---|\n| x | 0.06 |" in text  # quality.md verbatim
    assert "old rows" not in text and "old cex" in text  # rank JSON supersedes its hand rows, CEX stays
    assert '"CEX"' in text
    # one section per JSON, in name order, with machine, date, git rev, command, table and notes
    assert text.index("## alpha") < text.index("## rank")
    sec = text[text.index("## rank"):]
    assert "- machine: 2 x Fake CPU 9000, torch 2.13.0 with 2 threads, load average 1.5 at start" in sec
    assert "- date: 2026-11-28 03:00:00 UTC, git rev `abc1234`" in sec
    assert "- command: `.venv/bin/python benchmarks/bench_rank.py --x 1`" in sec
    assert "| case | users_per_s | bound_share | peak_rss_MiB | extra |\n|---|---|---|---|---|" in sec
    assert "| sci | 4,321 | 0.741 |  |  |" in sec
    assert "| 1M | 81 | | 612.5 | 3 |".replace("| |", "|  |") in sec
    assert "ranks are counts" in sec
    alpha = text[text.index("## alpha"):text.index("## rank")]
    assert "**speed**\n\n| a |\n|---|\n| 1 |\n| 3 |\n\n**memory**\n\n| b |\n|---|\n| 2.5 |" in alpha
    # deterministic, and --check agrees
    assert report.render(res, quality, hand) == text
    assert report.main(["--results", str(res), "--quality", str(quality), "--hand", str(hand), "--out", str(out),
                        "--check"]) == 0
    out.write_text(text + "x")
    assert report.main(["--results", str(res), "--quality", str(quality), "--hand", str(hand), "--out", str(out),
                        "--check"]) == 1


def test_report_without_results(tmp_path):
    report = load_report()
    quality = tmp_path / "quality.md"
    quality.write_text("## Quality\n")
    text = report.render(tmp_path / "none", quality, None)
    assert "## Quality" in text and "# Benchmarks" not in text


def test_report_names_the_script_a_recorded_command_was_merged_into(tmp_path):
    report = load_report()
    res = tmp_path / "results"
    res.mkdir()
    fake_result(res, "epoch", [{"system": "LEARN", "epoch_s": 70.8}])
    text = report.render(res, tmp_path / "none.md")
    assert ("- command: `.venv/bin/python benchmarks/bench_epoch.py --x 1` (now `benchmarks/bench_train.py --epoch`)"
            in text)
