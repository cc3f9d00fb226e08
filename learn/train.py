"""The training loop of both stages: ``python -m learn pretrain|finetune --config configs/x.yaml key=value ...``.

:class:`Trainer` sets a run up from its config (the run folder claimed and checked: learn.runfolder; the training
data: learn.data.trainset; the towers, started from ``train.init_from`` by learn.transfer; the loss: learn.losses),
then :meth:`Trainer.fit` runs the loop: micro-batches with gradient accumulation, clipping, AMP (bf16, or fp16 with
GradScaler), AdamW with warm-up + cosine in steps, optional EMA of the weights and ``torch.compile``; at epoch ends
validation with full ranking (best weights kept in ``best/``), early stopping and atomic step checkpoints; at the end
the test of the selected weights. Runs as one process or under ``torchrun`` with DDP (gloo on CPU, nccl on CUDA).

A resume is bit-identical to the uninterrupted run (the checkpoint holds every rank's RNG state; the DataLoader never
draws from the global RNG), so ``torchrun --max-restarts`` recovers a crashed worker. ``config.yaml`` is written
only once every check has passed, so a refused start leaves nothing behind. A non-finite loss stops the run, naming
the step; SIGTERM / SIGUSR1 stop it after the step in flight, checkpointed, with exit code 75 (:mod:`learn.preempt`).
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from learn import checkpoint as ckpt
from learn import distributed as D
from learn import transfer
from learn.catalogue import check_validation
from learn.catalogue import identity as catalogue_identity
from learn.config import RunConfig, load_config, parse_override, save_config, validate
from learn.data.samples import Batch, lookup
from learn.data.trainset import build_train_data
from learn.errors import ArgumentParser, LearnError
from learn.evaluate import evaluate_split, skipped_note
from learn.io import atomic_dir, atomic_write_json
from learn.losses import LOSSES, Objective
from learn.model import LEARNModel
from learn.optim import build_optimizer, cosine_lambda
from learn.preempt import EXIT_CODE, GracefulStop, Stopped, ignore_in_worker
from learn.runfolder import RunFolder
from learn.tracking import MetricLogger


def _line(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))


class Trainer:
    """One run of either stage: set up from a RunConfig, then :meth:`fit` trains, validates, saves and tests."""

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
        self.notes: set[str] = set()  # notice lines already printed
        self.stop, self.saved_step = GracefulStop(), -1  # a scheduler's stop signal; the last step checkpointed
        self.folder = RunFolder(self.run_dir, self.log)
        D.agree(self.dist, self.folder.claim)  # rank 0 holds the run folder before anything is read or written
        try:
            torch.manual_seed(t.seed + self.dist.rank)
            random.seed(t.seed + self.dist.rank)
            self._build_data()
            self._build_model(explicit)
            self.config_yaml = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
            D.agree(self.dist, lambda: self.folder.check(yaml.safe_load(self.config_yaml), cfg.ckpt.on_mismatch))
        except BaseException:
            self.folder.release(refused=True)
            raise

    # ----------------------------------------------------------------------------------------------- set-up
    def _build_data(self) -> None:
        """The training data (learn.data.trainset), the validation/test dataset and the epoch length in steps."""
        cfg, t = self.cfg, self.cfg.train
        window = t.dense_target_window if LOSSES[self.loss].window else 0
        data = build_train_data(cfg, self.dist, window, self.run_dir)
        self.eval_data, self.keys, self.store, self.table = data.eval_data, data.keys, data.store, data.table
        self.train_set, self.collate, self.sampler = data.train_set, data.collate, data.sampler
        self.input_dim = self.store.dim
        per_rank = len(self.sampler)
        self.micro_per_epoch = max(1, per_rank // t.batch_size) if per_rank >= t.batch_size else 1
        self.steps_per_epoch = max(1, self.micro_per_epoch // t.grad_accum)
        if self.table is not None:
            self.table = self.table.to(self.device)
        self.log(f"{t.stage}: {data.sequences:,} training sequences, {len(self.keys):,} items, "
                 f"{self.steps_per_epoch} steps/epoch on {self.dist.world_size} rank(s), device {self.device}")

    def _build_model(self, explicit=None) -> None:
        """The towers (shape and weights from train.init_from when set), the Objective, optimizer, schedule, EMA,
        AMP and the DDP / compiled module a step runs."""
        cfg, t = self.cfg, self.cfg.train
        source = transfer.source_weights(t.init_from) if t.init_from else None
        if source is not None:
            transfer.inherit_architecture(cfg, source, explicit, self.log)
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
            dataset = self.eval_data.dataset if self.eval_data is not None else None
            transfer.start_from(self.model, source, cfg, self.store, self.keys, dataset, self.log, own)
        self.objective = Objective(self.model, self.loss, t.scale, t.mask_history, t.catalogue_chunk,
                                   t.dense_user_positions, t.item_dropout)
        self.optimizer = build_optimizer(self.model, t)
        # the averaged copy is what validation, the best checkpoint and the test read (the raw weights keep training)
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay),
                                 use_buffers=False) if t.ema_decay > 0 else None
        self.eval_model = self.ema.module if self.ema is not None else self.model
        self.total_steps = total = t.max_steps or t.epochs * self.steps_per_epoch
        warmup = t.warmup_steps(self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_lambda(warmup, total))
        precision = t.precision if t.precision != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.step_module: nn.Module = self.objective
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = DDP(self.objective, device_ids=ids)
        if t.compile:
            self.step_module = torch.compile(self.step_module)

    def log(self, msg: str) -> None:
        if self.main:
            tqdm.write(msg)

    # ----------------------------------------------------------------------------------------------- loop
    def fit(self) -> dict:
        with self.stop:  # SIGTERM / SIGUSR1: finish the step in flight, checkpoint it, exit (learn.preempt)
            try:
                start = self._resume()
            except BaseException:
                self.folder.release(refused=True)
                raise
            try:
                return self._fit(*start)
            finally:
                self.folder.release()

    def _fit(self, start_epoch: int, skip: int) -> dict:
        cfg, t = self.cfg, self.cfg.train
        if self.main:  # every check has passed: from here on the folder is this run's
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        logger = MetricLogger(self.run_dir, cfg.to_dict(), enabled=self.main, use_wandb=cfg.log.wandb,
                              project=cfg.log.wandb_project, name=cfg.log.run_name, notice=self.log)
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
        bar = tqdm(total=self.micro_per_epoch, initial=skip, desc=f"{t.stage} epoch {epoch + 1}/{t.epochs}",
                   disable=not (self.main and cfg.log.progress), dynamic_ncols=True, unit="batch")
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
                logger.log({"train/loss": avg, "train/lr": self.scheduler.get_last_lr()[0], "train/seq_per_s": rate,
                            "epoch": epoch + micro / self.micro_per_epoch}, self.step)
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

    def _loader(self, epoch: int, skip: int) -> DataLoader:
        """This rank's micro-batches of ``epoch`` from micro-batch ``skip`` on (a resume mid-epoch skips the done)."""
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
        return DataLoader(self.train_set, batch_sampler=batches, collate_fn=self.collate, num_workers=nw,
                          persistent_workers=False, pin_memory=self.device.type == "cuda", generator=gen,
                          worker_init_fn=ignore_in_worker)

    def _micro_step(self, batch: Batch) -> torch.Tensor:
        """The loss of one micro-batch: its item vectors looked up, the Objective run under autocast."""
        b = batch.to(self.device)
        vec = lambda ids: lookup(b, ids, self.table)  # noqa: E731
        win = (vec(b.window), b.window, b.window_mask) if b.window is not None else (None, None, None)
        catalogue = self.table if LOSSES[self.loss].catalogue else None
        amp = self.amp_dtype is not None
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=amp):
            return self.step_module(vec(b.hist), b.mask, b.hist, vec(b.target), b.target, b.target_mask, catalogue,
                                    *win)

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
                self.log(f"epoch {epoch + 1} val " + _line(metrics))
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
        every = cfg.ckpt.save_every_epochs
        if (epoch_end and every and (epoch + 1) % every == 0) or stop or done or next_epoch == t.epochs:
            self.save(next_epoch, next_micro)
        if stop:
            self.log(f"early stop: no {metric_name} improvement in {t.patience} validations")
        return stop

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

    def validate(self, split: str = "val", weights: Path | None = None) -> dict | None:
        """Full-ranking metrics of the weights evaluated (the EMA when on) on ``split``, computed on rank 0."""
        if self.eval_data is None:
            return None
        metrics = None
        if self.main:
            self.eval_model.eval()
            metrics = evaluate_split(self.eval_model, self.eval_data, split, self.cfg.data.max_history,
                                     batch_size=self.cfg.train.eval_batch_size, device=self.device)
            self.eval_model.train()
            note = skipped_note(split, metrics)
            if note and note not in self.notes:  # once per run, not every validation
                self.notes.add(note)
                self.log(note)
        return D.broadcast_object(metrics)

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
            self.log(f"{selected} checkpoint test " + _line(test))
        return result

    # ----------------------------------------------------------------------------------------------- state
    def _resume(self) -> tuple[int, int]:
        """Load the newest valid checkpoint (ckpt.resume); (epoch, micro-batch) to go on from, (0, 0) for a start."""
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
            D.set_rng_state(state["rng"][self.dist.rank])
        self.log(f"resumed from {folder} (step {self.step}, epoch {state['epoch']})")
        return state["epoch"], state["micro"]

    def save(self, epoch: int, micro: int) -> None:
        """An atomic step checkpoint (rank 0 writes; ``epoch``, ``micro``: where a resume goes on)."""
        state = self._train_state(epoch, micro)
        if self.main:
            ckpt.save_checkpoint(self.ckpt_root, self.step, self.eval_model, state, self.config_yaml,
                                 keep_last_n=self.cfg.ckpt.keep_last_n, store=self.store_identity,
                                 catalogue=self.catalogue)
        self.saved_step = self.step
        D.barrier()

    def _train_state(self, epoch: int, micro: int) -> dict:
        """What train_state.pt holds beside the weights: optimizer, schedule, scaler, counters and every rank's RNG."""
        rng = D.rng_states(self.dist)
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "step": self.step, "epoch": epoch, "micro": micro,
                 "best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals, "rng": rng,
                 "world_size": self.dist.world_size}
        if self.ema is not None:  # the checkpoint's model.safetensors holds the averaged weights, these the raw ones
            state.update(raw_weights=self.model.state_dict(), ema_count=int(self.ema.n_averaged))
        return state


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
