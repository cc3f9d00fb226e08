"""Atomic step checkpoints: ``checkpoints/step-XXXXXXXX/`` = model.safetensors + train_state.pt + config.yaml.

A step folder is built in a temporary sibling and renamed when complete, with a ``manifest.json`` of sha256 sums, so a
crash never leaves a folder that looks complete and a corrupted one is detected and skipped on resume. Only rank 0
writes. Everything is read back through safetensors or ``torch.load(weights_only=True)``.

The identity of the item store a model was trained on (LLM, layer, text template) travels in its
``model.safetensors`` metadata (:func:`store_identity`), so a store made another way is refused at resume,
initialisation and evaluation. (Who holds a run folder is learn.runfolder's business.)
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from learn.config import RETIRED, retired
from learn.errors import DataError, LearnError
from learn.io import atomic_dir, atomic_write_bytes, atomic_write_text, sha256_file
from learn.model import LEARNModel, ModelConfig

STEP_RE = re.compile(r"^step-(\d{8})$")
FILES = ("model.safetensors", "train_state.pt", "config.yaml")
WEIGHT_FILES = ("model.safetensors", "config.yaml")  # a weights-only folder (best/)
PARTIAL_RE = re.compile(r"^\.step-\d{8}\.(tmp|old)-")  # left by a crash inside atomic_dir / replace_dir
STORE_KEY = "learn.item_store"  # safetensors metadata: the identity of the item store the weights were trained on
CATALOGUE_KEY = "learn.catalogue"  # safetensors metadata: the catalogue's identity (learn.catalogue)
IDENTITY = ("model", "layer", "text_template_hash")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP (``.module``) and torch.compile (``._orig_mod``) wrappers, however nested."""
    while (isinstance(inner := getattr(model, "module", None), torch.nn.Module)
           or isinstance(inner := getattr(model, "_orig_mod", None), torch.nn.Module)):
        model = inner
    return model


def weights_file(path: Path) -> Path:
    """A weights folder's model.safetensors (a .safetensors path is itself)."""
    return path if path.suffix == ".safetensors" else path / "model.safetensors"


def weights_folder(path: Path) -> Path:
    """The folder of a weights file (a folder is itself): where its config.yaml and manifest.json live."""
    return path.parent if path.suffix == ".safetensors" else path


def saved_config(weights: Path) -> dict | None:
    """The config.yaml saved with a weights file / folder (a training run's), or None when missing or unreadable."""
    path = weights_folder(weights) / "config.yaml"
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


