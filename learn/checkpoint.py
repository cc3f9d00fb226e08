"""Atomic step checkpoints: ``checkpoints/step-XXXXXXXX/`` = model.safetensors + train_state.pt + config.yaml.

A step folder is built in a temporary sibling and renamed when complete, with a ``manifest.json`` of sha256 sums, so a
crash never leaves a folder that looks complete and a corrupted one is detected and skipped on resume. Only rank 0
writes. Everything is read back through safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from learn.errors import LearnError
from learn.io import atomic_dir

STEP_RE = re.compile(r"^step-(\d{8})$")
FILES = ("model.safetensors", "train_state.pt", "config.yaml")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}


def save_weights(model: torch.nn.Module, config_yaml: str, folder: Path) -> None:
    """model.safetensors + config.yaml into an existing folder."""
    save_file(model_state(model), str(folder / "model.safetensors"))
    (folder / "config.yaml").write_text(config_yaml)


def save_checkpoint(
    ckpt_root: Path,
    step: int,
    model: torch.nn.Module,
    train_state: dict[str, Any],
    config_yaml: str,
    keep_last_n: int = 2,
    protect: tuple[int, ...] = (),
) -> Path:
    """Write ``ckpt_root/step-{step:08d}`` atomically, then prune older step folders beyond ``keep_last_n``."""
    final = ckpt_root / f"step-{step:08d}"
    with atomic_dir(final, overwrite=True) as tmp:
        save_weights(model, config_yaml, tmp)
        torch.save(train_state, tmp / "train_state.pt")
        manifest = {name: _sha256(tmp / name) for name in FILES}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if keep_last_n > 0:
        steps = sorted(list_steps(ckpt_root))
        for old in steps[:-keep_last_n]:
            if old not in protect:
                shutil.rmtree(ckpt_root / f"step-{old:08d}", ignore_errors=True)
    return final


def list_steps(ckpt_root: Path) -> list[int]:
    if not ckpt_root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in ckpt_root.iterdir() if p.is_dir() and (m := STEP_RE.match(p.name)))


def verify(folder: Path) -> str | None:
    """None when the folder is a complete, uncorrupted checkpoint; otherwise the reason."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return "no manifest.json (incomplete write)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "manifest.json is corrupted"
    for name in FILES:
        path = folder / name
        if not path.exists():
            return f"{name} is missing"
        if manifest.get(name) != _sha256(path):
            return f"{name} does not match its checksum"
    return None


def latest_valid(ckpt_root: Path, log=print) -> Path | None:
    """The newest step folder that verifies; corrupted ones are reported and skipped."""
    for step in reversed(list_steps(ckpt_root)):
        folder = ckpt_root / f"step-{step:08d}"
        problem = verify(folder)
        if problem is None:
            return folder
        log(f"skipping checkpoint {folder}: {problem}")
    return None


def load_train_state(folder: Path) -> dict[str, Any]:
    problem = verify(folder)
    if problem:
        raise LearnError(f"{folder}: not a usable checkpoint ({problem})")
    return torch.load(folder / "train_state.pt", map_location="cpu", weights_only=True)


def resolve_weights(path: str | Path) -> Path:
    """A run folder -> its best/ weights (else its newest valid checkpoint); a weights folder or file -> itself."""
    path = Path(path)
    if path.suffix == ".safetensors" or (path / "model.safetensors").exists():
        return path
    if (path / "best" / "model.safetensors").exists():
        return path / "best"
    latest = latest_valid(path / "checkpoints")
    if latest is not None:
        return latest
    raise LearnError(f"{path}: no model.safetensors, best/ or checkpoints/step-* found")


def load_weights(model: torch.nn.Module, folder: str | Path, strict: bool = True) -> Path:
    """Load model.safetensors from a run / checkpoint / model folder (or a .safetensors file) into ``model``."""
    path = resolve_weights(folder)
    file = path if path.suffix == ".safetensors" else path / "model.safetensors"
    if not file.exists():
        raise LearnError(f"{file}: weights not found (expected a checkpoint folder with model.safetensors)")
    state = load_file(str(file))
    target = unwrap(model)
    if strict:
        missing, unexpected = target.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise LearnError(
                f"{file}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        return path
    own = target.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise LearnError(f"{file}: no weight fits the model (different architecture?)")
    target.load_state_dict(usable, strict=False)
    return path
