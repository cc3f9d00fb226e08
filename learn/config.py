"""Typed run configuration: dataclasses loaded from YAML, ``key=value`` overrides, unknown keys refused.

A run config has five sections, ``model``, ``data``, ``train``, ``log`` and ``ckpt``; overrides use dotted paths
(``train.lr=1e-4``) and values are parsed as YAML scalars (``true``, ``3``, ``1e-4``, ``[10, 50]``). A config file may
start from another one (top-level ``extends: base.yaml``, relative to it). Options with a fixed set of values are
``Literal`` types, refused when anything else is given. The resolved config is written beside every run as
``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from learn.choices import coerce
from learn.data.samples import Sampling
from learn.errors import LearnError
from learn.io import atomic_write_text
from learn.losses import LOSSES
from learn.model import ModelConfig


@dataclass
class DataConfig:
    dataset: str = ""  # canonical dataset folder (finetune; also zero-shot eval during pretraining)
    store: str = ""  # LMDB item store for `dataset`
    pretrain_corpus: str = ""  # RecFormer-format pretraining corpus folder (pretrain stage)
    pretrain_store: str = ""  # item store for the pretraining corpus (defaults to `store`)
    max_history: int = 40  # history items fed to the user tower (last ones kept)
    min_seq_len: int = 5  # pretrain only: corpus sequences outside [min_seq_len, max_seq_len] items are dropped
    max_seq_len: int = 40
    finetune_min_len: int = 2  # finetune only: train sequences shorter than this (at least 2) are dropped (paper: 5)
    finetune_max_len: int = 0  # finetune only: longer train sequences are dropped; 0 = no bound (paper: 40)
    num_workers: int = 0  # DataLoader workers (each opens the LMDB lazily)
    preload_store: bool = True  # read every needed item vector into RAM once (fast for catalogues that fit)
    stream_corpus: bool = True  # pretrain: read sequences per sample from a flat file built once (needs smap.json)


@dataclass
class TrainConfig:
    stage: Literal["pretrain", "finetune"] = "finetune"
    seed: int = 123
    epochs: int = 30
    max_steps: int = 0  # stop after this many optimizer steps (0 = no limit)
    batch_size: int = 64  # per rank
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup: str = "0"  # linear warm-up before the cosine decay: N optimizer steps (20) or epochs ("1 epoch")
    clip_grad: float = 0.0  # 0 = off
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU; fp16: GradScaler
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N (a string, not a Literal: N is free)
    # auto (infonce for pretrain, softmax for finetune) or a name in learn.losses.LOSSES (infonce, dense, softmax)
    loss: str = "auto"
    # random: one split point per sequence and epoch | all_prefixes: every split point | windows: consecutive
    # max_history windows from the end, every item a target once per epoch (needs loss_positions=all)
    sampling: Sampling = "random"
    # target: the loss at the sampled split point only (paper code) | all: the next item at every position
    loss_positions: Literal["target", "all"] = "all"
    scale: float = 20.0  # logit scale = 1 / temperature
    mask_history: bool = False  # finetune: mask the user's history items in the softmax
    item_dropout: bool = True  # false: the items a loss scores against are encoded without dropout (user side keeps it)
    dense_user_positions: int = 4  # dense all-action loss: user positions sampled per sequence
    dense_target_window: int = 4  # dense all-action loss: items in the future target window
    catalogue_chunk: int = 8192  # finetune: items re-encoded per chunk (activation checkpointing per chunk)
    eval_every: int = 1  # epochs between validations (0 = never)
    eval_batch_size: int = 256
    eval_metric: str = "ndcg@10"  # one of EVAL_METRICS
    patience: int = 0  # early stopping: validations without improvement (0 = off)
    init_from: str = ""  # weights-only start (e.g. a pretraining checkpoint folder)
    # true: start even when some tower tensors of init_from do not fit (ID tables / item biases may always differ)
    init_partial: bool = False
    # init_from's catalogue rows (ID table, item bias): shape = loaded when the shape fits; key / text = copied for
    # the items this run shares with the source run's dataset, matched by item key / normalised text (learn.transfer)
    init_items: Literal["shape", "key", "text"] = "shape"
    # exponential moving average of the weights, updated every optimizer step (0 = off); when on, validation, the
    # best checkpoint and the test read the averaged weights
    ema_decay: float = 0.0

    def warmup_steps(self, steps_per_epoch: int) -> int:
        """``warmup`` in optimizer steps: ``N`` steps, or ``X epoch(s)`` = int(X * steps_per_epoch)."""
        found = re.fullmatch(r"\s*(\d+)\s*|\s*(\d+(?:\.\d*)?|\.\d+)\s*epochs?\s*", self.warmup)
        if found is None:
            raise LearnError(f"config train.warmup: expected optimizer steps (20) or epochs (1 epoch), "
                             f"got {self.warmup!r}")
        return int(found[1]) if found[1] is not None else int(float(found[2]) * steps_per_epoch)


@dataclass
class LogConfig:
    run_name: str = ""  # default: <stage>-<dataset name>
    output_dir: str = "runs"
    wandb: bool = True  # honours WANDB_MODE (offline/disabled work without network) and WANDB_ENTITY (team)
    wandb_project: str = "LEARN_amazon2018"
    log_every: int = 10  # optimizer steps between metric lines
    progress: bool = True  # tqdm on rank 0


@dataclass
class CkptConfig:
    save_every_epochs: int = 1
    save_every_steps: int = 0  # 0 = only at epoch ends
    keep_last_n: int = 2
    resume: str = "auto"  # auto: newest complete checkpoint of this run | none | path to a step folder
    # the run folder already holds a run with another config: refuse (list the keys) | fresh (move it aside to
    # <name>.old-<time>, start anew) | accept (resume; only keys that cannot change what was learnt may differ)
    on_mismatch: Literal["refuse", "fresh", "accept"] = "refuse"


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    ckpt: CkptConfig = field(default_factory=CkptConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.log.output_dir) / self.log.run_name


# options retired in issue 28 (text+ID fusion experiments no shipped config uses; benchmarks/quality.md keeps their
# results and names the commit that still runs them), with the value that meant "off": a config or a saved
# config.yaml that holds that value reads as before, any other value is refused
RETIRED = {"model.id_init": "normal", "model.id_dropout": 0.0, "model.id_min_count": 0,
           "train.id_weight_decay": 0.0, "train.id_decay_half_count": 0.0}
RETIRED_AT = "5900d58"


def retired(key: str, value: Any) -> str | None:
    """None when ``key`` is not a retired option or holds its "off" value; else why it cannot be used."""
    if key not in RETIRED or value == RETIRED[key]:
        return None
    return (f"{key}={value!r}: a retired text+ID fusion option (issue 28; results in benchmarks/quality.md, runnable "
            f"at commit {RETIRED_AT})")


def _apply(obj: Any, mapping: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    for key, value in mapping.items():
        where = f"{prefix}{key}"
        if key not in names and where in RETIRED:
            if (why := retired(where, value)) is not None:
                raise LearnError(f"config: {why}")
            continue
        if key not in names:
            raise LearnError(f"config: unknown key {where!r} (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise LearnError(f"config {where}: expected a mapping")
            _apply(current, value, prefix=f"{where}.")
        else:
            setattr(obj, key, coerce(value, hints[key], where))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], YAML-parsed value)."""
    if "=" not in text:
        raise LearnError(f"override {text!r}: expected key=value (e.g. train.lr=1e-4)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _apply_file(cfg: RunConfig, path: Path, chain: tuple[Path, ...] = ()) -> None:
    """Apply a YAML config file; its optional top-level ``extends: other.yaml`` (relative to it) is applied first."""
    if not path.exists():
        raise LearnError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise LearnError(f"{path}: malformed YAML ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise LearnError(f"{path}: expected a mapping at the top level")
    base = data.pop("extends", None)
    if base is not None:
        if not isinstance(base, str) or path.resolve() in chain:
            raise LearnError(f"{path}: extends must name one other config file, without cycles (got {base!r})")
        _apply_file(cfg, path.parent / base, (*chain, path.resolve()))
    _apply(cfg, data)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a YAML config (optional, with what it ``extends``) then apply ``key=value`` overrides; validate."""
    cfg = RunConfig()
    if path:
        _apply_file(cfg, Path(path))
    for text in overrides:
        keys, value = parse_override(text)
        _apply(cfg, functools.reduce(lambda nested, key: {key: nested}, reversed(keys), value))
    validate(cfg)
    return cfg


# metrics that a validation produces (learn.evaluate.evaluate_split with its default ks=(10, 50))
EVAL_METRICS = ("ndcg@10", "recall@10", "ndcg@50", "recall@50", "mrr")


def _non_finite(obj: Any, prefix: str = "") -> list[str]:
    """Dotted names of the float fields (or float list items) of a config that are NaN or infinite."""
    bad = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            bad += _non_finite(value, f"{prefix}{f.name}.")
            continue
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            bad.append(f"{prefix}{f.name}={value}")
    return bad


def validate(cfg: RunConfig, model_final: bool | None = None) -> None:
    """Refuse a config that cannot work (one line naming the key), before any data is loaded or any file written.

    ``model_final``: whether the ``model.*`` section is the one the run will build. By default it is unless
    ``train.init_from`` is set (the towers' shape may still come from that run's config.yaml); the trainer checks
    again with ``model_final=True`` once it has taken it."""
    t, m, d = cfg.train, cfg.model, cfg.data
    if model_final is None:
        model_final = not t.init_from
    bad = _non_finite(cfg)
    if bad:
        raise LearnError(f"config: {', '.join(bad)}: numbers must be finite (not NaN/Inf)")
    if t.loss != "auto" and t.loss not in LOSSES:
        raise LearnError(f"config train.loss: expected one of {'|'.join(['auto', *LOSSES])}, got {t.loss!r}")
    t.warmup_steps(1)
    checks = [
        (re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device),
         f"train.device: expected auto|cpu|cuda|cuda:N, got {t.device!r}"),
        (t.sampling != "windows" or t.loss_positions == "all", "train.sampling=windows needs train.loss_positions=all"),
        (t.batch_size > 0 and t.grad_accum > 0, "train.batch_size and train.grad_accum must be positive"),
        (t.lr > 0, f"train.lr must be positive, got {t.lr}"),
        (t.epochs >= 1, f"train.epochs must be at least 1, got {t.epochs}"),
        (t.max_steps >= 0, f"train.max_steps must be >= 0 (0 = no limit), got {t.max_steps}"),
        (t.eval_metric in EVAL_METRICS, f"train.eval_metric: unknown {t.eval_metric!r} ({', '.join(EVAL_METRICS)})"),
        (t.eval_batch_size >= 1, f"train.eval_batch_size must be at least 1, got {t.eval_batch_size}"),
        (0.0 <= t.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {t.ema_decay}"),
        (t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}"),
        (t.init_items == "shape" or t.init_from,
         "train.init_items=key|text needs train.init_from (the run to carry rows from)"),
        (t.init_items != "text" or t.stage == "finetune",
         "train.init_items=text needs a finetune run (its dataset's item texts); a pretraining run can use key"),
        (m.num_heads >= 1, f"model.num_heads must be at least 1, got {m.num_heads}"),
        (m.num_heads < 1 or m.hidden_size % m.num_heads == 0,
         f"model.hidden_size {m.hidden_size} is not divisible by model.num_heads {m.num_heads}"),
        (cfg.data.max_history > 0, "data.max_history must be positive"),
        *_combinations(cfg),
    ]
    if model_final:
        checks.append((m.position != "learned" or d.max_history <= m.max_len,
                       f"data.max_history {d.max_history} exceeds model.max_len {m.max_len} (model.position=learned "
                       f"has max_len positions): lower data.max_history or raise model.max_len"))
    for ok, msg in checks:
        if not ok:
            raise LearnError(f"config: {msg}")
    if model_final:  # the model section's own rules (num_items is set from the data later)
        try:
            dataclasses.replace(m, num_items=max(1, m.num_items)).validate()
        except LearnError as e:
            raise LearnError(f"config: {e}") from None


def _combinations(cfg: RunConfig) -> list[tuple[bool, str]]:
    """Values and combinations that would fail (or be silently ignored) only once training runs."""
    t, d, log, ck = cfg.train, cfg.data, cfg.log, cfg.ckpt
    loss = t.loss if t.loss != "auto" else ("infonce" if t.stage == "pretrain" else "softmax")
    spec = LOSSES.get(loss)
    return [
        (log.log_every >= 1, f"log.log_every must be at least 1, got {log.log_every}"),
        (min(ck.keep_last_n, ck.save_every_epochs, ck.save_every_steps) >= 0,
         "ckpt.keep_last_n, ckpt.save_every_epochs and ckpt.save_every_steps must be >= 0"),
        (t.eval_every >= 0 and t.patience >= 0, "train.eval_every and train.patience must be >= 0"),
        (t.scale > 0, f"train.scale must be positive, got {t.scale}"),
        (t.catalogue_chunk >= 1, f"train.catalogue_chunk must be at least 1, got {t.catalogue_chunk}"),
        (spec is None or not spec.window or min(t.dense_user_positions, t.dense_target_window) >= 1,
         "train.dense_user_positions and train.dense_target_window must be at least 1"),
        (not t.mask_history or loss == "softmax",
         f"train.mask_history=true needs the softmax loss (train.loss is {loss})"),
        (spec is None or not spec.catalogue or t.stage == "finetune" or d.preload_store,
         f"train.loss={loss} scores the whole catalogue every step: it needs data.preload_store=true"),
        (d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}"),
        (d.min_seq_len <= d.max_seq_len,
         f"data.min_seq_len {d.min_seq_len} exceeds data.max_seq_len {d.max_seq_len}: no sequence would be left"),
        (d.finetune_max_len == 0 or d.finetune_min_len <= d.finetune_max_len,
         f"data.finetune_min_len {d.finetune_min_len} exceeds data.finetune_max_len {d.finetune_max_len} (0 = no "
         f"bound): no training sequence would be left"),
    ]


def save_config(cfg: RunConfig, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
