"""A trained model loaded for inference, the one way ``learn eval``, ``learn recommend`` and ``learn export`` do it.

:func:`load_model`: the device; the weights a ``--ckpt`` names (a run folder: its ``best/``, else its newest valid
checkpoint); their sha256 manifest checked before anything is read; the model; the run's ``data.max_history`` (from
the config.yaml saved with the weights, unless given); the dataset with its item store; then the refusals: a store of
another vector size or made another way (LLM, layer, text template), and a dataset whose catalogue is not the
model's (learn.catalogue; ``other_catalogue`` lets a text-only model rank one).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from learn.data.bundle import DataBundle


@dataclass
class LoadedModel:
    model: torch.nn.Module  # learn.model.LEARNModel, in eval mode, on ``device``
    weights: Path  # what --ckpt resolved to: a weights folder (or a .safetensors file)
    data: DataBundle  # the dataset, its item store and the catalogue's item vectors
    max_history: int
    device: torch.device

    @property
    def folder(self) -> Path:
        """The folder holding the weights (and their config.yaml)."""
        from learn.checkpoint import weights_folder

        return weights_folder(self.weights)


def run_max_history(weights: Path, default: int = 40) -> int:
    """data.max_history from the config.yaml saved with the weights (a training run's), else ``default``."""
    from learn.checkpoint import saved_config

    try:
        return int((saved_config(weights) or {}).get("data", {}).get("max_history", default))
    except (AttributeError, TypeError, ValueError):
        return default


def load_model(ckpt: str | Path, data: str | Path, store: str | Path, device: str = "auto",
               max_history: int | None = None, other_catalogue: bool = False) -> LoadedModel:
    """Load ``ckpt`` with the dataset ``data`` and its item ``store``, checked as the module docstring says."""
    from learn.catalogue import check_inference
    from learn.checkpoint import check_model_store, load_pretrained, resolve_weights, verify_weights, weights_folder
    from learn.data.bundle import load_bundle
    from learn.distributed import pick_device

    dev = pick_device(device)
    weights = resolve_weights(ckpt)
    verify_weights(weights)  # the sha256 manifest, before anything is loaded
    model = load_pretrained(weights_folder(weights)).to(dev)
    max_history = run_max_history(weights) if max_history is None else max_history
    bundle = load_bundle(data, store)
    check_model_store(model, weights, bundle.store, store)
    check_inference(weights, model.cfg, bundle.dataset.item_keys, data, other_catalogue,
                    note=lambda line: print(line, file=sys.stderr))
    return LoadedModel(model, weights, bundle, max_history, dev)
