"""`learn embed --add`: new items join an existing store with the store's own settings (tiny random BERT, offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from learn.cex import embed_dataset
from learn.cex import main as embed_main
from learn.data.store import ItemStore
from learn.errors import LearnError
from tests.conftest import run_cli
from tests.test_cex import make_dataset, make_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("add")
    bert = make_model(tmp / "bert")
    full = make_dataset(tmp / "full", 12)
    meta = json.loads((full / "meta_data.json").read_text())
    keys = list(meta)
    for name, part in (("old", keys[:8]), ("new", keys[6:])):  # new overlaps old by two items
        (tmp / name).mkdir()
        (tmp / name / "meta_data.json").write_text(json.dumps({k: meta[k] for k in part}))
    embed_dataset(full, tmp / "ref", llm=str(bert), batch_size=4)
    return tmp, bert, keys


def test_add_items_equals_full_embedding(setup, tmp_path):
    tmp, bert, keys = setup
    store = tmp_path / "store"
    embed_dataset(tmp / "old", store, llm=str(bert), batch_size=4)
    before = ItemStore(store).get(keys[:8]).copy()
    assert embed_main(["--data", str(tmp / "new"), "--out", str(store), "--add", "--batch-size", "3"]) == 0
    s = ItemStore(store)
    assert len(s) == 12 and s.meta.model == str(bert) and s.meta.extra["added"][0]["count"] == 4
    assert np.array_equal(s.get(keys[:8]), before)  # existing vectors copied bit for bit
    assert np.allclose(s.get(keys), ItemStore(tmp / "ref").get(keys), atol=1e-5)  # as a full re-embedding
    assert not [p for p in tmp_path.iterdir() if p.name != "store"]  # built in a temporary sibling, renamed
    # a second --add finds nothing to do and leaves the store alone
    assert embed_main(["--data", str(tmp / "new"), "--out", str(store), "--add"]) == 0
    assert len(ItemStore(store)) == 12 and len(ItemStore(store).meta.extra["added"]) == 1


def test_add_refuses_other_settings(setup, tmp_path):
    tmp, bert, _ = setup
    store = tmp_path / "store"
    embed_dataset(tmp / "old", store, llm=str(bert), batch_size=4)
    for flags, needle in ((["--layer", "1"], "layer -1; --layer 1"), (["--llm", "some/other-llm"], "--llm"),
                          (["--max-length", "64"], "max_length 500"), (["--store-dtype", "float16"], "dtype")):
        proc = run_cli("embed", "--data", str(tmp / "new"), "--out", str(store), "--add", *flags)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], \
            (flags, proc.stderr)
    assert len(ItemStore(store)) == 8  # untouched
    with pytest.raises(LearnError, match="not found"):
        embed_main(["--data", str(tmp / "new"), "--out", str(tmp_path / "missing"), "--add"])
