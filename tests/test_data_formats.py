"""Item text template and HTML clean-up; canonical dataset load/validate/write; pretrain corpus; stats."""

from __future__ import annotations

import collections
import json
import pickle
from pathlib import Path

import pytest

from learn.data import stats
from learn.data.formats import (
    SeqDataset,
    leave_one_out,
    load_dataset,
    load_pretrain_corpus,
    read_text_pickle,
    write_dataset,
)
from learn.data.text import TEMPLATE, clean_html, item_text, template_hash
from learn.errors import DataError


def write_recformer(folder: Path, **override) -> Path:
    """A 3-user, 5-item RecFormer finetune folder; ``override`` replaces whole files (objects or raw text)."""
    files = {
        "train.json": {"0": [0, 1, 2], "1": [3, 0], "2": [4]},
        "val.json": {"0": [3], "1": [1], "2": [2]},
        "test.json": {"0": [4], "1": [2], "2": [0]},
        "smap.json": {"B000000001": 0, "B000000002": 1, "B000000003": 2, "B000000004": 3, "B000000005": 4},
        "umap.json": {"A1": 0, "A2": 1, "A3": 2},
        "meta_data.json": {
            "B000000001": {"title": "Red Pen &amp; Cap", "brand": "Bic", "category": "Office Pens"},
            "B000000002": {"title": "Blue Pen", "brand": "", "category": ["Office", "Pens"]},
            "B000000003": {"title": "Stapler", "brand": None},
            "B000000004": {"title": "Ruler", "brand": "Acme", "category": "Office"},
            "B000000099": {"title": "not in smap"},
        },
    }
    files.update(override)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if content is None:
            continue
        (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


# ----------------------------------------------------------------------------------------------- text
def test_clean_html_follows_the_seed_table_and_order():
    assert clean_html("Salt &amp; Pepper") == "Salt  and  Pepper"
    assert clean_html("a&nbsp;b") == "a b"
    assert clean_html("&lt;b&gt;Bold&lt;/b&gt; &quot;x&quot; &copy;&trade;&reg;&shy;&ensp;&mdash;") == "bBold/b x "
    assert clean_html("10&ndash;20") == "10;20"  # the seed's "&ndash" has no semicolon
    assert clean_html("&amp;lt;") == " and lt;"  # &amp; is replaced first, as in the seed


def test_item_text_matches_the_seed_when_all_fields_are_present():
    meta = {"title": "Pen &amp; Cap", "brand": "Bic", "category": "Office Pens"}
    assert item_text(meta) == TEMPLATE.format(title="Pen  and  Cap", brand="Bic", category="Office Pens")


def test_item_text_drops_missing_fields_and_never_crashes():
    assert item_text({"title": "Pen", "brand": "", "category": None}) == "Title: Pen"
    assert item_text({"title": "Pen", "category": ["Office", ["Pens", 2]]}) == "Title: Pen. Category: Office Pens 2"
    assert item_text({"brand": "Bic", "genres": "Comedy, Drama"}) == "Brand: Bic. Category: Comedy, Drama"
    assert item_text({"title": "  ", "brand": "&reg;"}) == ""
    assert item_text({"title": 7, "categories": "Tools"}) == "Title: 7. Category: Tools"
    assert item_text(None) == "" and item_text({}) == ""


def test_template_hash_is_a_stable_sha256():
    h = template_hash()
    assert len(h) == 64 and int(h, 16) >= 0 and h == template_hash()


# ----------------------------------------------------------------------------------------------- finetune dataset
def test_load_dataset_reads_and_validates(tmp_path, caplog):
    ds = load_dataset(write_recformer(tmp_path / "Office"))
    assert (ds.name, ds.num_users, ds.num_items, ds.num_interactions) == ("Office", 3, 5, 12)
    assert ds.item_keys[3] == "B000000004"
    assert ds.history("0", "val") == [0, 1, 2] and ds.history(0, "test") == [0, 1, 2, 3]
    assert ds.sequence("2") == [4, 2, 0]
    with pytest.raises(ValueError):
        ds.history("0", "train")
    texts = ds.texts()
    assert texts[0] == "Title: Red Pen  and  Cap. Brand: Bic. Category: Office Pens"
    assert texts[1] == "Title: Blue Pen. Category: Office Pens"
    assert texts[4] == ""  # B000000005 has no meta: counted and reported, not an error
    assert ds.warnings and "1 items have no entry in meta_data.json" in ds.warnings[0]
    assert "no entry in meta_data.json" in caplog.text and "warning:" in ds.report()


def test_write_then_load_round_trip(tmp_path):
    ds = load_dataset(write_recformer(tmp_path / "src"))
    write_dataset(ds, tmp_path / "out")
    back = load_dataset(tmp_path / "out")
    for attr in ("train", "val", "test", "smap", "umap", "meta", "item_keys"):
        assert getattr(back, attr) == getattr(ds, attr), attr
    assert back.texts() == ds.texts()
    product = json.loads((tmp_path / "out" / "test_product.json").read_text())
    assert product == {"0": ["B000000005"], "1": ["B000000003"], "2": ["B000000001"]}
    assert read_text_pickle(tmp_path / "out" / "product2text.dict") == json.loads(
        (tmp_path / "out" / "item_text.json").read_text()
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    with pytest.raises(FileExistsError):
        write_dataset(ds, tmp_path / "out")
    write_dataset(ds, tmp_path / "out", overwrite=True)


def test_texts_prefer_item_text_json_then_product2text(tmp_path):
    folder = write_recformer(tmp_path / "d")
    (folder / "product2text.dict").write_bytes(pickle.dumps({"B000000001": "from pickle"}))
    assert load_dataset(folder).texts()[0] == "from pickle"
    (folder / "item_text.json").write_text(json.dumps({"B000000001": "from json"}))
    assert load_dataset(folder).texts()[:2] == ["from json", "Title: Blue Pen. Category: Office Pens"]


def test_product2text_unpickler_refuses_anything_but_builtins(tmp_path):
    path = tmp_path / "product2text.dict"
    path.write_bytes(pickle.dumps(collections.OrderedDict(a="b")))
    with pytest.raises(DataError, match="refusing to load collections.OrderedDict"):
        read_text_pickle(path)
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(DataError, match="item key: text"):
        read_text_pickle(path)


@pytest.mark.parametrize(
    ("override", "file", "problem"),
    [
        ({"train.json": {"0": [0, 9]}}, "train.json", "unknown item id 9"),
        ({"test.json": {"0": [-1]}}, "test.json", "unknown item id -1"),
        ({"val.json": '{"0": [3], "0": [1]}'}, "val.json", "duplicate key '0'"),
        ({"umap.json": {"A1": 0, "A2": 0, "A3": 2}}, "umap.json", "duplicate user"),
        ({"train.json": {"0": [0], "1": [], "2": [4]}, "val.json": {"0": [3], "2": [2]}, "test.json": {"0": [4]}},
         "train.json", "empty user '1'"),
        ({"smap.json": '{"B000000001": 0,'}, "smap.json", "malformed JSON"),
        ({"smap.json": {"a": 0, "b": 2}}, "smap.json", "exactly 0..1"),
        ({"train.json": {"0": ["B000000001"]}}, "train.json", "integer item ids"),
        ({"train.json": {"7": [0]}}, "train.json", "not an index in umap.json"),
    ],
)
def test_load_dataset_rejects_bad_input(tmp_path, override, file, problem):
    folder = write_recformer(tmp_path / "bad", **override)
    with pytest.raises(DataError) as e:
        load_dataset(folder)
    assert e.value.path.endswith(file) and problem in str(e.value) and "\n" not in str(e.value)


def test_load_dataset_missing_file_and_gz(tmp_path):
    import gzip

    folder = write_recformer(tmp_path / "d")
    train = (folder / "train.json").read_bytes()
    (folder / "train.json").unlink()
    with pytest.raises(DataError, match="train.json: file not found"):
        load_dataset(folder)
    (folder / "train.json.gz").write_bytes(gzip.compress(train))
    assert load_dataset(folder).num_interactions == 12


def test_leave_one_out_drops_short_users(tmp_path):
    seqs = {"u1": ["a", "b", "c", "d"], "u2": ["b", "e"], "u3": ["e", "a", "f"]}
    ds, dropped = leave_one_out(tmp_path, "x", seqs, {})
    assert dropped == 1 and ds.umap == {"u1": 0, "u3": 1}
    assert ds.smap == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4, "f": 5}
    assert (ds.train, ds.val, ds.test) == ({"0": [0, 1], "1": [4]}, {"0": [2], "1": [0]}, {"0": [3], "1": [5]})


def test_in_memory_dataset_keywords(tmp_path):
    ds = SeqDataset(root=tmp_path, name="t", train={"0": [1]}, val={"0": [0]}, test={"0": [1]},
                    smap={"x": 1, "y": 0}, umap={"u": 0}, meta={})
    assert ds.item_keys == ["y", "x"] and ds.texts() == ["", ""]


# ----------------------------------------------------------------------------------------------- pretrain corpus
def write_corpus(folder: Path, smap: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "train.json").write_text(json.dumps([["B1", "B2", "B3"], ["B2", "B4"]]))
    (folder / "dev.json").write_text(json.dumps([["B5", "B1"]]))
    (folder / "meta_data.json").write_text(json.dumps({"B1": {"title": "one"}, "B2": {"title": "two"}}))
    if smap is not None:
        (folder / "smap.json").write_text(json.dumps(smap))
    return folder


def test_pretrain_corpus_generates_smap(tmp_path):
    c = load_pretrain_corpus(write_corpus(tmp_path / "p"))
    assert c.smap_generated and c.smap == {"B1": 0, "B2": 1, "B3": 2, "B4": 3, "B5": 4}
    assert (c.num_items, c.num_sequences, c.num_interactions) == (5, 3, 7)
    assert c.texts()[:3] == ["Title: one", "Title: two", ""] and "3 items" in c.warnings[0]


def test_pretrain_corpus_rejects_item_outside_smap(tmp_path):
    with pytest.raises(DataError, match=r"train.json: sequence 0: unknown item 'B3'"):
        load_pretrain_corpus(write_corpus(tmp_path / "p", smap={"B1": 0, "B2": 1, "B4": 2, "B5": 3}))


# ----------------------------------------------------------------------------------------------- stats
def test_stats_on_dataset_and_corpus(tmp_path, capsys):
    folder = write_recformer(tmp_path / "d")
    assert stats.main([str(folder), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["users"], s["items"], s["interactions"], s["items_without_meta"]) == (3, 5, 12, 1)
    assert s["sequence_length"]["min"] == 3 and s["sequence_length"]["max"] == 5
    assert s["sequence_length"]["histogram"] == {"3-4": 2, "5-9": 1}
    assert stats.main([str(write_corpus(tmp_path / "p"))]) == 0
    out = capsys.readouterr().out
    assert "pretrain corpus" in out and "2 train / 1 dev" in out and "median" in out


def test_length_stats_values():
    s = stats.length_stats(list(range(1, 101)))
    assert (s["min"], s["max"], s["mean"], s["median"]) == (1, 100, 50.5, 50.5)
    assert s["p90"] == pytest.approx(90.1) and sum(s["histogram"].values()) == 100
