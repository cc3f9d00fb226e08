"""convert-official: the authors' PreferenceAlignmentModule (rebuilt from transformers) -> our model, same outputs."""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertEncoder

from learn.checkpoint import load_pretrained
from learn.convert import convert_official, main
from learn.errors import DataError, LearnError
from tests.conftest import run_cli

IN, HID, LAYERS, HEADS, FFN, OUT = 20, 32, 2, 4, 48, 24


class AuthorsPAL(nn.Module):
    """The authors' PreferenceAlignmentModule (src/model/LEARN.py) with a tiny BertConfig instead of bert-base."""

    def __init__(self):
        super().__init__()
        cfg = BertConfig(hidden_size=HID, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN)
        cfg._attn_implementation = "eager"  # additive float mask added to the scores, as in transformers 4.46
        self.summary_encoder = BertEncoder(cfg)
        self.adaptor = nn.Linear(IN, HID)
        self.mlp = nn.Sequential(nn.Linear(HID, OUT))

    @staticmethod
    def extended_causal_mask(m: torch.Tensor) -> torch.Tensor:
        bs, n = m.shape
        ids = torch.arange(n)
        causal = (ids[None, None, :].repeat(bs, n, 1) <= ids[None, :, None]).to(m.dtype)
        ext = causal[:, None, :, :] * m[:, None, None, :]
        return (1.0 - ext) * -10000.0  # [B,1,L,L]

    def user(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        last = (m.sum(1, keepdim=True) - 1).long().unsqueeze(2).tile(1, 1, OUT)
        h = self.summary_encoder(self.adaptor(x), attention_mask=self.extended_causal_mask(m)).last_hidden_state
        return F.normalize(torch.gather(self.mlp(h), 1, last).reshape(len(m), OUT), dim=-1)

    def item(self, x: torch.Tensor) -> torch.Tensor:  # target as a length-1 sequence, no mask
        h = self.summary_encoder(self.adaptor(x[:, None])).last_hidden_state
        return F.normalize(self.mlp(h), dim=-1).reshape(len(x), OUT)


def _save_like_authors(model: nn.Module, path):
    # DDP-wrapped model -> "module." prefixes; epoch/step/name/optimizer next to the state dict
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model.item(torch.randn(2, IN)).sum()
    loss.backward()
    opt.step()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 20, "step": 123, "name": "pretrain_u2iLoss_pred-next-item", "state_dict": state,
                "optimizer": opt.state_dict()}, path)


@pytest.fixture
def authors(tmp_path):
    torch.manual_seed(0)
    model = AuthorsPAL()
    with torch.no_grad():  # non-trivial LayerNorm parameters so a swapped mapping would show
        for mod in model.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.1)
    path = tmp_path / "epoch20.pt"
    _save_like_authors(model, path)
    return model.eval(), path


def _inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 6, IN, generator=g)
    lengths = torch.tensor([6, 3, 1, 4, 2])
    mask = torch.arange(6)[None] < lengths[:, None]
    return x * mask[..., None], mask, torch.randn(7, IN, generator=g)


def test_converted_model_matches_authors_outputs(authors, tmp_path):
    ref, path = authors
    ours, cfg = convert_official(path, tmp_path / "ck", num_heads=HEADS)
    assert (cfg.input_dim, cfg.hidden_size, cfg.num_layers, cfg.ffn_size, cfg.output_dim) == (IN, HID, LAYERS, FFN,
                                                                                             OUT)
    loaded = load_pretrained(tmp_path / "ck").eval()
    x, mask, items = _inputs()
    with torch.no_grad():
        ref_users, ref_items = ref.user(x, mask.float()), ref.item(items)
        for model in (ours.eval(), loaded):
            assert (model.encode_users(x, mask) - ref_users).abs().max() < 1e-5
            assert (model.encode_items(items) - ref_items).abs().max() < 1e-5
            assert (model.encode_catalogue(items, chunk_size=3) - ref_items).abs().max() < 1e-5
    doc = yaml.safe_load((tmp_path / "ck" / "config.yaml").read_text())
    assert doc["model"]["num_heads"] == HEADS and doc["model"]["position"] == "none"


def test_wrong_head_count_changes_outputs(authors, tmp_path):
    ref, path = authors
    ours, _ = convert_official(path, tmp_path / "ck", num_heads=2)  # heads are not in the weights
    x, mask, _ = _inputs()
    with torch.no_grad():
        assert (ours.eval().encode_users(x, mask) - ref.user(x, mask.float())).abs().max() > 1e-4


def test_bare_state_dict_and_cli(authors, tmp_path):
    ref, _ = authors
    bare = tmp_path / "bare.pt"
    torch.save(ref.state_dict(), bare)
    assert main([str(bare), str(tmp_path / "a"), "--num-heads", str(HEADS), "--input-dim", str(IN)]) == 0
    with pytest.raises(LearnError, match="already exists"):
        main([str(bare), str(tmp_path / "a"), "--num-heads", str(HEADS)])
    assert main([str(bare), str(tmp_path / "a"), "--num-heads", str(HEADS), "--overwrite"]) == 0
    with pytest.raises(LearnError, match="--input-dim 4096"):
        main([str(bare), str(tmp_path / "b"), "--input-dim", "4096", "--num-heads", str(HEADS)])
    assert not (tmp_path / "b").exists()
    x, mask, _ = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(load_pretrained(tmp_path / "a").encode_users(x, mask), ref.user(x, mask.float()),
                                   rtol=0, atol=1e-5)


def test_pickled_object_checkpoint_is_refused(tmp_path, authors):
    ref, _ = authors
    bad = tmp_path / "pickled.pt"
    torch.save({"state_dict": ref.state_dict(), "args": argparse.Namespace(lr=1e-4)}, bad)
    with pytest.raises(DataError, match="needs pickled code"):
        convert_official(bad, tmp_path / "out")
    proc = run_cli("convert-official", str(bad), str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "argparse.Namespace" in lines[0]
    assert not (tmp_path / "out").exists()


def test_bad_inputs(tmp_path, authors):
    ref, _ = authors
    with pytest.raises(DataError, match="file not found"):
        convert_official(tmp_path / "missing.pt", tmp_path / "o")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a torch checkpoint"):
        convert_official(tmp_path / "junk.pt", tmp_path / "o")
    extra = dict(ref.state_dict(), **{"summary_encoder.layer.0.extra.weight": torch.zeros(1)})
    torch.save({"state_dict": extra}, tmp_path / "extra.pt")
    with pytest.raises(LearnError, match="unexpected keys"):
        convert_official(tmp_path / "extra.pt", tmp_path / "o", num_heads=HEADS)
    partial = {k: v for k, v in ref.state_dict().items() if "attention.self.key" not in k}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(LearnError, match="missing"):
        convert_official(tmp_path / "partial.pt", tmp_path / "o", num_heads=HEADS)
    torch.save({"state_dict": {"foo.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(LearnError, match="not a LEARN"):
        convert_official(tmp_path / "other.pt", tmp_path / "o")
