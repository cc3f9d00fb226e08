"""One training loop for both stages: ``python -m learn pretrain|finetune --config configs/x.yaml key=value ...``.

Runs as one process, or under ``torchrun`` with DDP (gloo on CPU, nccl on CUDA, multi-node through torchrun's
rendezvous). AdamW + warm-up/cosine in steps, gradient accumulation, clipping, AMP (bf16, or fp16 with GradScaler),
optional ``torch.compile`` and weight average (EMA); validation with full ranking, early stopping, best weights kept;
atomic step checkpoints with automatic resume (so ``torchrun --max-restarts`` recovers a crashed worker); metrics to
stdout, jsonl and wandb.

A run folder belongs to one run: rank 0 holds ``<run>/.lock`` while it trains, resumes only when the resolved config
matches the folder's ``config.yaml`` (``ckpt.on_mismatch`` says what else to do) and writes ``config.yaml`` only once
every check has passed, so a refused start leaves nothing behind. A resume is bit-identical to the uninterrupted run
(dropout included: the DataLoader never draws from the global RNG). A non-finite loss stops the run, naming the step;
SIGTERM / SIGUSR1 stop it after the step in flight, checkpointed, with exit code 75 (:mod:`learn.preempt`).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from learn import checkpoint as ckpt
from learn import distributed as D
from learn import transfer
from learn.catalogue import check_init_rows, check_validation
from learn.catalogue import identity as catalogue_identity
from learn.config import RunConfig, load_config, parse_override, retired, save_config, validate
from learn.data.bundle import item_table, load_bundle, open_store
from learn.data.corpus import SequenceFile, StreamedSequenceSamples, open_sequence_file
from learn.data.samples import Batch, Collator, SequenceSamples, lookup
from learn.errors import ArgumentParser, LearnError
from learn.evaluate import evaluate_split, skipped_note
from learn.io import atomic_dir, atomic_write_json
from learn.losses import dense_all_action, full_softmax, info_nce
from learn.model import LEARNModel
from learn.preempt import EXIT_CODE, GracefulStop, Stopped, ignore_in_worker
from learn.tracking import MetricLogger


class LossInput(NamedTuple):
    """One micro-batch as every loss receives it (item vectors, ids and masks; the extras only where a loss asks)."""

    hist_vec: Tensor
    mask: Tensor
    hist_ids: Tensor
    tgt_vec: Tensor
    tgt_ids: Tensor
    tgt_mask: Tensor
    catalogue: Tensor | None = None  # every item's vector (losses registered with catalogue=True)
    win_vec: Tensor | None = None  # the future target window (losses registered with window=True)
    win_ids: Tensor | None = None
    win_mask: Tensor | None = None


@dataclass(frozen=True)
class LossSpec:
    fn: Callable[[Objective, LossInput], Tensor]
    catalogue: bool = False  # the trainer passes the whole catalogue's vectors
    window: bool = False  # the samples carry a future target window of train.dense_target_window items


LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, catalogue: bool = False, window: bool = False):
    """Add ``fn(objective, batch: LossInput) -> scalar loss`` to the registry; ``train.loss=<name>`` selects it."""

    def add(fn):
        LOSSES[name] = LossSpec(fn, catalogue, window)
        return fn

    return add


@register_loss("infonce")
def _infonce(o: Objective, x: LossInput) -> Tensor:
    ids = o.item_ids(x.hist_ids)
    users = o.model.encode_positions(x.hist_vec, x.mask, x.tgt_mask, ids)  # only the loss positions are computed
    targets = x.tgt_ids[x.tgt_mask]
    items = o.model.encode_items(x.tgt_vec[x.tgt_mask], targets if ids is not None else None, o.item_dropout)
    return info_nce(users, items, targets, scale=o.scale)


@register_loss("softmax", catalogue=True)
def _softmax(o: Objective, x: LossInput) -> Tensor:
    ids = o.item_ids(x.hist_ids)
    users = o.model.encode_positions(x.hist_vec, x.mask, x.tgt_mask, ids)
    targets = x.tgt_ids[x.tgt_mask]
    cat_ids = torch.arange(x.catalogue.shape[0], device=x.catalogue.device)
    items = o.model.encode_catalogue(x.catalogue, cat_ids if ids is not None else None, chunk_size=o.catalogue_chunk,
                                     dropout=o.item_dropout)
    history = None
    if o.mask_history:  # row (b, p) may not recommend items seen at positions <= p
        L, dev = x.hist_ids.shape[1], x.mask.device
        upto = torch.arange(L, device=dev)[None, :] <= torch.arange(L, device=dev)[:, None]
        h = x.hist_ids[:, None, :].expand(-1, L, -1).masked_fill(~(upto[None] & x.mask[:, None, :]), -1)
        history = h[x.tgt_mask]
    return full_softmax(users, items, targets, scale=o.scale, history=history)


@register_loss("dense", window=True)
def _dense(o: Objective, x: LossInput) -> Tensor:
    ids = o.item_ids(x.hist_ids)
    seq = o.model.encode_sequence(x.hist_vec, x.mask, ids)  # samples positions of the whole sequence output
    w = o.model.encode_items(x.win_vec.flatten(0, 1), x.win_ids.flatten() if ids is not None else None,
                             o.item_dropout)
    return dense_all_action(seq, x.mask, w.view(*x.win_ids.shape, -1), x.win_mask, x.win_ids, scale=o.scale,
                            num_user_positions=o.dense_user_positions)


class Objective(nn.Module):
    """The whole loss of one micro-batch in one ``forward`` so DDP sees a single forward per backward.

    ``forward`` takes the fields of :class:`LossInput` (positionally, as the benchmarks call it) and hands them to
    the registered loss ``LOSSES[loss]``.
    """

    def __init__(self, model: LEARNModel, loss: str, scale: float, mask_history: bool, catalogue_chunk: int,
                 dense_user_positions: int, item_dropout: bool = True):
        super().__init__()
        self.model = model
        self.loss = loss
        self.spec = LOSSES[loss]
        self.scale = scale
        self.mask_history = mask_history
        self.catalogue_chunk = catalogue_chunk
        self.dense_user_positions = dense_user_positions
        self.item_dropout = item_dropout

    def item_ids(self, hist_ids: Tensor) -> Tensor | None:
        """The history's item ids when the model has an ID table, else None."""
        return hist_ids if self.model.cfg.uses_item_ids else None

    def forward(self, *args, **kwargs) -> Tensor:
        return self.spec.fn(self, LossInput(*args, **kwargs))


