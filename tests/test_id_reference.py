"""The in-trainer ID reference (``model.text_input=false model.item_id_embedding=true``): a SASRec-style ID model;
and the text+ID fusion settings (zero-initialised ID table, ID dropout, weight decay on the ID table alone)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from learn.config import TrainConfig, load_config
from learn.errors import LearnError
from learn.model import LEARNModel
from learn.train import IdRowDecay, build_optimizer, item_counts
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


def test_id_weight_decay_shrinks_only_the_id_table():
    """id_weight_decay: a group of its own; an ID row no batch touched decays by (1 - lr * decay), nothing else."""
    torch.manual_seed(0)
    m = LEARNModel(tiny(item_id_embedding=True, num_items=50))
    assert len(build_optimizer(m, TrainConfig(lr=1e-2)).param_groups) == 2  # unchanged when off (old checkpoints)
    opt = build_optimizer(m, TrainConfig(lr=1e-2, id_weight_decay=5.0))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.0, 5.0]
    assert opt.param_groups[2]["params"][0] is m.id_embedding.weight
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    x, mask, _ = batch()
    ids = torch.randint(0, 10, mask.shape, generator=torch.Generator().manual_seed(3))  # rows 10.. never used
    m.encode_users(x, mask, ids).square().sum().backward()
    opt.step()
    torch.testing.assert_close(m.id_embedding.weight[10:], before["id_embedding.weight"][10:] * (1 - 1e-2 * 5.0))
    adaptor = m.tower.adaptor.weight
    assert not torch.equal(adaptor, before["tower.adaptor.weight"])  # trained, but by Adam alone: no decay on it
    with pytest.raises(LearnError, match="id_weight_decay must be >= 0"):
        load_config(None, ["train.id_weight_decay=-1"])


def test_text_id_fusion_finetunes(tmp_path):
    """zero-initialised ID table + ID dropout + ID weight decay through the CLI: trains, saves the options, tests."""
    from tests.conftest import make_tiny_dataset

    data, store = make_tiny_dataset(tmp_path)
    result = _run(_finetune_args(tmp_path, data, store, "train.epochs=3", "model.item_id_embedding=true",
                                 "model.id_init=zero", "model.id_dropout=0.5", "train.id_weight_decay=2.0"))
    cfg = (tmp_path / "runs" / "ft" / "config.yaml").read_text()
    assert "id_dropout: 0.5" in cfg and "id_weight_decay: 2.0" in cfg
    assert result["test"]["users"] == 40 and 0.0 <= result["test"]["ndcg@10"] <= 1.0


def test_id_decay_half_count_scales_the_decay_by_item_frequency():
    """id_decay_half_count=K: AdamW's group keeps only weight_decay; each untouched ID row then shrinks by exactly
    1 - lr * W * K / (K + n_i), n_i its occurrences in the training sequences."""
    torch.manual_seed(0)
    m = LEARNModel(tiny(item_id_embedding=True, num_items=50))
    t = TrainConfig(lr=1e-2, weight_decay=0.1, id_weight_decay=5.0, id_decay_half_count=2.0)
    opt = build_optimizer(m, t)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0, 0.1]  # the ID decay is IdRowDecay's
    counts = item_counts([[1, 2, 2], [2, 3], [40]], 50)
    assert counts[:5].tolist() == [0, 1, 3, 1, 0] and counts[40] == 1 and counts.sum() == 6
    decay = IdRowDecay(m.id_embedding.weight, counts, t.id_weight_decay, t.id_decay_half_count)
    before = m.id_embedding.weight.detach().clone()
    x, mask, _ = batch()
    ids = torch.randint(0, 10, mask.shape, generator=torch.Generator().manual_seed(3))  # rows 10.. never used
    m.encode_users(x, mask, ids).square().sum().backward()
    opt.step()
    decay(opt.param_groups[-1]["lr"])
    n = torch.as_tensor(counts[10:], dtype=torch.float32).unsqueeze(1)
    expected = before[10:] * (1 - 0.1 * 1e-2) * (1 - 1e-2 * 5.0 * 2.0 / (2.0 + n))
    torch.testing.assert_close(m.id_embedding.weight[10:], expected)
    assert decay.rate[41].item() == 5.0 and decay.rate[40].item() == pytest.approx(5.0 * 2 / 3)  # never seen: all of W
    for bad, msg in ((["train.id_decay_half_count=-1", "train.id_weight_decay=1"], "id_decay_half_count must be"),
                     (["train.id_decay_half_count=5"], "needs train.id_weight_decay > 0")):
        with pytest.raises(LearnError, match=msg):
            load_config(None, bad)


def test_id_decay_half_count_finetunes_and_needs_an_id_table(tmp_path):
    """Through the CLI: trains with the per-item decay (saved in config.yaml); refused without an ID table."""
    from tests.conftest import make_tiny_dataset

    data, store = make_tiny_dataset(tmp_path)
    opts = ("train.epochs=2", "model.id_init=zero", "train.id_weight_decay=5.0", "train.id_decay_half_count=3")
    result = _run(_finetune_args(tmp_path, data, store, "model.item_id_embedding=true", *opts))
    assert "id_decay_half_count: 3" in (tmp_path / "runs" / "ft" / "config.yaml").read_text()
    assert result["test"]["users"] == 40 and 0.0 <= result["test"]["ndcg@10"] <= 1.0
    with pytest.raises(LearnError, match="id_decay_half_count needs model.item_id_embedding=true"):
        _run(_finetune_args(tmp_path, data, store, "log.run_name=noid", *opts))


def test_id_min_count_finetunes_saves_the_mask_and_evaluates_the_same(tmp_path):
    """Through the CLI: the mask is the training sequences' counts >= T, saved in model.safetensors (so `learn eval`
    of the saved weights gives the run's own test numbers); T is refused without an ID table."""
    from learn.data.bundle import load_bundle
    from learn.evaluate import main as eval_main
    from tests.conftest import make_tiny_dataset

    data, store = make_tiny_dataset(tmp_path)
    opts = ("train.epochs=2", "model.id_init=zero", "model.id_min_count=4")
    result = _run(_finetune_args(tmp_path, data, store, "model.item_id_embedding=true", *opts))
    run = tmp_path / "runs" / "ft"
    ds = load_bundle(data, store).dataset
    expected = item_counts([s for s in ds.train.values() if len(s) >= 2], len(ds.item_keys)) >= 4
    saved = load_file(run / "best" / "model.safetensors")["id_mask"]
    assert saved.dtype == torch.bool and saved.tolist() == expected.tolist() and 0 < saved.sum() < len(saved)
    assert "id_min_count: 4" in (run / "config.yaml").read_text()
    assert eval_main(["--ckpt", str(run / "best"), "--data", str(data), "--store", str(store),
                      "--out", str(tmp_path / "ev")]) == 0
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert again["test"]["ndcg@10"] == pytest.approx(result["test"]["ndcg@10"], abs=1e-6)
    with pytest.raises(LearnError, match="model.id_min_count needs"):
        _run(_finetune_args(tmp_path, data, store, "log.run_name=noid", *opts))