def save_weights(model: torch.nn.Module, config_yaml: str, folder: str | Path, store: dict | None = None,
                 manifest: bool = False, catalogue: dict | None = None) -> Path:
    """model.safetensors (+ the identities of the item store and of the catalogue in its metadata) + config.yaml into
    ``folder`` (created if needed), each file written atomically; ``manifest``: also a manifest.json of their sha256
    sums. Wrap the call in :func:`learn.io.atomic_dir` to make a whole folder appear at once."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt"}
    if store:
        metadata[STORE_KEY] = json.dumps(store, sort_keys=True)
    if catalogue:
        metadata[CATALOGUE_KEY] = json.dumps(catalogue, sort_keys=True)
    state = {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}
    atomic_write_bytes(folder / "model.safetensors", save(state, metadata=metadata))
    atomic_write_text(folder / "config.yaml", config_yaml)
    if manifest:
        write_manifest(folder, WEIGHT_FILES)
    return folder


def save_pretrained(model: torch.nn.Module, cfg: ModelConfig, path: str | Path,
                    extra_config: dict[str, Any] | None = None) -> Path:
    """A weights folder readable by :func:`load_pretrained`: ``model.safetensors`` + ``config.yaml`` (the ``model:``
    section + ``extra_config``)."""
    doc = {"model": asdict(cfg), **{k: v for k, v in (extra_config or {}).items() if k != "model"}}
    return save_weights(model, yaml.safe_dump(doc, sort_keys=False), path)


def load_pretrained(path: str | Path, map_location: str | torch.device = "cpu") -> LEARNModel:
    """Load a weights folder (``model.safetensors`` + ``config.yaml``); other config sections are ignored.

    The config is available as ``model.cfg``. Returned in eval mode (like transformers' ``from_pretrained``):
    call ``.train()`` before training.
    """
    path = Path(path)
    cfg_path, weights = path / "config.yaml", path / "model.safetensors"
    for p in (cfg_path, weights):
        if not p.is_file():
            raise DataError(p, "file not found (a checkpoint folder holds model.safetensors + config.yaml)")
    try:
        doc = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataError(cfg_path, f"malformed YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict) or "model" not in doc:
        raise DataError(cfg_path, "no 'model:' section")
    section = doc["model"]
    if not isinstance(section, dict):
        raise DataError(cfg_path, "the 'model' section is not a mapping")
    known = {f.name for f in fields(ModelConfig)}
    for key in sorted(set(section) - known):
        if (why := retired(f"model.{key}", section[key])) is not None:
            raise DataError(cfg_path, why)
    unknown = sorted(k for k in set(section) - known if f"model.{k}" not in RETIRED)
    if unknown:
        raise DataError(cfg_path, f"unknown model config keys: {', '.join(unknown)}")
    cfg = ModelConfig(**{k: v for k, v in section.items() if k in known})
    cfg.validate()
    model = LEARNModel(cfg)
    load_matching(model, path).require_all("match config.yaml")
    return model.to(map_location).eval()


def write_manifest(folder: Path, names: tuple[str, ...]) -> None:
    (folder / "manifest.json").write_text(json.dumps({name: sha256_file(folder / name) for name in names}, indent=1))


def identity_of(meta) -> dict:
    """The identity of an item store (a StoreMeta): which LLM, layer and text template made its vectors."""
    return {k: getattr(meta, k) for k in IDENTITY}


def read_metadata(weights: str | Path) -> dict[str, str] | None:
    """The metadata of a weights file / folder's model.safetensors, or None when it cannot be read."""
    try:
        with safe_open(str(weights_file(Path(weights))), "pt") as f:
            return f.metadata() or {}
    except (OSError, SafetensorError):
        return None


def store_identity(weights: str | Path) -> dict | None:
    """The item-store identity recorded in a weights file / folder, or None (weights from elsewhere or older)."""
    raw = (read_metadata(weights) or {}).get(STORE_KEY)
    try:
        return json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None


def check_store(recorded: dict | None, meta, store_path, what: str) -> None:
    """Refuse a store whose LLM / layer / template differ from the ones ``what`` was trained on."""
    if not recorded:
        return
    have = identity_of(meta)
    diff = [f"{k} {have.get(k)!r} vs {recorded.get(k)!r}" for k in IDENTITY if k in recorded and have[k] != recorded[k]]
    if diff:
        raise LearnError(f"item store {store_path} was made differently from the one {what} was trained on "
                         f"({', '.join(diff)}); embed the items with the same LLM, layer and text template")


def check_model_store(model: torch.nn.Module, weights: str | Path, store, store_path=None) -> None:
    """Refuse a store a model cannot read: another vector size, or another LLM / layer / template than in training
    (the identity recorded in the weights; see :func:`check_store`). Used by ``learn eval``, recommend and export."""
    store_path = store.path if store_path is None else store_path
    dim = unwrap(model).cfg.input_dim
    if store.dim != dim:
        raise LearnError(f"{store_path}: item vectors have dim {store.dim}, the model expects {dim} "
                         f"(embed with the same LLM the model was trained on)")
    check_store(store_identity(weights), store.meta, store_path, f"the model {weights}")


def save_checkpoint(ckpt_root: Path, step: int, model: torch.nn.Module, train_state: dict[str, Any], config_yaml: str,
                    keep_last_n: int = 2, store: dict | None = None, catalogue: dict | None = None) -> Path:
    """Write ``ckpt_root/step-{step:08d}`` atomically, then prune older step folders beyond ``keep_last_n``."""
    final = ckpt_root / f"step-{step:08d}"
    with atomic_dir(final, overwrite=True) as tmp:
        save_weights(model, config_yaml, tmp, store=store, catalogue=catalogue)
        torch.save(train_state, tmp / "train_state.pt")
        write_manifest(tmp, FILES)
    if keep_last_n > 0:
        for old in list_steps(ckpt_root)[:-keep_last_n]:
            shutil.rmtree(ckpt_root / f"step-{old:08d}", ignore_errors=True)
    return final


def _subfolders(root: Path, pattern: re.Pattern) -> list[str]:
    return [p.name for p in root.iterdir() if p.is_dir() and pattern.match(p.name)] if root.is_dir() else []


def list_steps(ckpt_root: Path) -> list[int]:
    return sorted(int(STEP_RE.match(name)[1]) for name in _subfolders(ckpt_root, STEP_RE))


def remove_partial(ckpt_root: Path) -> list[str]:
    """Delete the half-written ``.step-*.tmp-*`` (and moved-aside ``.old-*``) folders a killed writer left behind.

    Only call it while holding the run's lock: a live writer's temporary folder looks the same.
    """
    gone = _subfolders(ckpt_root, PARTIAL_RE)
    for name in gone:
        shutil.rmtree(ckpt_root / name, ignore_errors=True)
    return gone


def verify(folder: Path, required: tuple[str, ...] = FILES) -> str | None:
    """None when the folder is complete and every file its manifest lists matches its sha256; otherwise why not."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return "no manifest.json (incomplete write)"
    try:
        manifest = json.loads(manifest_path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        return "manifest.json is corrupted"
    for name in dict.fromkeys([*required, *(n for n in manifest if isinstance(n, str) and "/" not in n)]):
        path = folder / name
        if not path.exists():
            return f"{name} is missing"
        if manifest.get(name) != sha256_file(path):
            return f"{name} does not match its checksum"
    return None


def verify_weights(weights: Path) -> None:
    """Refuse (one line) a weights folder whose manifest.json does not match its files before anything is loaded.

    Step folders must have a manifest; other folders (best/, an exported model) are checked when they carry one.
    """
    folder = weights_folder(weights)
    if STEP_RE.match(folder.name) or (folder / "manifest.json").exists():
        problem = verify(folder, FILES if STEP_RE.match(folder.name) else WEIGHT_FILES)
        if problem:
            raise LearnError(f"{folder}: checkpoint failed its sha256 check ({problem}); it was modified or damaged "
                             f"after it was written")


def latest_valid(ckpt_root: Path, log=print) -> Path | None:
    """The newest step folder that verifies; corrupted ones are reported and skipped."""
    for step in reversed(list_steps(ckpt_root)):
        folder = ckpt_root / f"step-{step:08d}"
        if (problem := verify(folder)) is None:
            return folder
        log(f"skipping checkpoint {folder}: {problem}")
    return None


def load_train_state(folder: Path) -> dict[str, Any]:
    if problem := verify(folder):
        raise LearnError(f"{folder}: not a usable checkpoint ({problem})")
    return torch.load(folder / "train_state.pt", map_location="cpu", weights_only=True)


def resolve_weights(path: str | Path) -> Path:
    """A run folder -> its best/ weights (else its newest valid checkpoint); a weights folder or file -> itself."""
    path = Path(path)
    if path.suffix == ".safetensors" or (path / "model.safetensors").exists():
        return path
    if (path / "best" / "model.safetensors").exists():
        return path / "best"
    if (latest := latest_valid(path / "checkpoints")) is not None:
        return latest
    raise LearnError(f"{path}: no model.safetensors, best/ or checkpoints/step-* found")


def load_weights(model: torch.nn.Module, folder: str | Path) -> Path:
    """Load model.safetensors from a run / checkpoint / model folder (or a .safetensors file) into ``model``; every
    tensor must fit. Returns the folder (or file) read."""
    report = load_matching(model, folder)
    report.require_all("fit the model")
    return report.source


# ----------------------------------------------------------------------------------------------- partial loading
# catalogue-specific tensors: they depend on the item set (one row per item), so a start from a run on another
# catalogue drops them by shape; every other tensor belongs to the towers (adaptor, layers, positions, projection)
CATALOGUE_TENSORS = ("id_embedding.weight", "item_bias")


@dataclass
class LoadReport:
    source: Path
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # model tensor -> why it kept its initial value
    unused: list[str] = field(default_factory=list)  # source tensors the model has no place for
    params_loaded: int = 0
    params_total: int = 0

    @property
    def towers_missing(self) -> list[str]:
        return [k for k in self.skipped if k not in CATALOGUE_TENSORS]

    def summary(self) -> str:
        n = len(self.loaded) + len(self.skipped)
        text = (f"initialised from {self.source}: {len(self.loaded)}/{n} tensors, "
                f"{self.params_loaded:,}/{self.params_total:,} parameters loaded")
        if self.skipped:
            shown = [f"{k} ({why})" for k, why in list(self.skipped.items())[:8]]
            more = len(self.skipped) - len(shown)
            text += f"; skipped {len(self.skipped)}: " + ", ".join(shown) + (f" ... (+{more} more)" if more else "")
        if self.unused:
            text += f"; unused from the source: {', '.join(self.unused[:6])}{' ...' if len(self.unused) > 6 else ''}"
        return text

    def require_all(self, what: str) -> None:
        """Refuse (one line) a load that left a model tensor at its initial value or a source tensor unused."""
        if self.skipped or self.unused:
            skipped = [f"{k} ({why})" for k, why in list(self.skipped.items())[:3]]
            problem = f"weights do not {what}: skipped {skipped}, unused {self.unused[:3]}"
            raise DataError(weights_file(self.source), problem)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file / folder (one line naming the file when it cannot be read)."""
    try:
        return load_file(weights_file(path))
    except (OSError, SafetensorError) as e:
        raise DataError(weights_file(path), f"unreadable safetensors file ({e})") from None


def load_matching(model: torch.nn.Module, folder: str | Path, exclude: tuple[str, ...] = (),
                  state: dict[str, torch.Tensor] | None = None) -> LoadReport:
    """Load every tensor of a run / checkpoint / weights folder that fits ``model`` by name and shape; report.

    ``exclude``: model tensors left at their initial value whatever fits (e.g. catalogue rows carried by item match).
    ``state``: the folder's tensors when the caller has read them already.
    """
    path = resolve_weights(folder)
    state = read_state(path) if state is None else state
    target = unwrap(model)
    own = target.state_dict()
    report = LoadReport(source=path, unused=[k for k in state if k not in own])
    usable = {}
    for k, v in own.items():
        report.params_total += v.numel()
        if k in exclude:
            report.skipped[k] = "carried by item match"
        elif k not in state:
            report.skipped[k] = "not in the source"
        elif state[k].shape != v.shape:
            report.skipped[k] = f"shape {tuple(state[k].shape)} vs {tuple(v.shape)}"
        else:
            usable[k] = state[k]
            report.loaded.append(k)
            report.params_loaded += v.numel()
    target.load_state_dict(usable, strict=False)
    return report
