"""LEARNModel: masks, causality, readout, item tower, chunked catalogue encode, variants, save/load."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml

from learn.checkpoint import load_pretrained, save_pretrained
from learn.errors import DataError, LearnError
from learn.model import LEARNModel, ModelConfig

D = 16


def tiny(**kw) -> ModelConfig:
    base = dict(input_dim=D, hidden_size=32, num_layers=2, num_heads=4, ffn_size=64, output_dim=24, max_len=8)
    return ModelConfig(**{**base, **kw})


def model(**kw) -> LEARNModel:
    torch.manual_seed(0)
    return LEARNModel(tiny(**kw)).eval()


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 6, D, generator=g)
    lengths = torch.tensor([3, 6, 1, 4])
    mask = torch.arange(6)[None, :] < lengths[:, None]
    return x * mask[..., None], mask, lengths


VARIANTS = [{}, {"position": "learned"}, {"item_tower": "separate"}, {"item_id_embedding": True, "num_items": 50},
            {"item_id_embedding": True, "text_input": False, "num_items": 50},
            {"item_tower": "table", "hidden_size": 24, "embed_norm": True, "position": "learned"},
            {"item_tower": "table", "hidden_size": 24, "embed_norm": True, "item_id_embedding": True,
             "text_input": False, "num_items": 50}]


def ids_for(m: LEARNModel, shape, seed=2):
    if not m.cfg.item_id_embedding:
        return None
    return torch.randint(0, m.cfg.num_items, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kw", VARIANTS)
def test_shapes_and_unit_norm(kw):
    m = model(**kw)
    x, mask, _ = batch()
    out = m.encode_sequence(x, mask, ids_for(m, mask.shape))
    assert out.shape == (4, 6, 24) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4, 6))
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("kw", VARIANTS)
def test_padding_never_changes_real_positions(kw):
    m = model(**kw)
    x, mask, _ = batch()
    ids = ids_for(m, mask.shape)
    ref = m.encode_sequence(x, mask, ids)
    noisy = torch.where(mask[..., None], x, 100 * torch.randn_like(x))
    ids2 = torch.where(mask, ids, torch.full_like(ids, -7)) if ids is not None else None  # any padding id
    out = m.encode_sequence(noisy, mask, ids2)
    assert torch.equal(out[mask], ref[mask])
    assert not torch.isnan(out).any()
    torch.testing.assert_close(m.encode_users(noisy, mask, ids2), m.encode_users(x, mask, ids))


def test_causality():
    m = model()
    x, mask, _ = batch()
    mask = torch.ones_like(mask)
    ref = m.encode_sequence(x, mask)
    for t in range(5):
        y = x.clone()
        y[:, t + 1:] = torch.randn_like(y[:, t + 1:])
        out = m.encode_sequence(y, mask)
        torch.testing.assert_close(out[:, : t + 1], ref[:, : t + 1], rtol=0, atol=1e-6)
        assert (out[:, t + 1] - ref[:, t + 1]).abs().max() > 1e-3  # later positions do see the change


@pytest.mark.parametrize("kw", VARIANTS)
def test_encode_users_reads_last_real_position(kw):
    m = model(**kw)
    x, mask, lengths = batch()
    ids = ids_for(m, mask.shape)
    seq = m.encode_sequence(x, mask, ids)
    expect = seq[torch.arange(4), lengths - 1]
    torch.testing.assert_close(m.encode_users(x, mask, ids), expect, rtol=0, atol=1e-6)


def test_encode_users_in_training_mode_matches_sequence_readout():
    m = model(dropout=0.0).train()
    x, mask, lengths = batch()
    torch.testing.assert_close(m.encode_users(x, mask), m.encode_sequence(x, mask)[torch.arange(4), lengths - 1],
                               rtol=0, atol=1e-6)


def test_empty_history_is_finite():
    m = model()
    x, mask, _ = batch()
    mask[0] = False
    assert torch.isfinite(m.encode_users(x, mask)).all()


@pytest.mark.parametrize("kw", [{}, {"position": "learned"}, {"item_id_embedding": True, "num_items": 50}])
def test_shared_item_tower_is_length_one_sequence(kw):
    m = model(**kw)
    x = torch.randn(5, D)
    ids = ids_for(m, (5,))
    seq = m.encode_sequence(x[:, None], torch.ones(5, 1, dtype=torch.bool), ids[:, None] if ids is not None else None)
    torch.testing.assert_close(m.encode_items(x, ids), seq[:, 0], rtol=0, atol=1e-6)
    # the length-1 fast path equals full attention over a single key
    two = m.encode_sequence(torch.stack([x, x], 1), torch.tensor([[True, False]] * 5),
                            torch.stack([ids, ids], 1) if ids is not None else None)
    torch.testing.assert_close(m.encode_items(x, ids), two[:, 0], rtol=0, atol=1e-6)


def test_separate_item_tower_has_own_weights():
    m = model(item_tower="separate")
    x = torch.randn(5, D)
    seq = m.encode_sequence(x[:, None], torch.ones(5, 1, dtype=torch.bool))[:, 0]
    assert (m.encode_items(x) - seq).abs().max() > 1e-3
    assert m.item_tower is not None and m.item_tower.adaptor.weight is not m.tower.adaptor.weight


@pytest.mark.parametrize("kw", [{}, {"item_id_embedding": True, "num_items": 50}])
def test_encode_catalogue_chunked_checkpointed_matches_encode_items(kw):
    m = model(**kw).double()  # float64: chunking only changes summation order
    x = torch.randn(23, D, dtype=torch.float64)
    ids = ids_for(m, (23,))
    ref = m.encode_items(x, ids)
    w = torch.randn(23, 24, dtype=torch.float64)
    (ref * w).sum().backward()
    ref_grads = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    out = m.encode_catalogue(x, ids, chunk_size=5, checkpoint=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    (out * w).sum().backward()
    for p, g in zip(m.parameters(), ref_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-9, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(m.encode_catalogue(x, ids, chunk_size=7), ref.detach(), rtol=0, atol=1e-12)


def test_training_mode_dropout_is_active_and_finite():
    m = model().train()
    x, mask, _ = batch()
    a, b = m.encode_sequence(x, mask), m.encode_sequence(x, mask)
    assert (a - b).abs().max() > 0 and torch.isfinite(a).all()
    i1, i2 = m.encode_items(x[:, 0]), m.encode_items(x[:, 0])
    assert (i1 - i2).abs().max() > 0 and torch.isfinite(i1).all()


@pytest.mark.parametrize("chunk", [8192, 3])  # one chunk, and activation-checkpointed chunks (recompute)
def test_items_without_dropout_in_training_mode_equal_eval_and_get_gradients(chunk):
    m = model(dropout=0.5).train()
    x = torch.randn(7, D)
    with torch.no_grad():
        ref = m.eval().encode_items(x)
    m.train()
    out = m.encode_catalogue(x, chunk_size=chunk, dropout=False)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert m.training and m.tower.training  # the switch is restored
    out.sum().backward()
    assert m.tower.adaptor.weight.grad is not None and m.tower.adaptor.weight.grad.abs().sum() > 0
    noisy = m.encode_items(x)  # default: dropout on, as before
    assert (noisy - ref).abs().max() > 1e-3


def test_bert_style_init_and_parameter_count():
    m = model()
    assert float(m.tower.adaptor.weight.detach().std()) == pytest.approx(0.02, rel=0.1)
    assert torch.count_nonzero(m.tower.adaptor.bias) == 0
    assert torch.equal(m.tower.layers[0].attn_norm.weight, torch.ones(32))
    # the paper's Amazon size: 4 layers, 4096 -> 768 -> 4096 has 34.6M trainable parameters (spec 1.2)
    big = LEARNModel(ModelConfig(input_dim=4096, output_dim=4096))
    assert sum(p.numel() for p in big.parameters()) == 34_647_808


def test_config_validation():
    with pytest.raises(LearnError, match="num_heads"):
        LEARNModel(tiny(num_heads=5))
    with pytest.raises(LearnError, match="num_items"):
        LEARNModel(tiny(item_id_embedding=True))
    with pytest.raises(LearnError, match="position"):
        LEARNModel(tiny(position="rope"))
    m = model(position="learned")
    with pytest.raises(LearnError, match="max_len"):
        m.encode_sequence(torch.zeros(1, 9, D), torch.ones(1, 9, dtype=torch.bool))
    with pytest.raises(LearnError, match="item_ids"):
        model(item_id_embedding=True, num_items=3).encode_items(torch.zeros(2, D))


def test_item_bias_adds_a_per_item_offset_to_every_dot_product(tmp_path):
    plain, biased = model(), model(item_bias=True, num_items=5)
    biased.load_state_dict({**plain.state_dict(), "item_bias": torch.tensor([0.0, 0.5, -1.0, 2.0, 0.25])})
    x, mask, _ = batch()
    items, ids = torch.randn(5, D), torch.arange(5)
    users, cat = biased.encode_users(x, mask), biased.encode_catalogue(items, ids)
    assert users.shape == (4, 25) and cat.shape == (5, 25) and biased.cfg.embedding_dim == 25
    torch.testing.assert_close(users[:, -1], torch.ones(4))
    want = plain.encode_users(x, mask) @ plain.encode_items(items).T + biased.item_bias  # cos(u, i) + b_i
    torch.testing.assert_close(users @ cat.T, want)
    sel = biased.encode_positions(x, mask, mask)  # the training read-out carries the same constant coordinate
    torch.testing.assert_close(sel[:, -1], torch.ones(int(mask.sum())))
    save_pretrained(biased, biased.cfg, tmp_path / "m")
    torch.testing.assert_close(load_pretrained(tmp_path / "m").encode_catalogue(items, ids), cat)
    with pytest.raises(LearnError, match="item_ids"):
        biased.encode_items(items)
    with pytest.raises(LearnError, match="num_items"):
        LEARNModel(tiny(item_bias=True))


@pytest.mark.parametrize("kw", VARIANTS)
def test_save_load_roundtrip(tmp_path, kw):
    m = model(**kw)
    save_pretrained(m, m.cfg, tmp_path / "ck", extra_config={"train": {"lr": 1e-4}, "model": {"ignored": 1}})
    doc = yaml.safe_load((tmp_path / "ck" / "config.yaml").read_text())
    assert doc["model"] == dataclasses.asdict(m.cfg) and doc["train"] == {"lr": 1e-4}
    back = load_pretrained(tmp_path / "ck")
    assert back.cfg == m.cfg
    x, mask, _ = batch()
    ids = ids_for(m, mask.shape)
    torch.testing.assert_close(back.eval().encode_sequence(x, mask, ids), m.encode_sequence(x, mask, ids))


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_pretrained(tmp_path)
    m = model()
    save_pretrained(m, m.cfg, tmp_path / "ck")
    (tmp_path / "ck" / "config.yaml").write_text("model:\n  input_dim: 16\n  bogus: 1\n")
    with pytest.raises(DataError, match="bogus"):
        load_pretrained(tmp_path / "ck")
    (tmp_path / "ck" / "config.yaml").write_text(yaml.safe_dump({"model": dataclasses.asdict(tiny(output_dim=8))}))
    with pytest.raises(DataError, match="do not match"):
        load_pretrained(tmp_path / "ck")


def test_autocast_and_half_inputs():
    m = model()
    x, mask, _ = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.encode_users(x, mask)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, m.encode_users(x, mask), rtol=0, atol=0.05)
    half = m.encode_items(x[:, 0].half())  # an fp16 item store is cast to the weights' dtype
    torch.testing.assert_close(half, m.encode_items(x[:, 0].half().float()))


def test_table_items_are_the_clean_normalised_input_vectors():
    """item_tower=table (the SASRec-style reference): an item is adaptor(text) + its ID vector, L2-normalised, with no
    dropout even in training mode; the user tower still reads the same vectors through embed_norm and the layers."""
    m = model(item_tower="table", hidden_size=24, embed_norm=True, item_id_embedding=True, num_items=50, dropout=0.5)
    m.train()
    x = torch.randn(7, D)
    ids = torch.arange(7)
    want = torch.nn.functional.normalize(m.tower.adaptor(x) + m.id_embedding(ids), dim=-1)
    torch.testing.assert_close(m.encode_items(x, ids), want)
    torch.testing.assert_close(m.encode_items(x, ids, dropout=False), want)
    with pytest.raises(LearnError, match="output_dim == model.hidden_size"):
        ModelConfig(item_tower="table", hidden_size=32, num_heads=4, output_dim=24).validate()
