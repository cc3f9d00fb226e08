"""train.init_items: an init_from run's ID vectors / item biases carried to another catalogue by key or text."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from learn.config import load_config
from learn.errors import LearnError
from learn.train import Trainer
from learn.transfer import match_items, normalise
from tests.conftest import make_tiny_dataset
from tests.test_train import _finetune_args, _run

IDS = ("model.item_id_embedding=true", "model.item_bias=true")


def test_normalise_and_match_ignore_case_punctuation_and_ambiguous_texts():
    heat = "Title: Heat (1995). Category: Action, Crime"
    assert normalise(heat) == normalise("title: HEAT (1995) Category: Action Crime")
    assert normalise("a-b") != normalise("ab")
    # target index -> source index; "x" occurs twice in the source, so it matches nothing
    assert match_items(["x", "y", "x", "z"], ["z", "x", "w", "y"]) == {0: 3, 3: 1}


def _relabelled(root: Path, n_items: int, unmatched: int) -> tuple[Path, Path]:
    """The tiny dataset's items under other keys, in reverse order, their titles in another case and punctuation;
    the item at index ``unmatched`` gets a title no source item has."""
    from learn.data.formats import SeqDataset, write_dataset
    from learn.data.store import write_store

    keys = [f"M{i}" for i in range(n_items)]
    source_of = [n_items - 1 - i for i in range(n_items)]  # target index -> the tiny dataset's item index
    meta = {k: {"title": f"ITEM  i{source_of[i]:03d}!", "brand": "B", "category": "C"} for i, k in enumerate(keys)}
    meta[keys[unmatched]]["title"] = "a title no source item has"
    seqs = {str(u): [(u + j) % n_items for j in range(6)] for u in range(12)}
    ds = SeqDataset(root=root / "other", name="other", train={u: s[:-2] for u, s in seqs.items()},
                    val={u: [s[-2]] for u, s in seqs.items()}, test={u: [s[-1]] for u, s in seqs.items()},
                    smap={k: i for i, k in enumerate(keys)}, umap={f"U{u}": int(u) for u in seqs}, meta=meta)
    write_dataset(ds, root / "other")
    vectors = np.random.default_rng(1).normal(size=(n_items, 16)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    write_store(root / "other_store", keys, vectors,
                meta={"dim": 16, "dtype": "float32", "count": n_items, "model": "random"})
    return root / "other", root / "other_store"


def _start(tmp: Path, data: Path, store: Path, *extra: str) -> Trainer:
    args = _finetune_args(tmp, data, store, "train.epochs=1", "log.run_name=dst", *IDS, *extra)
    return Trainer(load_config(None, [*args, "train.stage=finetune"]))


@pytest.fixture()
def source(tmp_path):
    data, store = make_tiny_dataset(tmp_path)
    _run(_finetune_args(tmp_path, data, store, "train.epochs=1", "log.run_name=src", *IDS))
    run = tmp_path / "runs" / "src"
    return tmp_path, run, load_file(str(run / "best" / "model.safetensors"))


def test_init_items_text_carries_rows_by_normalised_text_and_keeps_the_rest(source, capsys):
    tmp, run, state = source
    data, store = _relabelled(tmp, n_items=30, unmatched=4)  # same size as the source: a shape match means nothing
    trainer = _start(tmp, data, store, f"train.init_from={run}", "train.init_items=text")
    out = capsys.readouterr().out
    assert "id_embedding.weight (carried by item match)" in out
    assert "carried id_embedding.weight, item_bias rows of 29 of 30 items" in out and "matched by text" in out
    model = trainer.model
    for i in range(30):
        src = 29 - i
        same_row = torch.equal(model.id_embedding.weight[i], state["id_embedding.weight"][src])
        same_bias = model.item_bias[i] == state["item_bias"][src]
        assert (same_row and same_bias) == (i != 4), i
    assert not torch.equal(model.id_embedding.weight[4], state["id_embedding.weight"][4])  # not loaded by shape
    trainer.folder.release(refused=True)


def test_shape_load_needs_the_same_catalogue(source):
    """init_items=shape loads the ID table / item biases only into a run on the catalogue they were trained on (its
    recorded identity): the same items in the same order in another folder load; other keys are refused."""
    tmp, run, state = source
    same, same_store = make_tiny_dataset(tmp / "same", n_items=30)  # the source's keys, in its order, elsewhere
    trainer = _start(tmp, same, same_store, f"train.init_from={run}")
    assert torch.equal(trainer.model.id_embedding.weight, state["id_embedding.weight"])
    trainer.folder.release(refused=True)
    other, other_store = _relabelled(tmp, n_items=30, unmatched=4)  # same size, other keys: a shape match is chance
    with pytest.raises(LearnError, match=r"its id_embedding.weight, item_bias follow another catalogue \(30 items of "
                       r".*tiny, sha256 \w+\) than this run's \(30 items of .*other, .*train.init_items=key\|text"):
        _start(tmp, other, other_store, f"train.init_from={run}")
    assert not (tmp / "runs" / "dst").exists()


def test_shape_load_from_a_source_without_a_catalogue_identity(source):
    """Weights written before the identity was recorded: compared through the source's config.yaml (its dataset's
    smap.json), and refused when that dataset is gone and is not this run's."""
    from tests.test_bad_input_train import without_catalogue_identity

    tmp, run, _ = source
    old = without_catalogue_identity(run, tmp / "runs" / "old-src")
    other, other_store = _relabelled(tmp, n_items=30, unmatched=4)
    with pytest.raises(LearnError, match="follow another catalogue"):
        _start(tmp, other, other_store, f"train.init_from={old}")
    _start(tmp, tmp / "tiny", tmp / "tiny_store", f"train.init_from={old}").folder.release(refused=True)  # its own
    gone = without_catalogue_identity(run, tmp / "runs" / "gone-src", dataset=tmp / "deleted")
    with pytest.raises(LearnError, match=r"follow .*deleted \(no catalogue identity recorded, and that folder is gone"):
        _start(tmp, tmp / "tiny", tmp / "tiny_store", f"train.init_from={gone}")


