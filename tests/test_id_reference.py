"""The in-trainer ID reference (``model.text_input=false model.item_id_embedding=true``): a SASRec-style ID model;
and the retired text+ID fusion options (issue 28): read as before at their "off" value, refused otherwise."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from learn.checkpoint import load_pretrained, save_pretrained
from learn.config import RETIRED, load_config
from learn.errors import DataError, LearnError
from learn.model import LEARNModel
from learn.runfolder import config_differences
from tests.test_model import batch, tiny
from tests.test_train import _finetune_args, _losses, _run


def test_id_model_ignores_item_text_and_has_no_adaptor():
    torch.manual_seed(0)
    m = LEARNModel(tiny(item_id_embedding=True, text_input=False, num_items=50)).eval()
    assert m.tower.adaptor is None and not any("adaptor" in k for k in m.state_dict())
    x, mask, _ = batch()
    ids = torch.randint(0, 50, mask.shape, generator=torch.Generator().manual_seed(3))
    users = m.encode_users(x, mask, ids)
    torch.testing.assert_close(users, m.encode_users(torch.randn_like(x), mask, ids), rtol=0, atol=0)
    items = m.encode_items(x[:, 0], ids[:, 0])
    torch.testing.assert_close(items, m.encode_items(torch.zeros_like(x[:, 0]), ids[:, 0]), rtol=0, atol=0)
    assert not torch.equal(users, m.encode_users(x, mask, (ids + 1) % 50))  # the ids are what it reads


def test_id_model_needs_an_id_table():
    with pytest.raises(LearnError, match="text_input=false needs model.item_id_embedding"):
        LEARNModel(tiny(text_input=False))


def test_id_reference_finetunes(tmp_path):
    from tests.conftest import make_tiny_dataset

    data, store = make_tiny_dataset(tmp_path)
    result = _run(_finetune_args(tmp_path, data, store, "train.epochs=6", "model.item_id_embedding=true",
                                 "model.text_input=false", "model.item_bias=true", "train.sampling=windows",
                                 "train.loss_positions=all", "train.item_dropout=false"))
    run = tmp_path / "runs" / "ft"
    losses = _losses(run)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert result["test"]["users"] == 40
    assert not any("adaptor" in k for k in load_file(run / "best" / "model.safetensors"))


def test_retired_fusion_options_read_at_their_off_value_and_are_refused_otherwise(tmp_path):
    """A config (or an old run's config.yaml) holding a retired option at its "off" value loads as before and drops
    it; any other value is refused with one line naming the option and where its results are."""
    off = [f"{k}={v}" for k, v in RETIRED.items()]
    saved = load_config(None, off).to_dict()
    assert all(name not in saved[section] for section, name in (k.split(".") for k in RETIRED))
    for bad in ("model.id_dropout=0.5", "model.id_init=zero", "model.id_min_count=20", "train.id_weight_decay=10",
                "train.id_decay_half_count=5"):
        with pytest.raises(LearnError, match=f"{bad.split('=')[0]}=.*retired.*quality.md"):
            load_config(None, [bad])
    old = tmp_path / "old.yaml"  # an old run's saved config, used as --config
    old.write_text(yaml.safe_dump({"model": {"hidden_size": 32, "num_heads": 4, "id_init": "normal", "id_min_count": 0},
                                   "train": {"lr": 0.01, "id_weight_decay": 0.0}}))
    assert load_config(old).model.hidden_size == 32
    # a weights folder written before the options were retired: its config.yaml lists them at their defaults
    m = LEARNModel(tiny(item_id_embedding=True, num_items=50))
    folder = save_pretrained(m, m.cfg, tmp_path / "w")
    doc = yaml.safe_load((folder / "config.yaml").read_text())
    doc["model"].update(id_init="normal", id_dropout=0.0, id_min_count=0)
    (folder / "config.yaml").write_text(yaml.safe_dump(doc))
    torch.testing.assert_close(load_pretrained(folder).state_dict(), m.state_dict())
    doc["model"]["id_min_count"] = 20
    (folder / "config.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(DataError, match="model.id_min_count=20: a retired"):
        load_pretrained(folder)
    # resuming a run folder whose run had one on: a difference (refused unless ckpt.on_mismatch=fresh)
    saved = {"train": {"lr": 0.01, "id_weight_decay": 5.0, "id_decay_half_count": 0.0}}
    assert config_differences(saved, {"train": {"lr": 0.01}}) == [("train.id_weight_decay", 5.0, "(retired)")]
    saved["train"]["id_weight_decay"] = 0.0
    assert config_differences(saved, {"train": {"lr": 0.01}}) == []
