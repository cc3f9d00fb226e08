"""A start from another run's weights (``train.init_from``): the towers' shape, the tensors, the catalogue rows.

:func:`inherit_architecture` takes the towers' shape from the source run's config.yaml where this run did not choose
it; :func:`start_from` loads every tensor that fits by name and shape and refuses a start whose towers did not load.
The item-ID table and the per-item bias are indexed by the source's catalogue, so across catalogues a shape match
means nothing: ``train.init_items=key|text`` instead copies the row of every item this run shares with the source
run's dataset, by item key (a catalogue that grew or shrank) or by normalised item text (two catalogues of the same
things keyed differently, e.g. MovieLens-100K and -1M). Unmatched items keep their initial rows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from learn import checkpoint as ckpt
from learn.catalogue import catalogue_folder, check_init_rows
from learn.checkpoint import saved_config, unwrap, weights_folder
from learn.data.text import normalise
from learn.errors import LearnError

if TYPE_CHECKING:
    from learn.config import RunConfig
    from learn.data.formats import SeqDataset

# model keys a train.init_from start takes from the source run's config.yaml unless given on the command line: the
# shape of the towers (dropout, the ID table and the item bias stay this run's choice: catalogue/recipe specific)
INHERITED_MODEL_KEYS = ("hidden_size", "num_layers", "num_heads", "ffn_size", "output_dim", "max_len", "position",
                        "item_tower", "embed_norm", "text_input", "layer_norm_eps")

# the rows carried
CARRIED = ("id_embedding.weight", "item_bias")


def source_dataset(weights: Path) -> Path:
    """The ``data.dataset`` folder of the finetune run whose ``model.safetensors`` is ``weights`` (its config.yaml)."""
    path = weights_folder(weights) / "config.yaml"
    doc = saved_config(weights)
    if doc is None:
        raise LearnError(f"train.init_items: cannot read the source run's config ({path})")
    stage, dataset = catalogue_folder(doc)
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


def source_weights(init_from: str) -> Path:
    """The weights ``train.init_from`` names (a run folder: its best/ or newest checkpoint), checked against their
    manifest before anything is read; one line saying how to go on when there are none."""
    try:
        source = ckpt.resolve_weights(init_from)
    except LearnError as e:  # e.g. run_finetune.sh before any pretraining
        raise LearnError(f"train.init_from: {e}; pretrain first (bash run_pretrain.sh), pass "
                         f"train.init_from=<a run folder>, or train.init_from= to start from scratch") from None
    ckpt.verify_weights(source)
    return source


def inherit_architecture(cfg: RunConfig, source: Path, explicit, log: Callable[[str], None]) -> None:
    """Take the towers' shape from the init_from run's config.yaml into ``cfg.model`` where this run did not choose
    it: a key in ``explicit`` (given on the command line), or, when ``explicit`` is None, one off its default."""
    folder = weights_folder(source)
    model = (saved_config(source) or {}).get("model")
    if not isinstance(model, dict):
        return
    defaults = type(cfg.model)()
    taken = []
    for key in INHERITED_MODEL_KEYS:
        if key not in model:
            continue
        chosen = (f"model.{key}" in explicit if explicit is not None
                  else getattr(cfg.model, key) != getattr(defaults, key))
        if not chosen and getattr(cfg.model, key) != model[key]:
            taken.append(f"{key}={model[key]}")
            setattr(cfg.model, key, model[key])
    if taken:
        log(f"model from {folder / 'config.yaml'} (train.init_from): {', '.join(taken)}")


def start_from(model: torch.nn.Module, source: Path, cfg: RunConfig, store, keys: list[str],
               dataset: SeqDataset | None, log: Callable[[str], None], own: str) -> None:
    """Load the init_from weights ``source`` into ``model`` (a run on ``store`` whose items are ``keys``, from the
    folder ``own``; ``dataset`` gives their texts for ``init_items=text``): the towers by name and shape, the
    catalogue rows carried by item match, or by shape only from a run on the same catalogue. Refuses a store made
    another way, rows of another catalogue and a start whose towers did not load."""
    t = cfg.train
    ckpt.check_store(ckpt.store_identity(source), store.meta, store.path, f"train.init_from={source}")
    carry = t.init_items != "shape"
    state = ckpt.read_state(source)  # read once: the towers load from it, the carried rows are copied from it
    report = ckpt.load_matching(model, source, exclude=CARRIED if carry else (), state=state)
    log(report.summary())
    missing = report.towers_missing
    if not report.loaded or (missing and not t.init_partial):
        towers = len(report.loaded) + len(missing)
        raise LearnError(
            f"train.init_from={t.init_from}: the towers did not load ({len(missing)} of {towers} tower tensors do "
            f"not fit, e.g. {', '.join(f'{k} ({report.skipped[k]})' for k in missing[:3])}); use the source's "
            f"model.* settings" + (" or train.init_partial=true to start from what fits" if report.loaded else ""))
    if carry:
        texts = dataset.texts() if t.init_items == "text" else None  # finetune: keys are the dataset's items
        log(carry_catalogue(model, source, state, keys, texts, t.init_items))
    else:  # rows loaded by shape must follow this run's catalogue
        check_init_rows(source, [k for k in ckpt.CATALOGUE_TENSORS if k in report.loaded], keys, own)
