"""`python -m learn prepare`: every converter, bad input through the CLI, the seed's steps 2-3, shared data."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from learn.data import prepare
from learn.data.formats import load_dataset, load_pretrain_corpus, read_text_pickle
from learn.errors import LearnError
from tests.conftest import ROOT, run_cli, shared
from tests.test_data_formats import write_recformer


def convert(*argv: str) -> None:
    assert prepare.main(list(argv)) == 0


def product(out: Path, split: str) -> dict:
    return json.loads((out / f"{split}_product.json").read_text())


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------------------------- converters
def test_recformer_maps_genres_and_reads_gz(tmp_path):
    src = write_recformer(tmp_path / "src", **{"meta_data.json": {"B000000001": {"title": "Heat", "genres": "Crime"}}})
    (src / "train.json.gz").write_bytes(gzip.compress((src / "train.json").read_bytes()))
    (src / "train.json").unlink()
    convert("--from", "recformer", str(src), str(tmp_path / "out"))
    ds = load_dataset(tmp_path / "out")
    assert ds.meta["B000000001"] == {"title": "Heat", "category": "Crime"}
    assert ds.texts()[0] == "Title: Heat. Category: Crime" and ds.num_interactions == 12
    assert (tmp_path / "out" / "train.json").exists() and product(tmp_path / "out", "val")["0"] == ["B000000004"]


def test_recbole_sorts_by_time_keeping_ties_in_file_order(tmp_path, capsys):
    src = tmp_path / "rb"
    src.mkdir()
    (src / "toy.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "u1\ti1\t5\t5\n" "u2\ti9\t1\t7\n" "u1\ti2\t4\t3\n" "u1\ti3\t3\t5\n" "u1\ti4\t2\t1\n"
        "u3\ti1\t1\t1\n" "u3\ti2\t1\t1\n" "u3\ti3\t1\t1\n" "u2\ti1\t1\t8\n"
    )
    (src / "toy.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "i1\tHeat\t1995\tCrime Drama\n" "i2\tBabe\t\tComedy\n" "i3\tCasino\t1995\t\n"
    )
    convert("--from", "recbole", str(src), str(tmp_path / "out"))
    assert "dropped 1 users with fewer than 3 interactions" in capsys.readouterr().err
    out = tmp_path / "out"
    # u1 by time: i4 (1), i2 (3), then the tie at 5 in file order: i1, i3
    assert product(out, "train") == {"0": ["i4", "i2"], "1": ["i1"]}
    assert product(out, "val") == {"0": ["i1"], "1": ["i2"]} and product(out, "test") == {"0": ["i3"], "1": ["i3"]}
    ds = load_dataset(out)
    assert ds.umap == {"u1": 0, "u3": 1} and ds.smap == {"i4": 0, "i2": 1, "i1": 2, "i3": 3}
    assert ds.texts() == ["", "Title: Babe. Category: Comedy", "Title: Heat (1995). Category: Crime Drama",
                          "Title: Casino (1995)"]


def test_ml100k_from_the_recbole_wheel(tmp_path):
    convert("--from", "ml-100k", "-", str(tmp_path / "ml"))
    ds = load_dataset(tmp_path / "ml")
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (943, 1682, 100_000)
    assert "Title: Toy Story (1995). Category: Animation Children's Comedy" in ds.texts()


def write_unisrec(folder: Path) -> Path:
    folder.mkdir()
    (folder / "Toy.item2index").write_text("B0000000A1\t0\nB0000000A2\t1\nB0000000A3\t2\nB0000000A4\t3\n")
    (folder / "Toy.user2index").write_text("AU1\t0\nAU2\t1\n")
    (folder / "Toy.text").write_text(
        "item_id:token\ttext:token_seq\n" + "".join(f"B0000000A{i}\tItem {i}. Cat. Brand. \n" for i in (1, 2, 3))
    )
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    (folder / "Toy.train.inter").write_text(header + "0\t0\t1\n")
    (folder / "Toy.valid.inter").write_text(header + "0\t0 1\t2\n1\t3 2\t1\n")
    (folder / "Toy.test.inter").write_text(header + "0\t0 1 2\t3\n1\t3 0\t0\n")  # user 1's test history mismatches
    return folder


def test_unisrec_keeps_their_split_and_indices(tmp_path, capsys):
    convert("--from", "unisrec", str(write_unisrec(tmp_path / "u")), str(tmp_path / "out"))
    assert "1 users' test history != valid history + valid target" in capsys.readouterr().err
    ds = load_dataset(tmp_path / "out")
    assert (ds.train, ds.val, ds.test) == ({"0": [0, 1], "1": [3, 2]}, {"0": [2], "1": [1]}, {"0": [3], "1": [0]})
    assert ds.smap["B0000000A4"] == 3 and ds.umap == {"AU1": 0, "AU2": 1}
    assert ds.texts() == ["Item 1. Cat. Brand. ", "Item 2. Cat. Brand. ", "Item 3. Cat. Brand. ", ""]
    assert ds.meta["B0000000A1"] == {"title": "Item 1. Cat. Brand. "}


def test_lcrec_leave_one_out(tmp_path):
    src = tmp_path / "lc"
    src.mkdir()
    (src / "Toy.inter.json").write_text(json.dumps({"0": [0, 1, 2, 3], "1": [4, 2, 1], "2": [5, 0]}))
    items = {str(i): {"title": f"T{i}", "description": "d", "brand": "", "categories": "A,B"} for i in range(6)}
    (src / "Toy.item.json").write_text(json.dumps(items))
    convert("--from", "lcrec", str(src), str(tmp_path / "out"))
    ds = load_dataset(tmp_path / "out")
    assert ds.smap == {str(i): i for i in range(5)}  # item 5 only belonged to the dropped user
    assert (ds.train, ds.val, ds.test) == ({"0": [0, 1], "1": [4]}, {"0": [2], "1": [2]}, {"0": [3], "1": [1]})
    assert ds.texts()[0] == "Title: T0. Category: A,B"


def test_recformer_pretrain_filters_lengths_and_builds_smap(tmp_path):
    src = tmp_path / "pre"
    src.mkdir()
    seqs = [["a"] * 4, list("bcdef"), list("x" * 41), list("ghijkl")]
    (src / "train.json").write_text(json.dumps(seqs))
    (src / "dev.json").write_text(json.dumps([list("mnopq"), list("bz")]))
    (src / "meta_data.json").write_text(json.dumps({"b": {"title": "Bee", "brand": "B"}}))
    convert("--from", "recformer-pretrain", str(src), str(tmp_path / "out"))
    c = load_pretrain_corpus(tmp_path / "out")
    assert c.train == [list("bcdef"), list("ghijkl")] and c.dev == [list("mnopq")]
    assert list(c.smap) == list("bcdefghijklmnopq") and not c.smap_generated
    assert json.loads((tmp_path / "out" / "item_text.json").read_text()) == {"b": "Title: Bee. Brand: B"}


def test_mix_uses_train_parts_and_prefixes_non_asin_keys(tmp_path, capsys):
    # B000000005 is only ever a test target here: it must not reach the corpus
    amazon = write_recformer(tmp_path / "office", **{"train.json": {"0": [0, 1, 2], "1": [3, 0], "2": [1]}})
    movies = write_recformer(
        tmp_path / "movies",
        **{"smap.json": {"1": 0, "2": 1, "3": 2, "4": 3, "5": 4}, "meta_data.json": {"1": {"title": "Heat"}}},
    )
    convert("--from", "mix", str(amazon), str(movies), str(tmp_path / "mix"))
    assert "movies: item keys prefixed 'movies:'" in capsys.readouterr().err
    c = load_pretrain_corpus(tmp_path / "mix")
    assert c.train[:3] == [["B000000001", "B000000002", "B000000003"], ["B000000004", "B000000001"],
                           ["movies:1", "movies:2", "movies:3"]]
    assert len(c.train) == 4  # the users with a single train item are left out (sequences need >= 2 items)
    assert c.dev[0] == ["B000000001", "B000000002", "B000000003", "B000000004"]  # train + val
    assert "B000000005" not in c.smap and len(c.dev) == 6
    assert c.texts()[c.smap["movies:1"]] == "Title: Heat"


def _category(folder: Path, users: dict[str, list[int]], titles: list[str], template: str = "{}") -> Path:
    """A leave-one-out dataset of ``titles`` (keys 0..n-1, the same keys in every category) from full sequences."""
    split = {part: {} for part in ("train.json", "val.json", "test.json")}
    for index, seq in enumerate(users.values()):
        u = str(index)
        split["train.json"][u], split["val.json"][u], split["test.json"][u] = seq[:-2], seq[-2:-1], seq[-1:]
    return write_recformer(
        folder, **split, **{"smap.json": {str(i): i for i in range(len(titles))},
                            "umap.json": {u: i for i, u in enumerate(users)},
                            "meta_data.json": {str(i): {"title": template.format(t)} for i, t in enumerate(titles)}},
    )


def test_mix_keys_prefix_and_target_guard(tmp_path, capsys):
    seqs = {"u1": [0, 1, 2, 3, 4], "u2": [4, 3, 2, 1], "u3": [1, 3, 0, 2]}
    pens = [f"Pen model {c} with a fine tip in blue" for c in "ABCDE"]
    target = _category(tmp_path / "office", seqs, pens)
    toys = _category(tmp_path / "toys", {"v1": [0, 1, 2, 3], "v2": [2, 1, 0]}, [f"Toy car {c}" for c in "ABCD"])
    # the same users and products exported again under another template and other keys: one category, two folders
    again = _category(tmp_path / "office_again", {f"x{u}": [4 - i for i in s] for u, s in seqs.items()},
                      [f"{t} . Office Products Pens . Acme" for t in reversed(pens)])
    out = tmp_path / "corpus"
    convert("--from", "mix", str(toys), str(again), "--keys", "prefix", str(out))  # no target: accepted as is
    c = load_pretrain_corpus(out)
    assert all(k.startswith(("toys:", "office_again:")) for k in c.smap)  # ASIN-free keys of both, never shared
    assert c.train[0] == ["toys:0", "toys:1", "toys:2", "toys:3"][:2]  # the train part of v1 only (test items never)

    # with the target named, the re-exported office folder is refused: its sequences repeat held-out interactions
    with pytest.raises(LearnError, match=r"corpus windows repeat validation/test interactions of the target"):
        prepare.main(["--from", "mix", str(toys), str(again), "--keys", "prefix", "--target", str(target),
                      str(tmp_path / "leak")])
    with pytest.raises(LearnError, match="is the target's dataset"):
        prepare.main(["--from", "mix", str(toys), str(target), "--target", str(target), str(tmp_path / "self")])
    assert not (tmp_path / "leak").exists() and not (tmp_path / "self").exists()
    convert("--from", "mix", str(toys), "--keys", "prefix", "--target", str(target), str(tmp_path / "clean"))
    assert "no sequence holds any of the" in capsys.readouterr().err
    lineage = json.loads((tmp_path / "clean" / "source.json").read_text())
    assert lineage["target"] == str(target) and lineage["keys"] == "prefix"
    with pytest.raises(LearnError, match="apply to prepare --from mix only"):
        prepare.main(["--from", "recformer", str(toys), "--target", str(target), str(tmp_path / "x")])


def test_held_out_windows_match_across_text_templates(tmp_path):
    seqs = {"u1": [0, 1, 2, 3], "u2": [3, 2, 1, 0]}
    titles = ["Stapler heavy duty black 20 sheet capacity", "Ruler steel 30 cm metric imperial",
              "Blue pen fine tip pack of 12", "Red pen fine tip pack of 12"]
    a = load_dataset(_category(tmp_path / "a", seqs, titles))
    b = load_dataset(_category(tmp_path / "b", seqs, titles, "{}. Office Products. Acme. "))
    assert prepare.held_out_windows(a) == prepare.held_out_windows(b)  # first title words decide, not the template
    assert ("stapler heavy duty black 20 sheet", "ruler steel 30 cm metric imperial", "blue pen fine tip pack of") in \
        prepare.held_out_windows(a)  # u1's validation item after its two train items
    assert prepare.item_signature({"title": ""}, "Title: Pen. Brand: Bic") == "title pen brand bic"


# ----------------------------------------------------------------------------------------------- bad input via the CLI
BAD_INPUTS = {
    "unknown item id": ({"train.json": {"0": [0, 42], "1": [3, 0], "2": [4]}}, "train.json", "unknown item id 42"),
    "duplicate user key": ({"val.json": '{"0": [3], "1": [1], "1": [2]}'}, "val.json", "duplicate key '1'"),
    "duplicate user index": ({"umap.json": {"A1": 0, "A2": 1, "A3": 1}}, "umap.json", "duplicate user"),
    "empty user": ({"train.json": {"0": [0], "1": [], "2": [4]}, "val.json": {"0": [1], "2": [2]},
                    "test.json": {"0": [2], "2": [0]}}, "train.json", "empty user '1'"),
    "malformed JSON": ({"meta_data.json": '{"B000000001": {"title": "x"'}, "meta_data.json", "malformed JSON"),
    "missing file": ({"test.json": None}, "test.json", "file not found"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, case):
    override, file, problem = BAD_INPUTS[case]
    src = write_recformer(tmp_path / "src", **override)
    out_parent = tmp_path / "outputs"
    out_parent.mkdir()
    proc = run_cli("prepare", "--from", "recformer", str(src), str(out_parent / "ds"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert file in lines[0] and problem in lines[0]
    assert list(out_parent.iterdir()) == []  # neither OUT nor a temp folder
    if case == "missing file":
        proc = run_cli("stats", str(src))
        assert proc.returncode == 2 and "test.json: file not found" in proc.stderr


def test_existing_out_needs_force(tmp_path):
    src, out = write_recformer(tmp_path / "src"), tmp_path / "out"
    out.mkdir()
    proc = run_cli("prepare", "--from", "recformer", str(src), str(out))
    assert proc.returncode == 2 and "already exists" in proc.stderr and list(out.iterdir()) == []
    convert("--from", "recformer", "--force", str(src), str(out))
    assert load_dataset(out).num_users == 3 and leftovers(tmp_path) == []


def test_bad_recbole_and_unisrec_lines_name_the_file(tmp_path):
    src = tmp_path / "rb"
    src.mkdir()
    (src / "x.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\tsoon\n")
    proc = run_cli("prepare", "--from", "recbole", str(src), str(tmp_path / "o1"))
    assert proc.returncode == 2 and "x.inter: line 2: timestamp 'soon' is not a number" in proc.stderr
    u = write_unisrec(tmp_path / "u")
    (u / "Toy.test.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0 1 2\t7\n")
    proc = run_cli("prepare", "--from", "unisrec", str(u), str(tmp_path / "o2"))
    assert proc.returncode == 2 and "Toy.test.inter: line 2: unknown item id 7" in proc.stderr
    assert leftovers(tmp_path) == [] and not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


# ----------------------------------------------------------------------------------------------- seed steps 2-3
def test_seed_steps_2_and_3_on_a_tiny_tree(tmp_path):
    data = tmp_path / "amazon_2018"
    write_recformer(data / "finetune_data" / "Office")  # B000000005 has no meta
    write_recformer(data / "finetune_data" / "Arts", **{"umap.json": {"A9": 0, "A8": 1, "A7": 2}})
    (data / "finetune_data" / "Arts_baichuan_lmdb").mkdir()  # not a dataset: skipped
    pre = data / "pretrain_data"
    pre.mkdir()
    (pre / "train.json").write_text(json.dumps([["P1", "P2", "P3"], ["P2", "P4"]]))
    (pre / "dev.json").write_text(json.dumps([["P5", "P1"]]))
    (pre / "meta_data.json").write_text(json.dumps({k: {"title": k, "brand": "b", "category": "c"}
                                                    for k in ("P1", "P2", "P3", "P4")}))

    def seed(script: str) -> str:
        proc = subprocess.run([sys.executable, str(ROOT / "preprocess" / "amazon_2018" / script)],
                              cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    seed("motify_json.py")
    for name in ("Office", "Arts"):
        assert product(data / "finetune_data" / name, "train")["0"] == ["B000000001", "B000000002", "B000000003"]
    out = seed("build_product2text.py")
    assert "missing B000000005 in Office" in out and "missing P5 in pretrain_data" in out
    office = read_text_pickle(data / "finetune_data" / "Office" / "product2text.dict")
    assert office["B000000001"] == "Title: Red Pen  and  Cap. Brand: Bic. Category: Office Pens"
    assert "B000000005" not in office
    assert json.loads((data / "finetune_data" / "Office" / "item_text.json").read_text()) == office
    assert json.loads((pre / "smap.json").read_text()) == {"P1": 0, "P2": 1, "P3": 2, "P4": 3, "P5": 4}
    assert read_text_pickle(pre / "product2text.dict")["P4"] == "Title: P4. Brand: b. Category: c"


# ----------------------------------------------------------------------------------------------- shared data
@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("fmt", "name", "expected"),
    [
        ("unisrec", "amazon2018_scientific_unisrec", (8442, 4385, None)),
        ("recformer", "movielens_1m", (6040, 3706, 1_000_209)),
        ("lcrec", "amazon2018_scientific_lcrec", (8317, 4344, 58_492)),
        ("lcrec", "amazon2014_office_lcrec", (4905, 2420, 53_258)),
    ],
)
def test_shared_datasets(tmp_path, fmt, name, expected):
    convert("--from", fmt, str(shared(name)), str(tmp_path / "out"))
    ds = load_dataset(tmp_path / "out")
    users, items, inters = expected
    assert (ds.num_users, ds.num_items) == (users, items)
    assert inters is None or ds.num_interactions == inters
    assert not ds.warnings and all(ds.texts())


def test_prepare_records_the_source_format(tmp_path):
    from learn.data.formats import source_format
    from learn.data.prepare import main

    assert main(["--from", "ml-100k", str(tmp_path / "ml")]) == 0
    assert source_format(tmp_path / "ml") == "ml-100k"
    assert source_format(tmp_path) is None
