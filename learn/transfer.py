"""Carry an ``init_from`` run's catalogue rows (item-ID vectors, item biases) to another catalogue by item match.

A start from another run (``train.init_from``) loads every tensor that fits by name and shape. The item-ID table
and the per-item bias are indexed by the source's catalogue, so across catalogues a shape match means nothing.
``train.init_items=key|text`` instead copies the row of every item this run shares with the source run's dataset:
by item key (a catalogue that grew or shrank), or by normalised item text (two catalogues of the same things keyed
differently, e.g. MovieLens-100K and -1M). Unmatched items keep their initial rows.
"""

from __future__ import annotations

from pathlib import Path

import torch

from learn.checkpoint import saved_config, unwrap
from learn.data.text import normalise
from learn.errors import LearnError

# the rows carried
CARRIED = ("id_embedding.weight", "item_bias")


def _catalogue(doc: dict | None) -> tuple[str, str | None]:
    """(train.stage, the folder its item rows follow: data.pretrain_corpus when it pretrained, else data.dataset)."""
    train, data = (doc or {}).get("train"), (doc or {}).get("data")
    stage = str(train.get("stage", "")) if isinstance(train, dict) else ""
    data = data if isinstance(data, dict) else {}
    return stage, data.get("pretrain_corpus" if stage == "pretrain" else "dataset")


def source_dataset(weights: Path) -> Path:
    """The ``data.dataset`` folder of the finetune run whose ``model.safetensors`` is ``weights`` (its config.yaml)."""
    path = (weights.parent if weights.suffix == ".safetensors" else weights) / "config.yaml"
    doc = saved_config(weights)
    if doc is None:
        raise LearnError(f"train.init_items: cannot read the source run's config ({path})")
    stage, dataset = _catalogue(doc)
    if stage != "finetune" or not dataset:
        raise LearnError(f"train.init_items: the source ({path}) is not a finetune run on a dataset (a pretraining "
                         f"run's rows follow its corpus, not data.dataset); use train.init_items=shape")
    if not Path(dataset).is_dir():
        raise LearnError(f"train.init_items: the source run's dataset {dataset} (data.dataset in {path}) is not found")
    return Path(dataset)


def match_items(source: list[str], target: list[str]) -> dict[int, int]:
    """``{target index: source index}`` for equal entries; an entry that occurs twice in the source matches nothing."""
    index: dict[str, int] = {}
    twice = set()
    for i, s in enumerate(source):
        if s in index:
            twice.add(s)
        index[s] = i
    return {t: index[s] for t, s in enumerate(target) if s in index and s not in twice}


def carry_rows(model: torch.nn.Module, state: dict[str, torch.Tensor], pairs: dict[int, int]) -> list[str]:
    """Copy the source ``state``'s rows into ``model``'s catalogue tensors for ``{target index: source index}``;
    the names carried."""
    own = unwrap(model).state_dict()  # shares the parameters' storage: rows are written in place
    carried = []
    for name in CARRIED:
        if name not in own or name not in state:
            continue
        src, dst = state[name], own[name]
        if src.shape[1:] != dst.shape[1:]:
            raise LearnError(f"train.init_items: {name} rows of the source have shape {tuple(src.shape[1:])}, this "
                             f"model's {tuple(dst.shape[1:])}; use the source's model.* width")
        if pairs:
            rows = src[torch.tensor(list(pairs.values()), dtype=torch.long)]
            with torch.no_grad():
                dst[torch.tensor(list(pairs), dtype=torch.long, device=dst.device)] = rows.to(dst.device, dst.dtype)
        carried.append(name)
    return carried


def carry_catalogue(model: torch.nn.Module, weights: Path, state: dict[str, torch.Tensor], keys: list[str],
                    texts: list[str] | None, by: str) -> str:
    """Match this run's items (``keys``, ``texts`` in index order) to the dataset of the source run (``weights``,
    whose tensors are ``state``), copy their rows; the line to log."""
    from learn.data.formats import load_dataset

    src = load_dataset(source_dataset(weights), validate=False)
    if by == "key":
        pairs = match_items(src.item_keys, keys)
    else:
        pairs = match_items([normalise(t) for t in src.texts()], [normalise(t) for t in texts or []])
        pairs = {t: s for t, s in pairs.items() if texts[t].strip()}
    what = ", ".join(carry_rows(model, state, pairs)) or "no catalogue tensor"
    return f"carried {what} rows of {len(pairs):,} of {len(keys):,} items from the source run (matched by {by})"
