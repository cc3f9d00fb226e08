"""``learn embed --add``: embed new items into an existing item store, with the settings the store was made with.

``python -m learn embed --data NEW_ITEMS --out STORE --add`` embeds the items of NEW_ITEMS (a folder with
``item_text.json`` or ``meta_data.json``, like any ``embed`` input) that STORE does not hold yet, with the store's own
LLM, layer, max length, text template and storage dtype (read from its ``__meta__``), so their vectors are what a
full re-embedding would give. Flags that contradict the store (another ``--llm``, ``--layer``, ``--max-length`` or
``--store-dtype``), or a changed item-text template, are refused with one line. Items already in the store are kept
as they are. The new store (old records copied, new ones added, ``__meta__`` updated with an ``added`` log) is built
in a temporary sibling and renamed into place: readers see the old store or the new one, never a mix.

``learn recommend`` / ``learn export`` then rank the added items (they are candidates whenever they are in the store,
even outside the dataset's catalogue), without retraining.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

from learn.errors import LearnError

# flags of `learn embed` that must agree with the store (dest, meta attribute)
_FIXED = (("llm", "model"), ("layer", "layer"), ("max_length", "max_length"), ("store_dtype", "dtype"))


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests the user passed on the command line (parsed again with every default suppressed)."""
    p = copy.deepcopy(parser)
    for a in p._actions:
        a.default, a.required = argparse.SUPPRESS, False
    return set(vars(p.parse_args(argv)))


def add_items(data: str | Path, out: str | Path, *, given: dict | None = None, batch_size: int = 32,
              dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False, log=print) -> Path:
    """Embed ``data``'s items missing from the store ``out`` and add them (atomic). Returns ``out``.

    ``given`` holds the explicitly passed ``llm``/``layer``/``max_length``/``store_dtype``: each must match the store.
    """
    from learn.data.store import META_KEY, ItemStore, StoreWriter, _release, shared_env
    from learn.data.text import template_hash
    from learn.encoder import DEFAULT_MODEL_NAME, load_encoder, load_item_texts, pick_device

    out = Path(out)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LearnError("--add runs in one process (not under torchrun)")
    if not out.exists():
        raise LearnError(f"--add: item store {out} not found (build it first: python -m learn embed --out {out})")
    store = ItemStore(out)
    meta = store.meta
    given = dict(given or {})
    if "llm" in given and given["llm"] is None:
        given["llm"] = DEFAULT_MODEL_NAME
    for dest, attr in _FIXED:
        want = getattr(meta, attr)
        if dest in given and want is not None and given[dest] != want:
            flag = "--" + dest.replace("_", "-")
            raise LearnError(f"--add: {out} was embedded with {attr} {want!r}; {flag} {given[dest]!r} would mix "
                             f"vectors of different kinds (drop {flag} or pass {flag} {want})")
    if meta.text_template_hash and meta.text_template_hash != template_hash():
        raise LearnError(f"--add: {out} was embedded with another item-text template (hash "
                         f"{meta.text_template_hash}, now {template_hash()}): re-embed the whole store instead")
    if meta.pooling != "mean":
        raise LearnError(f"--add: {out} uses pooling {meta.pooling!r}; `learn embed` only makes mean pooling")
    texts, source = load_item_texts(data)
    new = [k for k in texts if k not in store]
    if not new:
        log(f"{out}: all {len(texts)} items of {data} are already in the store; nothing to add")
        return out
    compute = dtype if dtype != "auto" else meta.extra.get("compute_dtype") or "auto"
    dev = pick_device(device)
    if dev == "cpu" and compute == "fp16" and dtype == "auto":
        log(f"note: {out} was embedded in fp16 on a GPU; embedding the new items in fp32 on the CPU "
            "(pass --device cuda for the same arithmetic)")
        compute = "fp32"
    llm = None if meta.model == DEFAULT_MODEL_NAME else meta.model
    enc, model_id, compute = load_encoder(llm, dtype=compute, device=dev, layer=meta.layer,
                                          max_length=meta.max_length or 500, trust_remote_code=trust_remote_code)
    if enc.dim != store.dim:
        raise LearnError(f"--add: {meta.model} gives {enc.dim}-d vectors but {out} holds {store.dim}-d ones")
    log(f"adding {len(new)} of {len(texts)} items from {data} ({source}) to {out} ({len(store)} items) with "
        f"{model_id} layer {meta.layer} on {dev} ({compute})")
    vectors = enc.embed([texts[k] for k in new], batch_size=batch_size)
    with StoreWriter(out, meta.dtype, overwrite=True) as w:
        with shared_env(out).begin(buffers=True) as txn:
            w.copy_from(txn, lambda kb: kb != META_KEY)
        w.dim = store.dim
        w.put_many(new, vectors)
        meta.extra = {**meta.extra, "added": [*meta.extra.get("added", []), {
            "count": len(new), "source": str(data), "text_source": source, "compute_dtype": compute,
            "device": dev, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]}
        store.close()
        _release(out)  # this process's reader of the old store: closed before the folder is replaced
        w.finalize(meta)
    log(f"wrote {out}: {w.meta.count} items ({len(new)} added)")
    return out
