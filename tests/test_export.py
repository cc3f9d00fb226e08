"""`learn export`: tower vectors + FAISS index; searching it with a user's vector gives `learn recommend`'s top-k."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from learn.cli import main as cli
from tests.test_recommend import read_jsonl, store_with_new_items, tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def args(run, out, store=None, *extra):
    ckpt, data, tiny_store = run
    return ["export", "--ckpt", str(ckpt), "--data", str(data), "--store", str(store or tiny_store), "--out",
            str(out), *extra]


def assert_same_topk(ids_a, scores_a, ids_b, scores_b, tol=1e-5):
    """Same scores position by position, and the same ids wherever the score is not tied with a neighbour."""
    assert np.allclose(scores_a, scores_b, atol=tol)
    s = np.asarray(scores_a)
    for j, (a, b) in enumerate(zip(ids_a, ids_b, strict=True)):
        tied = (j > 0 and abs(s[j] - s[j - 1]) < tol) or (j + 1 < len(s) and abs(s[j] - s[j + 1]) < tol)
        assert a == b or tied, (j, ids_a, ids_b)


def test_export_index_search_matches_recommend(run, tmp_path):
    import faiss

    from learn.export import load_vectors

    out = tmp_path / "export"
    assert cli(args(run, out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "index.faiss", "item_ids.json", "items.safetensors",
                                                     "user_ids.json", "users.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    info = json.loads((out / "export.json").read_text())
    assert info["items"] == 30 and info["users"] == 40 and info["dim"] == 32 and info["index"]["type"] == "flat"
    item_ids, items = load_vectors(out, "items")
    user_ids, users = load_vectors(out, "users")
    assert items.shape == (30, 32) and users.shape == (40, 32) and len(user_ids) == 40 and len(item_ids) == 30
    recs = tmp_path / "recs.jsonl"
    assert cli(["recommend", *args(run, tmp_path / "unused")[1:7], "--all", "-k", "10", "--out", str(recs),
                "--no-progress"]) == 0
    by_user = {r["user"]: r for r in read_jsonl(recs)}
    index = faiss.read_index(str(out / "index.faiss"))
    scores, rows = index.search(users.numpy(), 10)
    for u, user in enumerate(user_ids):
        assert_same_topk([item_ids[r] for r in rows[u]], scores[u], by_user[user]["items"], by_user[user]["scores"])
    # recommend --index searches the same index with the checkpoint's user vectors
    via = tmp_path / "via.jsonl"
    assert cli(["recommend", *args(run, tmp_path / "unused")[1:7], "--user", *user_ids[:5], "-k", "10",
                "--index", str(out), "--out", str(via)]) == 0
    for r in read_jsonl(via):
        assert_same_topk(r["items"], r["scores"], by_user[r["user"]]["items"], by_user[r["user"]]["scores"])


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes(run, tmp_path, kind):
    """On 30 items HNSW and IVF (one list) are exact: same top-k as the flat index."""
    import faiss

    from learn.export import load_vectors

    out = tmp_path / kind
    assert cli(args(run, out, None, "--index", kind)) == 0
    info = json.loads((out / "export.json").read_text())
    assert info["index"]["type"] == kind and info["index"]["faiss"] in ("IndexHNSWFlat", "IndexIVFFlat")
    _, users = load_vectors(out, "users")
    _, items = load_vectors(out, "items")
    s, r = faiss.read_index(str(out / "index.faiss")).search(users.numpy(), 5)
    exact = (users @ items.T).topk(5, dim=1)
    assert np.allclose(s, exact.values.numpy(), atol=1e-5)


def test_export_includes_new_store_items(run, tmp_path):
    from learn.export import load_vectors

    _, _, store = run
    bigger = store_with_new_items(store, tmp_path / "store2", {"NEW-A": "I005"})
    out = tmp_path / "export"
    assert cli(args(run, out, bigger)) == 0
    ids, items = load_vectors(out, "items")
    assert len(ids) == 31 and ids[-1] == "NEW-A" and json.loads((out / "export.json").read_text())["new_items"] == 1
    assert np.allclose(items[-1].numpy(), items[ids.index("I005")].numpy(), atol=1e-6)  # text-only: same vector
    assert cli(args(run, tmp_path / "cat", bigger, "--catalogue-only")) == 0
    assert len(load_vectors(tmp_path / "cat", "items")[0]) == 30


def test_bad_exports_are_one_line_errors(run, tmp_path):
    from learn.export import build_index

    ckpt, data, store = run
    out = tmp_path / "export"
    assert cli(args(run, out)) == 0
    cases = {"already exists": args(run, out)}
    # an index whose vectors do not match the checkpoint's embedding size
    other = tmp_path / "other"
    other.mkdir()
    import faiss

    index, _ = build_index(np.random.default_rng(0).normal(size=(30, 8)).astype("float32"))
    faiss.write_index(index, str(other / "index.faiss"))
    (other / "item_ids.json").write_text(json.dumps([f"I{i:03d}" for i in range(30)]))
    (other / "export.json").write_text("{}")
    rec = ["recommend", "--ckpt", str(ckpt), "--data", str(data), "--store", str(store), "--user", "U1", "--index"]
    cases["index vectors have dim 8, the checkpoint's embeddings have dim 32"] = [*rec, str(other)]
    cases["not a `learn export` folder"] = [*rec, str(tmp_path)]
    cases["item store"] = args(run, tmp_path / "never", tmp_path / "no-store")
    for needle, argv in cases.items():
        buf = io.StringIO()
        with contextlib.redirect_stderr(buf):
            assert cli(argv) == 2, needle
        lines = buf.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], (needle, lines)
    assert not (tmp_path / "never").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_files_follow_the_umask(run, tmp_path):
    """Every file of an export is 644 and its folder 755 under umask 022, as the README promises for outputs
    (safetensors' own writer would make the vector files 0600)."""
    import os

    old = os.umask(0o022)
    try:
        assert cli(args(run, tmp_path / "export")) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "export").stat().st_mode & 0o7777 == 0o755
    modes = {p.name: p.stat().st_mode & 0o7777 for p in (tmp_path / "export").iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_recommend_index_refuses_an_export_older_than_the_store(run, tmp_path):
    """An export made before `embed --add` put new items in the store would never return them: refused in one line
    (and an export made with --catalogue-only likewise, unless recommend leaves them out too)."""
    out = tmp_path / "export"
    assert cli(args(run, out)) == 0
    grown = store_with_new_items(run[2], tmp_path / "grown", {"N1": "I003", "N2": "I007"})
    rec = ["recommend", *args(run, out, grown)[1:7], "--user", "U1", "--index", str(out)]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli(rec) == 2
    line = err.getvalue().strip()
    assert line.count("\n") == 0 and line.startswith(f"error: {out}: the export does not match the items ranked here")
    assert "2 of the 32 items ranked here are not in its index (e.g. 'N1'" in line and "re-run `learn export`" in line
    assert cli([*rec, "--catalogue-only"]) == 0  # the export's items are exactly the catalogue


def test_recommend_all_writes_the_titles_its_help_promises(run, tmp_path):
    recs = tmp_path / "recs.jsonl"
    assert cli(["recommend", *args(run, tmp_path / "unused")[1:7], "--all", "-k", "3", "--out", str(recs),
                "--no-progress"]) == 0
    first = read_jsonl(recs)[0]
    assert set(first) == {"user", "items", "scores", "titles"}
    assert first["titles"] == [f"item {k}" for k in first["items"]]
