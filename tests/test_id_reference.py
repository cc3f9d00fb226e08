"""The in-trainer ID reference (``model.text_input=false model.item_id_embedding=true``): a SASRec-style ID model."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from learn.errors import LearnError
from learn.model import LEARNModel
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