def build_optimizer(model: nn.Module, t) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only; the fused kernel (CPU and CUDA) when every parameter is float."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    params = decay + no_decay
    fused = bool(params) and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params) and len(
        {p.device.type for p in params}) == 1 and params[0].device.type in ("cpu", "cuda")
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(
        groups,
        lr=t.lr,
        betas=tuple(t.betas),
        eps=t.eps,
        fused=fused or None,
    )


def cosine_lambda(warmup: int, total: int):
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return f


# config keys never compared on resume: the resume switches themselves and where the folder or its workers live
IGNORED_ON_RESUME = frozenset({"ckpt.resume", "ckpt.on_mismatch", "log.output_dir", "log.progress", "data.num_workers",
                               "train.init_partial"})
# keys ckpt.on_mismatch=accept lets a resumed run change: how long it runs, how often it validates, logs and saves,
# where it runs; never what it learns from or how (data, model, loss, optimiser, seed)
SAFE_TO_CHANGE = frozenset({"train.epochs", "train.max_steps", "train.patience", "train.eval_every",
                            "train.eval_batch_size", "train.device", "train.compile", "data.preload_store",
                            "ckpt.keep_last_n", "ckpt.save_every_epochs", "ckpt.save_every_steps"})
# model keys a train.init_from start takes from the source run's config.yaml unless given on the command line: the
# shape of the towers (dropout, the ID table and the item bias stay this run's choice: catalogue/recipe specific)
INHERITED_MODEL_KEYS = ("hidden_size", "num_layers", "num_heads", "ffn_size", "output_dim", "max_len", "position",
                        "item_tower", "embed_norm", "text_input", "layer_norm_eps")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _safe_to_change(key: str) -> bool:
    return key in SAFE_TO_CHANGE or key.startswith("log.")


