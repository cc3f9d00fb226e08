"""The identity of a catalogue: which items, in which order, a model was trained on (sha256 of the ordered item keys +
their count), and the refusals built on it.

Every ``model.safetensors`` the trainer writes records it in its metadata (``learn.catalogue``, beside the item store's
identity). A model's item-ID table and per-item biases are indexed by that order, so ``learn eval``, ``recommend`` and
``export`` refuse a dataset whose catalogue differs, and ``train.init_from`` refuses to load those rows by shape into a
run on another catalogue. A text-only model (no ID table, no biases) may rank another catalogue when asked to
(``--other-catalogue``): nothing of it is indexed by item. Weights written before the identity was recorded fall back
to the run's saved ``config.yaml`` (its dataset folder's items when that folder still exists, else the item count of
the ID table) and say so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from learn.checkpoint import CATALOGUE_KEY, read_metadata, saved_config
from learn.errors import LearnError

FLAG = "--other-catalogue"


def identity(keys: Sequence[str], source: str | Path = "") -> dict:
    """``{"sha256", "count", "source"}`` of the ordered item keys (``source``: the folder they come from, for
    messages only; never compared)."""
    text = json.dumps([str(k) for k in keys], ensure_ascii=False, separators=(",", ":"))
    return {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "count": len(keys), "source": str(source)}


def recorded(weights: str | Path) -> dict | None:
    """The catalogue identity in a weights file / folder's metadata, or None (weights written before it was
    recorded, converted or exported from elsewhere)."""
    raw = (read_metadata(weights) or {}).get(CATALOGUE_KEY)
    try:
        found = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None
    return found if isinstance(found, dict) and isinstance(found.get("sha256"), str) else None


def _describe(ident: dict) -> str:
    source = f" of {ident['source']}" if ident.get("source") else ""
    return f"{ident['count']:,} items{source}, sha256 {ident['sha256'][:12]}"


def catalogue_folder(doc: dict | None) -> tuple[str, str | None]:
    """(train.stage, the folder a saved config's item rows follow: data.pretrain_corpus when it pretrained, else
    data.dataset)."""
    train, data = (doc or {}).get("train"), (doc or {}).get("data")
    stage = str(train.get("stage", "")) if isinstance(train, dict) else ""
    data = data if isinstance(data, dict) else {}
    return stage, data.get("pretrain_corpus" if stage == "pretrain" else "dataset")


def saved_catalogue(weights: Path) -> tuple[str | None, dict | None]:
    """For weights without a recorded identity: (the catalogue folder named by the run's saved config.yaml, its
    identity computed from that folder's smap.json when it still exists)."""
    from learn.data.formats import read_index_map
    from learn.errors import DataError
    from learn.io import resolve

    _, folder = catalogue_folder(saved_config(weights))
    if not isinstance(folder, str) or not folder:
        return None, None
    smap_path = resolve(Path(folder) / "smap.json")
    if not smap_path.is_file():
        return folder, None
    try:
        smap = read_index_map(smap_path, "item")
    except DataError:
        return folder, None
    return folder, identity(sorted(smap, key=smap.__getitem__), folder)


def _catalogue_rows(cfg) -> list[str]:
    """The model's parts indexed by its own catalogue (config names), empty for a text-only model."""
    return [name for name, on in (("model.item_id_embedding", cfg.item_id_embedding),
                                  ("model.item_bias", cfg.item_bias)) if on]


def check_inference(weights: Path, model_cfg, keys: Sequence[str], data: str | Path, other: bool = False,
                    note: Callable[[str], None] = print) -> None:
    """Refuse to rank the catalogue ``keys`` (of the dataset ``data``) with a model trained on another one.

    ``other`` (``--other-catalogue``): a text-only model may rank it anyway (refused for a model with an ID table,
    item biases or no text input). Weights without a recorded identity are compared through their run's config.yaml
    (see :func:`saved_catalogue`); when that cannot decide, one ``note:`` line says so and the ranking goes on.
    """
    have = identity(keys, data)
    rec = recorded(weights)
    rows = _catalogue_rows(model_cfg)
    if rec is not None:
        if rec["sha256"] == have["sha256"]:
            return
        problem = (f"the catalogue of {data} ({_describe(have)}) is not the one {weights} was trained on "
                   f"({_describe(rec)})")
    else:
        folder, ident = saved_catalogue(weights)
        if (folder and Path(folder).resolve() == Path(data).resolve()) or (ident and ident["sha256"] == have["sha256"]):
            return
        num_items = getattr(model_cfg, "num_items", 0)
        if ident is not None:
            problem = (f"the catalogue of {data} ({_describe(have)}) is not the one of {folder} ({_describe(ident)}), "
                       f"which {weights} was trained on (its config.yaml; no catalogue identity recorded)")
        elif rows and num_items != have["count"]:
            problem = (f"{weights} has per-item rows for {num_items:,} items, {data} has {have['count']:,} (no "
                       f"catalogue identity recorded)")
        else:
            where = f"trained on {folder}, which is gone" if folder else "its config.yaml names no dataset"
            if not other:
                same = f" ({num_items:,} items either way)" if rows else ""
                note(f"note: {weights} records no catalogue identity (written before it was recorded; {where}): "
                     f"cannot check that {data} is its catalogue{same}")
                return
            problem = f"{weights} records no catalogue identity ({where})"
    if not other:
        hint = (f"; a text-only model could rank it from item text with {FLAG}" if not rows and model_cfg.text_input
                else "; its " + " / ".join(rows) + " would score other items by index" if rows else "")
        raise LearnError(f"{problem}: use the dataset the model was trained on{hint}")
    if rows or not model_cfg.text_input:
        why = " and ".join(rows) if rows else "model.text_input=false"
        raise LearnError(f"{problem}: {FLAG} ranks another catalogue from item text alone, and this model has "
                         f"{why} (rows or inputs indexed by its own catalogue)")


def check_init_rows(source: Path, loaded: Sequence[str], keys: Sequence[str], own_folder: str) -> None:
    """``train.init_from`` with ``train.init_items=shape``: refuse catalogue rows (``loaded``: the ID table / item
    biases that fit by shape) taken from a run on another catalogue than this run's ``keys``."""
    if not loaded:
        return
    have = identity(keys, own_folder)
    rec = recorded(source)
    if rec is None:
        folder, rec = saved_catalogue(source)
        if rec is None:
            if folder and own_folder and Path(folder).resolve() != Path(own_folder).resolve():
                raise LearnError(
                    f"train.init_from={source}: its {', '.join(loaded)} follow {folder} (no catalogue identity "
                    f"recorded, and that folder is gone), not this run's {own_folder}: loading them by shape would "
                    f"give items other items' rows; use train.init_items=key|text to carry rows by item")
            return
    if rec["sha256"] != have["sha256"]:
        raise LearnError(
            f"train.init_from={source}: its {', '.join(loaded)} follow another catalogue ({_describe(rec)}) than this "
            f"run's ({_describe(have)}): loading them by shape would give items other items' rows; use "
            f"train.init_items=key|text to carry rows by item key or text")


def check_validation(keys: Sequence[str], corpus: str, eval_keys: Sequence[str], dataset: str, model_cfg) -> None:
    """Pretraining with catalogue rows validates on ``data.dataset`` by item index: refuse when its catalogue is not
    the corpus's."""
    rows = _catalogue_rows(model_cfg)
    if rows and identity(keys)["sha256"] != identity(eval_keys)["sha256"]:
        raise LearnError(
            f"{' / '.join(rows)}: validation on data.dataset={dataset} ({len(eval_keys):,} items) would look up the "
            f"per-item rows of the pretraining corpus {corpus} ({len(keys):,} items) by index: set data.dataset= "
            f"(no validation) or validate on a dataset with the corpus's catalogue")
