"""`learn plot` (training curves) and `learn eval --plot` (results bar chart) render valid PNG files."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from learn.cli import main as cli
from tests.test_recommend import tiny_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_width=300):
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    img = matplotlib.image.imread(str(path))
    assert img.ndim == 3 and img.shape[1] >= min_width and img.shape[0] > 100
    assert img.std() > 0  # something was drawn


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def test_curves_of_several_runs(run, tmp_path, capsys):
    from learn.plot import read_curves

    ckpt = run[0]
    curves = read_curves(ckpt)
    assert len(curves.loss) == 3 and len(curves.val) == 3 and [e for e, _ in curves.loss] == [1.0, 2.0, 3.0]
    best_step = json.loads((ckpt / "metrics.json").read_text())["best_step"]
    (sel,) = [(e, v) for e, v, s in curves.val if s == best_step]
    assert curves.selected == sel and curves.selected[1] == max(v for _, v, _ in curves.val)
    # a resumed run appends: a repeated step counts once, a torn last line is ignored
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    lines = (ckpt / "metrics.jsonl").read_text().splitlines()
    (resumed / "metrics.jsonl").write_text("\n".join(lines + lines[:2]) + '\n{"global_step": 9, "tr')
    assert len(read_curves(resumed).loss) == 3 and read_curves(resumed).selected is None
    out = tmp_path / "curves.png"
    assert cli(["plot", str(ckpt), str(resumed), "--labels", "tiny", "tiny-resumed", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny: 3 loss points, 3 validations, selected at epoch" in printed
    assert_png(out)


def test_eval_plot_writes_results_chart(run, tmp_path):
    ckpt, data, store = run
    png = tmp_path / "results.png"
    assert cli(["eval", "--ckpt", str(ckpt), "--data", str(data), "--store", str(store), "--split", "test",
                "--out", str(tmp_path / "ev"), "--name", "Scientific", "--plot", str(png)]) == 0
    assert_png(png)


def test_results_chart_without_published_numbers(tmp_path):
    from learn.plot import results_chart

    png = results_chart({"ndcg@10": 0.05, "recall@10": 0.1, "mrr": 0.04, "users": 10}, "my-data", tmp_path / "r.png")
    assert_png(png)


def test_plot_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "metrics.jsonl").write_text('{"global_step": 1, "other": 2}\n')
    for needle, argv in {"metrics.jsonl: file not found": [str(tmp_path / "empty")],
                         "no train/loss nor val/ndcg@10 records": [str(tmp_path / "junk")]}.items():
        buf = io.StringIO()
        with contextlib.redirect_stderr(buf):
            assert cli(["plot", *argv, "--out", str(tmp_path / "x.png")]) == 2
        lines = buf.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines
    assert not (tmp_path / "x.png").exists()


def test_results_chart_draws_references_beside_ours(run, tmp_path, monkeypatch):
    """The demo's chart shows the recorded SASRec numbers it prints (eval --reference), not LEARN alone."""
    import learn.plot

    ckpt, data, store = run
    drawn = {}
    save = learn.plot._save

    def keep(plt, fig, out):
        drawn["labels"] = fig.axes[0].get_legend_handles_labels()[1]
        drawn["heights"] = [round(b.get_height(), 4) for b in fig.axes[0].patches]
        return save(plt, fig, out)

    monkeypatch.setattr(learn.plot, "_save", keep)
    png = tmp_path / "results.png"
    assert cli(["eval", "--ckpt", str(ckpt), "--data", str(data), "--store", str(store), "--split", "test",
                "--out", str(tmp_path / "ev"), "--name", "MovieLens-100K", "--plot", str(png),
                "--reference", "RecBole SASRec (recorded)=ndcg@10:0.0670,recall@10:0.1442"]) == 0
    assert_png(png)
    assert drawn["labels"] == ["RecBole SASRec (recorded)", "LEARN (ours)"]
    assert 0.067 in drawn["heights"] and 0.1442 in drawn["heights"]


@pytest.mark.parametrize("argv,needle", [
    (["--reference", "SASRec=ndcg@10:high", "--plot", "{tmp}/r.png"], "--reference: expected LABEL=METRIC:VALUE"),
    (["--reference", "SASRec=ndcg@10:0.07"], "--reference draws beside the results chart: pass --plot PNG too"),
])
def test_eval_bad_reference_is_one_line(run, tmp_path, argv, needle):
    ckpt, data, store = run
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        assert cli(["eval", "--ckpt", str(ckpt), "--data", str(data), "--store", str(store), "--out",
                    str(tmp_path / "ev"), *[a.replace("{tmp}", str(tmp_path)) for a in argv]]) == 2
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not list(tmp_path.iterdir())