def _short(value, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def config_differences(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """(key, saved value, current value) for every key both configs hold that differs (ignored keys left out), and
    every retired option the saved config had on (learn.config.RETIRED)."""
    old, new = _flat(saved), _flat(current)
    gone = [(k, v, "(retired)") for k, v in old.items() if k not in new and retired(k, v) is not None]
    return [(k, old[k], v) for k, v in new.items()
            if k in old and k not in IGNORED_ON_RESUME and old[k] != v
            and not (isinstance(v, int | float) and isinstance(old[k], int | float) and float(old[k]) == float(v))
            ] + gone


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Trainer:
    def __init__(self, cfg: RunConfig, explicit: set[str] | frozenset[str] | None = None):
        """``explicit``: the dotted config keys given on the command line (they win over what a ``train.init_from``
        run's config.yaml says); None = every model key that differs from its default counts as chosen."""
        self.cfg = cfg
        t = cfg.train
        validate(cfg)  # before anything is read or written (load_config did it too; a RunConfig may come built)
        self.dist = D.init(t.device)
        self.device = self.dist.device
        self.main = self.dist.is_main
        if not cfg.log.run_name:
            name = Path(cfg.data.dataset or cfg.data.pretrain_corpus or "run").name
            cfg.log.run_name = f"{t.stage}-{name}"
        self.run_dir = cfg.run_dir
        self.ckpt_root = self.run_dir / "checkpoints"
        self.loss = t.loss if t.loss != "auto" else ("infonce" if t.stage == "pretrain" else "softmax")
        self.lock: ckpt.RunLock | None = None
        self.notes: set[str] = set()  # notice lines already printed
        self.stop, self.saved_step = GracefulStop(), -1  # a scheduler's stop signal; the last step checkpointed
        self._agree(self._claim_run_dir)  # rank 0 holds the run folder before anything is read or written
        try:
            torch.manual_seed(t.seed + self.dist.rank)
            random.seed(t.seed + self.dist.rank)
            self._build_data()
            self._build_model(explicit)
            self.config_yaml = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
            self._agree(self._check_run_dir)
        except BaseException:
            self._release(refused=True)
            raise

    # ----------------------------------------------------------------------------------------------- run folder
    def _agree(self, check) -> None:
        """Run ``check`` on rank 0; every rank raises its LearnError (one broadcast under torchrun)."""
        error = None
        if self.main:
            try:
                check()
            except LearnError as e:
                if not self.dist.enabled:
                    raise
                error = e
        if self.dist.enabled:
            message = D.broadcast_object(None if error is None else str(error))
            if message is not None:
                raise error if error is not None else LearnError(message)

    def _claim_run_dir(self) -> None:
        """Lock ``<run>/.lock`` (a second process refuses at once) and delete what a killed writer left half-done."""
        self.lock = ckpt.RunLock(self.run_dir)
        gone = ckpt.remove_partial(self.ckpt_root) + ckpt.remove_partial(self.run_dir)
        if gone:
            self.log(f"removed {len(gone)} half-written folder(s) of an interrupted run: {', '.join(gone)}")

    def _release(self, refused: bool = False) -> None:
        """Unlock the run folder; after a refused start also remove it if this process created it (and it is empty)."""
        if self.lock is not None:
            self.lock.release(remove_folder=refused)
            self.lock = None

    def _saved_config(self) -> tuple[Path, dict] | None:
        """The config of the run already in the folder: its config.yaml, else its newest checkpoint's."""
        path = self.run_dir / "config.yaml"
        if not path.exists():
            latest = ckpt.latest_valid(self.ckpt_root, log=lambda _: None)
            if latest is None:
                return None
            path = latest / "config.yaml"
        try:
            saved = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            saved = None
        if not isinstance(saved, dict):
            saved = {"config.yaml": "unreadable"}
        return path, saved

    def _check_run_dir(self) -> None:
        """Resume only a run with this config; else refuse (listing the keys), move it aside or accept safe keys."""
        found = self._saved_config()
        if found is None:
            return
        path, saved = found
        diff = config_differences(saved, yaml.safe_load(self.config_yaml))
        if "config.yaml" in saved:
            diff = [("config.yaml", "unreadable", "")]
        if not diff:
            return
        mode = self.cfg.ckpt.on_mismatch
        unsafe = [d for d in diff if not _safe_to_change(d[0])]
        listed = ", ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, a, b in (unsafe or diff))
        if mode == "accept" and not unsafe:
            self.log(f"ckpt.on_mismatch=accept: resuming {self.run_dir} with {listed}")
            return
        if mode == "fresh":
            aside = self.run_dir.with_name(f"{self.run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            old = self.lock
            os.rename(self.run_dir, aside)  # same parent: one atomic rename, nothing deleted
            if (aside / "corpus").is_dir():  # the flat pretraining corpus cache is data, not part of the old run
                self.run_dir.mkdir()
                os.rename(aside / "corpus", self.run_dir / "corpus")
            self.lock = ckpt.RunLock(self.run_dir)
            old.release()
            self.log(f"ckpt.on_mismatch=fresh: {self.run_dir} held a run with another config ({listed}); moved it "
                     f"to {aside}, starting anew")
            return
        hint = ("only " + ", ".join(sorted(SAFE_TO_CHANGE)) + " and log.* may change on resume"
                if mode == "accept" else "set ckpt.on_mismatch=fresh to move it aside, ckpt.on_mismatch=accept "
                "for train.epochs/patience/eval_every, logging or saving keys")
        raise LearnError(f"{self.run_dir} holds a run with another config ({listed}; saved in {path}): not resuming "
                         f"it; use another log.run_name or {hint}")

    # ----------------------------------------------------------------------------------------------- set-up
    def _build_data(self) -> None:
        cfg, t = self.cfg, self.cfg.train
        self.eval_data = None
        if cfg.data.dataset:
            self.eval_data = load_bundle(cfg.data.dataset, cfg.data.store)
        if t.stage == "finetune":
            if self.eval_data is None:
                raise LearnError("finetune needs data.dataset=<prepared dataset folder> and data.store=<item store>")
            ds = self.eval_data.dataset
            lo, hi = max(2, cfg.data.finetune_min_len), cfg.data.finetune_max_len or 10**9
            seqs = [s for s in ds.train.values() if lo <= len(s) <= hi]
            self.keys, self.store, self.table = ds.item_keys, self.eval_data.store, self.eval_data.table
        else:
            if not cfg.data.pretrain_corpus:
                raise LearnError("pretrain needs data.pretrain_corpus=<folder with train.json, meta_data.json>")
            seqs = self._pretrain_sequences()
            self.store = open_store(cfg.data.pretrain_store or cfg.data.store)
            self.table = item_table(self.store, self.keys) if cfg.data.preload_store else None
        if not len(seqs):
            raise LearnError("no training sequences left after the length filter")
        self.input_dim = self.store.dim
        mode = t.stage
        window = t.dense_target_window if LOSSES[self.loss].window else 0
        samples_cls = StreamedSequenceSamples if isinstance(seqs, SequenceFile) else SequenceSamples
        self.train_set = samples_cls(
            seqs, cfg.data.max_history, mode=mode, positions=t.loss_positions, window=window, seed=t.seed,
            sampling=t.sampling,
        )
        stream = self.table is None
        self.collate = Collator(self.store if stream else None, self.keys if stream else None)
        self.sampler = DistributedSampler(
            self.train_set,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=True,
            seed=t.seed,
            drop_last=len(seqs) >= self.dist.world_size,
        )
        per_rank = len(self.sampler)
        self.micro_per_epoch = max(1, per_rank // t.batch_size) if per_rank >= t.batch_size else 1
        self.steps_per_epoch = max(1, self.micro_per_epoch // t.grad_accum)
        if self.table is not None:
            self.table = self.table.to(self.device)
        self.log(
            f"{t.stage}: {len(seqs):,} training sequences, {len(self.keys):,} items, "
            f"{self.steps_per_epoch} steps/epoch on {self.dist.world_size} rank(s), device {self.device}"
        )

    def _pretrain_sequences(self):
        """The pretraining sequences (smap indices) under the length filter; sets ``self.keys``.

        With ``data.stream_corpus`` and a corpus that has ``smap.json``, the sequences are converted once into a flat
        file next to the corpus (``train.seq-<min>-<max>/``, or under the run folder when the corpus is read-only)
        and read per sample, so no process holds the corpus in RAM; rank 0 builds it while the others wait.
        Otherwise the whole corpus is loaded and validated in memory.
        """
        from learn.data.formats import load_pretrain_corpus, read_index_map, resolve

        cfg = self.cfg
        root = Path(cfg.data.pretrain_corpus)
        lo, hi = cfg.data.min_seq_len, cfg.data.max_seq_len
        smap_path = resolve(root / "smap.json")
        if cfg.data.stream_corpus and smap_path.exists():
            smap = read_index_map(smap_path, "item")
            self.keys = sorted(smap, key=smap.__getitem__)
            cache = None if os.access(root, os.W_OK) else self.run_dir / "corpus" / f"train.seq-{lo}-{hi}"
            for turn in ("build", "open"):  # rank 0 builds the flat file, then the other ranks open it
                if (turn == "build") == self.main:
                    try:
                        seqs = open_sequence_file(root, smap, lo, hi, cache=cache)
                    except KeyError as e:
                        raise LearnError(str(e.args[0])) from None
                if self.dist.enabled:
                    D.barrier()
            return seqs
        corpus = load_pretrain_corpus(root)
        smap = corpus.smap
        self.keys = corpus.item_keys
        return [[smap[k] for k in s] for s in corpus.train if lo <= len(s) <= hi]

    def _inherit_architecture(self, source: Path, explicit) -> None:
        """Take the towers' shape from the init_from run's config.yaml where this run did not choose it."""
        folder = source.parent if source.suffix == ".safetensors" else source
        model = (ckpt.saved_config(source) or {}).get("model")
        if not isinstance(model, dict):
            return
        defaults = type(self.cfg.model)()
        taken = []
        for key in INHERITED_MODEL_KEYS:
            if key not in model:
                continue
            chosen = (f"model.{key}" in explicit if explicit is not None
                      else getattr(self.cfg.model, key) != getattr(defaults, key))
            if not chosen and getattr(self.cfg.model, key) != model[key]:
                taken.append(f"{key}={model[key]}")
                setattr(self.cfg.model, key, model[key])
        if taken:
            self.log(f"model from {folder / 'config.yaml'} (train.init_from): {', '.join(taken)}")

    def _init_from(self, source: Path) -> None:
        t = self.cfg.train
        ckpt.check_store(ckpt.store_identity(source), self.store.meta, self.store.path, f"train.init_from={source}")
        carry = t.init_items != "shape"
        state = ckpt.read_state(source)  # read once: the towers load from it, the carried rows are copied from it
        report = ckpt.load_matching(self.model, source, exclude=transfer.CARRIED if carry else (), state=state)
        self.log(report.summary())
        missing = report.towers_missing
        if not report.loaded or (missing and not t.init_partial):
            towers = len(report.loaded) + len(missing)
            raise LearnError(
                f"train.init_from={t.init_from}: the towers did not load ({len(missing)} of {towers} tower tensors do "
                f"not fit, e.g. {', '.join(f'{k} ({report.skipped[k]})' for k in missing[:3])}); use the source's "
                f"model.* settings" + (" or train.init_partial=true to start from what fits" if report.loaded else ""))
        if carry:
            texts = self.eval_data.dataset.texts() if t.init_items == "text" else None  # finetune: keys = its items
            self.log(transfer.carry_catalogue(self.model, source, state, self.keys, texts, t.init_items))
        else:  # rows loaded by shape must follow this run's catalogue
            check_init_rows(source, [k for k in ckpt.CATALOGUE_TENSORS if k in report.loaded], self.keys,
                            self.catalogue["source"])

    def _build_model(self, explicit=None) -> None:
        cfg, t = self.cfg, self.cfg.train
        try:
            source = ckpt.resolve_weights(t.init_from) if t.init_from else None
        except LearnError as e:  # e.g. run_finetune.sh before any pretraining
            raise LearnError(f"train.init_from: {e}; pretrain first (bash run_pretrain.sh), pass "
                             f"train.init_from=<a run folder>, or train.init_from= to start from scratch") from None
        if source is not None:
            ckpt.verify_weights(source)
            self._inherit_architecture(source, explicit)
            validate(cfg, model_final=True)  # with the shape taken from the source (a refused start leaves nothing)
        if cfg.model.input_dim != self.input_dim:
            self.log(f"model.input_dim set to the item store's dim {self.input_dim}")
            cfg.model.input_dim = self.input_dim
        if cfg.model.uses_item_ids:
            cfg.model.num_items = len(self.keys)
        self.model = LEARNModel(cfg.model).to(self.device)
        self.store_identity = ckpt.identity_of(self.store.meta)  # recorded in every model.safetensors written
        own = cfg.data.pretrain_corpus if t.stage == "pretrain" else cfg.data.dataset
        self.catalogue = catalogue_identity(self.keys, own)  # so is the catalogue's
        if t.stage == "pretrain" and self.eval_data is not None:  # zero-shot validation: ID rows must fit its items
            check_validation(self.keys, own, self.eval_data.dataset.item_keys, cfg.data.dataset, cfg.model)
        if source is not None:
            self._init_from(source)
        self.objective = Objective(
            self.model, self.loss, t.scale, t.mask_history, t.catalogue_chunk, t.dense_user_positions,
            t.item_dropout,
        )
        self.optimizer = build_optimizer(self.model, t)
        # the averaged copy is what validation, the best checkpoint and the test read (the raw weights keep training)
        self.ema = None
        if t.ema_decay > 0:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=False)
        self.eval_model = self.ema.module if self.ema is not None else self.model
        total = t.max_steps or t.epochs * self.steps_per_epoch
        warmup = t.warmup_steps(self.steps_per_epoch)
        self.total_steps = total
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_lambda(warmup, total))
        precision = t.precision if t.precision != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.step_module: nn.Module = self.objective
        if self.dist.enabled:
            self.step_module = DDP(
                self.objective, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if t.compile:
            self.step_module = torch.compile(self.step_module)

    def log(self, msg: str) -> None:
        if self.main:
            tqdm.write(msg)

    # ----------------------------------------------------------------------------------------------- state
    def _train_state(self, epoch: int, micro: int) -> dict:
        rng = [_rng_state()]
        if self.dist.enabled:
            gathered = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, rng[0])
            rng = gathered
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": epoch,
            "micro": micro,
            "best": self.best,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "rng": rng,
            "world_size": self.dist.world_size,
        }
        if self.ema is not None:  # the checkpoint's model.safetensors holds the averaged weights, these the raw ones
            state.update(raw_weights=self.model.state_dict(), ema_count=int(self.ema.n_averaged))
        return state

    def save(self, epoch: int, micro: int) -> None:
        state = self._train_state(epoch, micro)
        if self.main:
            ckpt.save_checkpoint(
                self.ckpt_root, self.step, self.eval_model, state, self.config_yaml,
                keep_last_n=self.cfg.ckpt.keep_last_n, store=self.store_identity, catalogue=self.catalogue,
            )
        self.saved_step = self.step
        D.barrier()

    def _resume(self) -> tuple[int, int]:
        self.step, self.best, self.best_step, self.bad_evals = 0, -math.inf, -1, 0
        choice = self.cfg.ckpt.resume
        if choice == "none":
            return 0, 0
        folder = ckpt.latest_valid(self.ckpt_root, log=self.log) if choice == "auto" else Path(choice)
        if folder is None:
            return 0, 0
        state = ckpt.load_train_state(folder)
        ckpt.check_store(ckpt.store_identity(folder), self.store.meta, self.store.path, f"the checkpoint {folder}")
        if (self.ema is not None) != ("raw_weights" in state):
            raise LearnError(f"{folder}: saved with another train.ema_decay setting (on/off) than this run")
        if self.ema is not None:
            ckpt.load_weights(self.ema.module, folder)
            self.model.load_state_dict(state["raw_weights"])
            self.ema.n_averaged.fill_(state["ema_count"])
        else:
            ckpt.load_weights(self.model, folder)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.best, self.best_step = state["step"], state["best"], state["best_step"]
        self.bad_evals = state["bad_evals"]
        if state["world_size"] == self.dist.world_size:
            _set_rng_state(state["rng"][self.dist.rank])
        self.log(f"resumed from {folder} (step {self.step}, epoch {state['epoch']})")
        return state["epoch"], state["micro"]

    # ----------------------------------------------------------------------------------------------- loop
    def _loader(self, epoch: int, skip: int) -> DataLoader:
        t = self.cfg.train
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        order = list(self.sampler)
        bs = t.batch_size
        batches = [order[i : i + bs] for i in range(0, self.micro_per_epoch * bs, bs)][skip:]
        batches = [b for b in batches if b]
        nw = self.cfg.data.num_workers
        # an own generator: building the iterator draws the workers' base seed from it, not from the global RNG,
        # which a resume has just restored (a draw there would shift every later dropout mask)
        gen = torch.Generator().manual_seed((t.seed * 1_000_003 + epoch) * 4099 + self.dist.rank)
        return DataLoader(
            self.train_set,
            batch_sampler=batches,
            collate_fn=self.collate,
            num_workers=nw,
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
            generator=gen,
            worker_init_fn=ignore_in_worker,
        )

    def _micro_step(self, batch: Batch) -> torch.Tensor:
        b = batch.to(self.device)
        vec = lambda ids: lookup(b, ids, self.table)  # noqa: E731
        win = (vec(b.window), b.window, b.window_mask) if b.window is not None else (None, None, None)
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            return self.step_module(
                vec(b.hist),
                b.mask,
                b.hist,
                vec(b.target),
                b.target,
                b.target_mask,
                self.table if LOSSES[self.loss].catalogue else None,
                *win,
            )

    def validate(self, split: str = "val", weights: Path | None = None) -> dict | None:
        if self.eval_data is None:
            return None
        metrics = None
        if self.main:
            self.eval_model.eval()
            metrics = evaluate_split(
                self.eval_model,
                self.eval_data,
                split,
                self.cfg.data.max_history,
                batch_size=self.cfg.train.eval_batch_size,
                device=self.device,
            )
            self.eval_model.train()
            note = skipped_note(split, metrics)
            if note and note not in self.notes:  # once per run, not every validation
                self.notes.add(note)
                self.log(note)
        return D.broadcast_object(metrics)

    def fit(self) -> dict:
        with self.stop:  # SIGTERM / SIGUSR1: finish the step in flight, checkpoint it, exit (learn.preempt)
            try:
                start = self._resume()
            except BaseException:
                self._release(refused=True)
                raise
            try:
                return self._fit(*start)
            finally:
                self._release()

    def _stop(self, signum: int, epoch: int, micro: int, logger: MetricLogger) -> None:
        """Every rank agreed to stop on ``signum``: checkpoint this step (unless it just was), close up, raise."""
        if self.saved_step != self.step:
            self.save(epoch, micro)
        stopped = Stopped(signum, self.step, self.ckpt_root / f"step-{self.step:08d}")
        if self.main:  # before the group goes: torchrun may stop a rank that is done before it returns
            print(stopped.line, file=sys.stderr, flush=True)
        logger.close()
        D.cleanup()
        raise stopped

    def _fit(self, start_epoch: int, skip: int) -> dict:
        cfg, t = self.cfg, self.cfg.train
        if self.main:  # every check has passed: from here on the folder is this run's
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        logger = MetricLogger(
            self.run_dir,
            cfg.to_dict(),
            enabled=self.main,
            use_wandb=cfg.log.wandb,
            project=cfg.log.wandb_project,
            name=cfg.log.run_name,
            notice=self.log,
        )
        done = t.max_steps and self.step >= t.max_steps
        self.model.train()
        for epoch in range(start_epoch, t.epochs):
            if done:
                break
            micro, done = self._train_epoch(epoch, skip, logger)
            skip = 0
            if self._end_epoch(epoch, micro, done, logger):
                break
            if not done and (signum := self.stop.agreed(self.dist.enabled, self.device)):  # came while validating
                self._stop(signum, epoch + 1, 0, logger)
        result = self._finish(logger)
        logger.close()
        D.cleanup()
        return result

    def _train_epoch(self, epoch: int, skip: int, logger: MetricLogger) -> tuple[int, bool]:
        """Train one epoch from micro-batch ``skip``; returns (micro-batches done, whether train.max_steps is hit)."""
        cfg, t = self.cfg, self.cfg.train
        loader = self._loader(epoch, skip)
        bar = tqdm(
            total=self.micro_per_epoch,
            initial=skip,
            desc=f"{t.stage} epoch {epoch + 1}/{t.epochs}",
            disable=not (self.main and cfg.log.progress),
            dynamic_ncols=True,
            unit="batch",
        )
        micro, running, nmicro, seen, tic = skip, 0.0, 0, 0, time.perf_counter()
        done = False
        for batch in loader:
            last_micro = (micro + 1) % t.grad_accum == 0 or micro + 1 == self.micro_per_epoch
            sync = contextlib.nullcontext() if last_micro or not self.dist.enabled else self.step_module.no_sync()
            with sync:
                loss = self._micro_step(batch)
                self.scaler.scale(loss / t.grad_accum).backward()
            value = loss.item()  # the one sync per micro-step there always was; checked before any update
            if not math.isfinite(value):
                raise LearnError(
                    f"training loss is {value} at epoch {epoch + 1}, step {self.step + 1} (micro-batch "
                    f"{micro + 1}): stopped before the update; nothing of this step was saved (lower train.lr, "
                    f"check the data)")
            running += value
            nmicro += 1
            seen += batch.hist.shape[0]
            micro += 1
            bar.update(1)
            if not last_micro:
                continue
            if t.clip_grad > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            self.step += 1
            if self.step % cfg.log.log_every == 0 or micro == self.micro_per_epoch:
                elapsed = time.perf_counter() - tic
                rate = seen * self.dist.world_size / max(elapsed, 1e-9)
                avg = running / max(1, nmicro)
                logger.log(
                    {
                        "train/loss": avg,
                        "train/lr": self.scheduler.get_last_lr()[0],
                        "train/seq_per_s": rate,
                        "epoch": epoch + micro / self.micro_per_epoch,
                    },
                    self.step,
                )
                bar.set_postfix(loss=f"{avg:.4f}", seq_s=f"{rate:.0f}")
                running, nmicro, seen, tic = 0.0, 0, 0, time.perf_counter()
            if cfg.ckpt.save_every_steps and self.step % cfg.ckpt.save_every_steps == 0:
                self.save(epoch, micro)
            if signum := self.stop.agreed(self.dist.enabled, self.device):  # every rank, after every step
                bar.close()
                self._stop(signum, epoch, micro, logger)
            if t.max_steps and self.step >= t.max_steps:
                done = True
                break
        bar.close()
        return micro, done

    def _end_epoch(self, epoch: int, micro: int, done: bool, logger: MetricLogger) -> bool:
        """Validate (keeping the best weights), save and decide on early stopping; True = stop training."""
        cfg, t = self.cfg, self.cfg.train
        metric_name = t.eval_metric
        stop = False
        if not done or micro == self.micro_per_epoch:
            epoch_end, next_epoch, next_micro = True, epoch + 1, 0
        else:
            epoch_end, next_epoch, next_micro = False, epoch, micro
        if epoch_end and t.eval_every and (epoch + 1) % t.eval_every == 0:
            metrics = self.validate("val")
            if metrics is not None:
                logger.log({f"val/{k}": v for k, v in metrics.items()}, self.step)
                self.log(
                    f"epoch {epoch + 1} val "
                    + " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
                )
                if metrics[metric_name] > self.best:
                    self.best, self.best_step, self.bad_evals = metrics[metric_name], self.step, 0
                    if self.main:
                        with atomic_dir(self.run_dir / "best", overwrite=True) as tmp:
                            ckpt.save_weights(self.eval_model, self.config_yaml, tmp, store=self.store_identity,
                                              manifest=True, catalogue=self.catalogue)
                            atomic_write_json(tmp / "val_metrics.json", {"step": self.step, **metrics})
                    logger.summary({f"best/val_{k}": v for k, v in metrics.items()})
                else:
                    self.bad_evals += 1
                    stop = t.patience > 0 and self.bad_evals >= t.patience
        if (
            (epoch_end and cfg.ckpt.save_every_epochs and (epoch + 1) % cfg.ckpt.save_every_epochs == 0)
            or stop
            or done
            or next_epoch == t.epochs
        ):
            self.save(next_epoch, next_micro)
        if stop:
            self.log(f"early stop: no {metric_name} improvement in {t.patience} validations")
        return stop

    def _finish(self, logger: MetricLogger) -> dict:
        """Test metrics of the best validation checkpoint (or the final weights when nothing was validated)."""
        result: dict = {"run_dir": str(self.run_dir), "steps": self.step, "stage": self.cfg.train.stage}
        if self.eval_data is None:
            if self.main:
                atomic_write_json(self.run_dir / "metrics.json", result, indent=2)
            return result
        best_dir = self.run_dir / "best"
        selected = "final"
        if self.cfg.train.stage == "finetune" and (best_dir / "model.safetensors").exists():
            ckpt.load_weights(self.eval_model, best_dir)
            selected = "best validation"
        val = self.validate("val")
        test = self.validate("test")
        result.update({"selected": selected, "best_step": self.best_step, "val": val, "test": test})
        if self.main:
            logger.log({f"test/{k}": v for k, v in test.items()}, self.step)
            logger.summary({f"test/{k}": v for k, v in test.items()})
            atomic_write_json(self.run_dir / "metrics.json", result, indent=2)
            self.log(
                f"{selected} checkpoint test "
                + " ".join(f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, float))
            )
        return result


def _main(argv: list[str], stage: str) -> int:
    parser = ArgumentParser(
        prog=f"python -m learn {stage}", description=f"LEARN {stage} (launch with torchrun for several processes)"
    )
    parser.add_argument("--config", help="YAML config (configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=1e-4 data.dataset=runs/x")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, [*args.overrides, f"train.stage={stage}"])
    explicit = {".".join(parse_override(o)[0]) for o in args.overrides}
    try:
        Trainer(cfg, explicit).fit()
    except Stopped:  # a scheduler's signal: checkpointed (rank 0 said so), to be resumed by the same command
        return EXIT_CODE
    return 0


def main_pretrain(argv: list[str]) -> int:
    return _main(argv, "pretrain")


def main_finetune(argv: list[str]) -> int:
    return _main(argv, "finetune")
