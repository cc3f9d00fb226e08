"""Convert the authors' PreferenceAlignmentModule checkpoint (``epochN.pt``) into our checkpoint folder.

Their module: ``adaptor`` (Linear), ``summary_encoder`` (transformers BertEncoder: ``layer.{i}.attention.self.
{query,key,value}``, ``attention.output.{dense,LayerNorm}``, ``intermediate.dense``, ``output.{dense,LayerNorm}``)
and ``mlp.0`` (Linear). Sizes are inferred from the weights; the head count is not recoverable (flag, default 12).
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch
from torch import Tensor

from learn.checkpoint import save_pretrained
from learn.errors import ArgumentParser, DataError, LearnError
from learn.io import atomic_dir
from learn.model import LEARNModel, ModelConfig

_LAYER = re.compile(r"summary_encoder\.layer\.(\d+)\.(.+)")
# their per-layer names (minus .weight/.bias) -> ours; several names are concatenated (the fused qkv)
_LAYER_MAP = {
    ("attention.output.dense",): "attn_out",
    ("attention.output.LayerNorm",): "attn_norm",
    ("intermediate.dense",): "ffn_in",
    ("output.dense",): "ffn_out",
    ("output.LayerNorm",): "ffn_norm",
    ("attention.self.query", "attention.self.key", "attention.self.value"): "qkv",
}


def load_official_state(path: str | Path) -> dict[str, Tensor]:
    """The authors' state dict from ``torch.save`` output (weights_only load; ``module.`` prefixes stripped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with warnings.catch_warnings():  # torch's "Detected pickle protocol N" warning: the refusal below says it all
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if not found:
            raise DataError(path, "not a torch checkpoint (unreadable pickle data)") from None
        raise DataError(path, f"refused: the checkpoint needs pickled code to load (it references {found.group(1)}); "
                              "only tensors and plain containers are accepted (torch.load weights_only=True)") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise DataError(path, f"not a torch checkpoint ({str(e).strip().splitlines()[0] if str(e) else e!r})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise DataError(path, "no state dict of tensors (expected {'state_dict': ...} or a bare state dict)")
    return {re.sub(r"^((module|_orig_mod)\.)+", "", key): value for key, value in state.items()}


def infer_config(state: dict[str, Tensor], num_heads: int = 12) -> ModelConfig:
    """ModelConfig matching the authors' weights (heads from the argument; max_len/dropout keep our defaults)."""
    layers = {int(m.group(1)) for k in state if (m := _LAYER.match(k))}
    try:
        hidden, input_dim = state["adaptor.weight"].shape
        output_dim = state["mlp.0.weight"].shape[0]
        ffn = state["summary_encoder.layer.0.intermediate.dense.weight"].shape[0] if layers else 4 * hidden
    except KeyError as e:
        raise LearnError(f"not a LEARN PreferenceAlignmentModule state dict: missing {e.args[0]!r}") from None
    if layers != set(range(len(layers))):
        raise LearnError(f"summary_encoder layers are not numbered 0..N-1: {sorted(layers)}")
    cfg = ModelConfig(input_dim=int(input_dim), hidden_size=int(hidden), num_layers=len(layers), num_heads=num_heads,
                      ffn_size=int(ffn), output_dim=int(output_dim), position="none", item_tower="shared")
    cfg.validate()
    return cfg


def convert_state(state: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Map the authors' names onto ours (query/key/value concatenated into the fused ``qkv``); strict."""
    used: set[str] = set()

    def take(key: str) -> Tensor:
        if key not in state:
            raise LearnError(f"missing {key!r} in the authors' checkpoint")
        used.add(key)
        return state[key]

    pairs = [(("adaptor",), "tower.adaptor"), (("mlp.0",), "tower.proj")] + [
        (tuple(f"summary_encoder.layer.{i}.{name}" for name in theirs), f"tower.layers.{i}.{ours}")
        for i in range(cfg.num_layers) for theirs, ours in _LAYER_MAP.items()]
    out = {f"{ours}.{suffix}": torch.cat([take(f"{name}.{suffix}") for name in theirs])
           for theirs, ours in pairs for suffix in ("weight", "bias")}
    unused = sorted(set(state) - used)
    if unused:
        raise LearnError(f"unexpected keys in the authors' checkpoint (not a plain PreferenceAlignmentModule?): "
                         f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}")
    return out


def convert_official(src: str | Path, out: str | Path, num_heads: int = 12, input_dim: int | None = None,
                     overwrite: bool = False) -> tuple[LEARNModel, ModelConfig]:
    """Convert ``src`` into the checkpoint folder ``out`` (written atomically); returns the loaded model."""
    state = load_official_state(src)
    cfg = infer_config(state, num_heads=num_heads)
    if input_dim is not None and input_dim != cfg.input_dim:
        raise LearnError(f"--input-dim {input_dim} does not match the checkpoint's adaptor input {cfg.input_dim}")
    model = LEARNModel(cfg)
    try:
        model.load_state_dict(convert_state(state, cfg), strict=True)
    except RuntimeError as e:  # shape mismatch, e.g. a wrong head count cannot cause this but odd sizes can
        raise LearnError(f"weights do not fit the inferred config: {str(e).splitlines()[0]}") from None
    out = Path(out)
    if out.exists() and not overwrite:
        raise LearnError(f"{out} already exists (use --overwrite)")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        save_pretrained(model, cfg, tmp, extra_config={"converted_from": {"path": str(src), "format": "official"}})
    return model, cfg


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="python -m learn convert-official", description="Convert the authors' epochN.pt "
                       "(PreferenceAlignmentModule) to OUT/model.safetensors + OUT/config.yaml. Sizes are inferred "
                       "from the weights.")
    p.add_argument("checkpoint", help="the authors' checkpoint, e.g. exp/pretrain_.../checkpoints/epoch20.pt")
    p.add_argument("out", help="output checkpoint folder")
    p.add_argument("--num-heads", type=int, default=12, help="attention heads (not recoverable from the weights; "
                   "bert-base: 12)")
    p.add_argument("--input-dim", type=int, default=None,
                   help="expected LLM embedding size; checked against the weights (inferred when omitted)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = p.parse_args(argv)
    _, cfg = convert_official(args.checkpoint, args.out, num_heads=args.num_heads, input_dim=args.input_dim,
                              overwrite=args.overwrite)
    print(f"wrote {args.out}: input_dim={cfg.input_dim} hidden={cfg.hidden_size} layers={cfg.num_layers} "
          f"heads={cfg.num_heads} ffn={cfg.ffn_size} output_dim={cfg.output_dim}")
    return 0