def test_init_items_key_carries_the_shared_keys_and_the_run_trains(source, capsys):
    tmp, run, state = source
    small, small_store = make_tiny_dataset(tmp / "small", n_items=25)  # the source's first 25 keys
    trainer = _start(tmp, small, small_store, f"train.init_from={run}", "train.init_items=key")
    assert "rows of 25 of 25 items" in capsys.readouterr().out
    assert torch.equal(trainer.model.id_embedding.weight, state["id_embedding.weight"][:25])
    assert torch.equal(trainer.model.item_bias.detach(), state["item_bias"][:25])
    result = trainer.fit()
    assert result["test"]["users"] == 40 and np.isfinite(result["test"]["ndcg@10"])
    assert "init_items: key" in (tmp / "runs" / "dst" / "config.yaml").read_text()


def test_init_items_refuses_without_a_source_or_a_source_dataset(source, tmp_path):
    tmp, run, _ = source
    data, store = tmp / "tiny", tmp / "tiny_store"
    with pytest.raises(LearnError, match="train.init_items=key|text needs train.init_from"):
        _start(tmp, data, store, "train.init_items=key")
    with pytest.raises(LearnError, match="train.init_items=text needs a finetune run"):
        load_config(None, [f"train.init_from={run}", "train.init_items=text", "train.stage=pretrain"])
    with pytest.raises(LearnError, match="expected one of"):
        _start(tmp, data, store, f"train.init_from={run}", "train.init_items=title")
    pre = tmp / "pretrained"  # the same weights, saved as if by a pretraining run (rows follow its corpus)
    pre.mkdir()
    shutil.copy(run / "best" / "model.safetensors", pre / "model.safetensors")
    (pre / "config.yaml").write_text((run / "best" / "config.yaml").read_text().replace("stage: finetune",
                                                                                          "stage: pretrain"))
    with pytest.raises(LearnError, match="is not a finetune run on a dataset"):
        _start(tmp, data, store, f"train.init_from={pre}", "train.init_items=key")
    moved = data.rename(tmp / "moved")  # the source run's dataset is gone from where its config.yaml says
    with pytest.raises(LearnError, match=f"the source run's dataset {data} .* is not found"):
        _start(tmp, moved, store, f"train.init_from={run}", "train.init_items=key")
    assert not (tmp / "runs" / "dst" / "config.yaml").exists()
