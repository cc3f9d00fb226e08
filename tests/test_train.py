"""The trainer end to end on a tiny learnable dataset: loss goes down, metrics.json, resume == uninterrupted,
corrupted checkpoints are skipped, torchrun with 2 gloo processes through the launchers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from learn.checkpoint import list_steps, verify
from learn.config import load_config
from learn.errors import LearnError
from learn.train import Trainer
from tests.conftest import ROOT, TINY_MODEL, make_tiny_corpus, make_tiny_dataset


def _finetune_args(tmp: Path, data: Path, store: Path, *extra: str) -> list[str]:
    return [
        *TINY_MODEL,
        f"data.dataset={data}",
        f"data.store={store}",
        f"log.output_dir={tmp / 'runs'}",
        "log.run_name=ft",
        "log.wandb=false",
        "log.progress=false",
        "log.log_every=1",
        "train.batch_size=8",
        "train.lr=3e-3",
        "train.epochs=3",
        "train.eval_every=1",
        "train.catalogue_chunk=7",
        *extra,
    ]


def _run(args: list[str], stage: str = "finetune") -> dict:
    cfg = load_config(None, [*args, f"train.stage={stage}"])
    return Trainer(cfg).fit()


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


@pytest.fixture()
def tiny(tmp_path):
    data, store = make_tiny_dataset(tmp_path)
    return tmp_path, data, store


def test_finetune_lowers_loss_and_writes_metrics(tiny):
    tmp, data, store = tiny
    result = _run(_finetune_args(tmp, data, store, "train.epochs=6"))
    run = tmp / "runs" / "ft"
    losses = _losses(run)
    assert len(losses) >= 6
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["selected"] == "best validation"
    assert 0.0 <= metrics["test"]["ndcg@10"] <= 1.0 and metrics["test"]["users"] == 40
    assert result["test"] == metrics["test"]
    assert (run / "config.yaml").exists() and (run / "best" / "model.safetensors").exists()
    assert all(verify(run / "checkpoints" / f"step-{s:08d}") is None for s in list_steps(run / "checkpoints"))


@pytest.mark.parametrize("extra", [["train.loss_positions=target", "train.mask_history=true"],
                                   ["model.item_id_embedding=true", "model.position=learned"],
                                   ["model.item_bias=true", "train.sampling=windows", "train.item_dropout=false"]])
def test_finetune_variants_run(tiny, extra):
    tmp, data, store = tiny
    result = _run(_finetune_args(tmp, data, store, "train.epochs=1", *extra))
    assert result["test"]["users"] == 40


@pytest.mark.parametrize("loss", ["infonce", "dense"])
def test_pretrain_then_finetune_from_it(tiny, loss):
    tmp, data, store = tiny
    corpus = make_tiny_corpus(tmp, data, store)
    args = [*TINY_MODEL, f"data.pretrain_corpus={corpus}", f"data.store={store}", f"log.output_dir={tmp / 'runs'}",
            "log.run_name=pt", "log.wandb=false", "log.progress=false", "train.batch_size=8", "train.epochs=2",
            f"train.loss={loss}", "data.preload_store=false", "data.min_seq_len=3"]
    _run(args, stage="pretrain")
    assert list_steps(tmp / "runs" / "pt" / "checkpoints")
    result = _run(_finetune_args(tmp, data, store, "train.epochs=1", f"train.init_from={tmp / 'runs' / 'pt'}"))
    assert result["test"]["users"] == 40


def test_streamed_corpus_trains_exactly_like_the_in_memory_one(tiny):
    tmp, data, store = tiny
    corpus = make_tiny_corpus(tmp, data, store)
    weights = {}
    for stream in ("true", "false"):
        args = [*TINY_MODEL, f"data.pretrain_corpus={corpus}", f"data.store={store}", f"log.output_dir={tmp / 'runs'}",
                f"log.run_name=pt-{stream}", "log.wandb=false", "log.progress=false", "train.batch_size=8",
                "train.epochs=2", "data.min_seq_len=3", f"data.stream_corpus={stream}"]
        _run(args, stage="pretrain")
        ckpts = tmp / "runs" / f"pt-{stream}" / "checkpoints"
        weights[stream] = load_file(ckpts / f"step-{max(list_steps(ckpts)):08d}" / "model.safetensors")
    assert (corpus / "train.seq-3-40" / "meta.json").exists()  # the flat file, built once next to the corpus
    assert weights["true"].keys() == weights["false"].keys()
    for k, v in weights["true"].items():
        torch.testing.assert_close(v, weights["false"][k], rtol=0, atol=0)


_KILLER = """
import os, signal, sys
from learn import train
orig = train.Trainer.save
calls = {"n": 0}
def save(self, *a, **k):
    orig(self, *a, **k)
    calls["n"] += 1
    if calls["n"] == int(os.environ["KILL_AFTER_SAVES"]):
        os.kill(os.getpid(), signal.SIGKILL)
train.Trainer.save = save
sys.exit(train.main_finetune(sys.argv[1:]))
"""


# 5 steps per epoch, a checkpoint every 2 steps and at each epoch end: saves at steps 2, 4, 5, 6, 8, 10, ...
# kill after save 3 = an epoch end; after save 2 (step 4) or 4 (step 6) = mid-epoch, with dropout on
@pytest.mark.parametrize(("ema", "kill_after", "mid_epoch"), [("0", "3", False), ("0", "2", True), ("0.9", "4", True)])
def test_sigkill_then_resume_equals_uninterrupted(tiny, ema, kill_after, mid_epoch):
    tmp, data, store = tiny
    common = ["train.epochs=3", "ckpt.save_every_steps=2", "ckpt.keep_last_n=10", "train.eval_every=1",
              f"train.ema_decay={ema}", "model.dropout=0.3"]
    _run(_finetune_args(tmp, data, store, *common, "log.run_name=straight"))
    args = _finetune_args(tmp, data, store, *common, "log.run_name=killed")
    env = dict(os.environ, PYTHONPATH=str(ROOT), KILL_AFTER_SAVES=kill_after)
    proc = subprocess.run([sys.executable, "-c", _KILLER, *args], env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    killed_steps = list_steps(tmp / "runs" / "killed" / "checkpoints")
    straight_steps = list_steps(tmp / "runs" / "straight" / "checkpoints")
    assert 0 < len(killed_steps) < len(straight_steps)
    last = tmp / "runs" / "killed" / "checkpoints" / f"step-{killed_steps[-1]:08d}" / "train_state.pt"
    assert (torch.load(last, weights_only=True)["micro"] != 0) == mid_epoch
    (last.parent.parent / f".step-{killed_steps[-1] + 1:08d}.tmp-x1y2").mkdir()  # as if killed while writing
    _run(args)  # resume: auto
    assert not list((tmp / "runs" / "killed" / "checkpoints").glob(".step-*"))
    final = f"step-{straight_steps[-1]:08d}/model.safetensors"
    a = load_file(str(tmp / "runs" / "straight" / "checkpoints" / final))
    b = load_file(str(tmp / "runs" / "killed" / "checkpoints" / final))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    if ema != "0":  # the raw weights resume too, not only their average
        state = final.replace("model.safetensors", "train_state.pt")
        sa = torch.load(tmp / "runs" / "straight" / "checkpoints" / state, weights_only=True)
        sb = torch.load(tmp / "runs" / "killed" / "checkpoints" / state, weights_only=True)
        assert sa["ema_count"] == sb["ema_count"] == straight_steps[-1]
        for name, v in sa["raw_weights"].items():
            torch.testing.assert_close(v, sb["raw_weights"][name], rtol=0, atol=0)
    ma = json.loads((tmp / "runs" / "straight" / "metrics.json").read_text())
    mb = json.loads((tmp / "runs" / "killed" / "metrics.json").read_text())
    assert ma["test"] == mb["test"]


_SIGNALLER = """
import os, signal, sys
from learn import train, tracking
when, at = os.environ["SIGNAL_WHEN"], int(os.environ["SIGNAL_AT"])
log, validate = tracking.MetricLogger.log, train.Trainer.validate
def logged(self, metrics, step):  # log.log_every=1: called after every optimizer step
    log(self, metrics, step)
    if when == "step" and step == at and "train/loss" in metrics:
        os.kill(os.getpid(), signal.SIGTERM)
def validated(self, split="val", weights=None):
    out = validate(self, split, weights)
    if when == "validation" and self.step == at:
        os.kill(os.getpid(), signal.SIGUSR1)
    return out
tracking.MetricLogger.log, train.Trainer.validate = logged, validated
sys.exit(train.main_finetune(sys.argv[1:]))
"""


# 5 steps per epoch, a checkpoint every 2 steps and at each epoch end: SIGTERM after step 3 (not a checkpoint step,
# mid-epoch) or SIGUSR1 while validating after step 5 (the epoch end)
@pytest.mark.parametrize(("when", "at", "micro"), [("step", 3, 3), ("validation", 5, 0)])
def test_stop_signal_then_resume_equals_uninterrupted(tiny, when, at, micro):
    """A scheduler's SIGTERM / SIGUSR1: the step in flight finishes, that step is checkpointed, one line says how to
    go on, exit code 75; the same command resumes and ends with the uninterrupted run's weights and metrics."""
    tmp, data, store = tiny
    common = ["train.epochs=2", "ckpt.save_every_steps=2", "ckpt.keep_last_n=10", "model.dropout=0.3"]
    _run(_finetune_args(tmp, data, store, *common, "log.run_name=straight"))
    args = _finetune_args(tmp, data, store, *common, "log.run_name=stopped")
    env = dict(os.environ, PYTHONPATH=str(ROOT), SIGNAL_WHEN=when, SIGNAL_AT=str(at))
    proc = subprocess.run([sys.executable, "-c", _SIGNALLER, *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 75, proc.stderr[-2000:]
    signame = "SIGTERM" if when == "step" else "SIGUSR1"
    assert proc.stderr.strip().splitlines()[-1].startswith(f"stopped by signal {signame} at step {at}, checkpoint ")
    assert "resume with the same command (exit code 75)" in proc.stderr and "Traceback" not in proc.stderr
    run = tmp / "runs" / "stopped"
    assert max(list_steps(run / "checkpoints")) == at and not (run / "metrics.json").exists()
    assert torch.load(run / "checkpoints" / f"step-{at:08d}" / "train_state.pt", weights_only=True)["micro"] == micro
    assert not (run / ".lock").exists() or _lock_is_free(run)
    _run(args)  # the same command: resumes
    final = f"step-{max(list_steps(tmp / 'runs' / 'straight' / 'checkpoints')):08d}/model.safetensors"
    a = load_file(str(tmp / "runs" / "straight" / "checkpoints" / final))
    b = load_file(str(run / "checkpoints" / final))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma = json.loads((tmp / "runs" / "straight" / "metrics.json").read_text())
    assert ma["test"] == json.loads((run / "metrics.json").read_text())["test"]


def _lock_is_free(run: Path) -> bool:
    import fcntl

    with open(run / ".lock") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
    return True


def test_weight_average_is_what_is_validated_saved_and_tested(tiny):
    tmp, data, store = tiny
    runs = tmp / "runs"
    args = ["train.epochs=2", "train.eval_every=1", "ckpt.keep_last_n=1"]
    for name, decay in (("raw", "0"), ("avg0", "1e-12"), ("avg", "0.9")):
        _run(_finetune_args(tmp, data, store, *args, f"train.ema_decay={decay}", f"log.run_name={name}"))

    def last(name):
        folder = runs / name / "checkpoints"
        folder = folder / f"step-{max(list_steps(folder)):08d}"
        return load_file(folder / "model.safetensors"), torch.load(folder / "train_state.pt", weights_only=True)

    raw, raw_state = last("raw")
    avg0, avg0_state = last("avg0")
    avg, avg_state = last("avg")
    assert "raw_weights" not in raw_state
    for k, v in raw.items():  # a vanishing decay: the average is the last weights, so the run is the plain one
        torch.testing.assert_close(avg0[k], v, rtol=0, atol=1e-6)
        torch.testing.assert_close(avg0_state["raw_weights"][k], v, rtol=0, atol=1e-6)
        torch.testing.assert_close(avg_state["raw_weights"][k], v, rtol=0, atol=1e-6)  # averaging never feeds back
    assert any(not torch.allclose(avg[k], raw[k]) for k in raw)
    m0 = json.loads((runs / "avg0" / "metrics.json").read_text())
    mr = json.loads((runs / "raw" / "metrics.json").read_text())
    assert m0["val"] == pytest.approx(mr["val"], abs=1e-6)
    best = load_file(runs / "avg" / "best" / "model.safetensors")
    assert best.keys() == raw.keys()
    with pytest.raises(LearnError, match=r"another config \(train.ema_decay: 0.9 -> 0.0"):  # average switched off
        Trainer(load_config(None, [*_finetune_args(tmp, data, store, *args, "log.run_name=avg", "train.epochs=3"),
                                   "train.stage=finetune", "ckpt.on_mismatch=accept"]))
    with pytest.raises(LearnError, match=r"train.ema_decay must be in \[0, 1\)"):
        load_config(None, ["train.ema_decay=1"])


def test_corrupted_and_half_written_checkpoints_are_skipped(tiny, capsys):
    tmp, data, store = tiny
    args = _finetune_args(tmp, data, store, "train.epochs=2", "ckpt.keep_last_n=5")
    _run(args)
    root = tmp / "runs" / "ft" / "checkpoints"
    steps = list_steps(root)
    assert len(steps) == 2
    newest = root / f"step-{steps[-1]:08d}"
    with open(newest / "model.safetensors", "r+b") as f:
        f.truncate(100)
    (root / ".step-00009999.tmp-abc").mkdir()  # a half-written folder from a crash
    assert verify(newest) is not None
    trainer = Trainer(load_config(None, [*args, "train.epochs=3", "train.stage=finetune", "ckpt.on_mismatch=accept"]))
    assert not (root / ".step-00009999.tmp-abc").exists()  # removed on the next start
    epoch, _ = trainer._resume()
    assert trainer.step == steps[0] and epoch == 1


def test_config_errors():
    with pytest.raises(LearnError, match="unknown key 'train.lrr'"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(LearnError, match="expected a number"):
        load_config(None, ["train.epochs=abc"])
    cfg = load_config(None, ["train.lr=1e-4", "train.betas=[0.9, 0.999]", "model.position=learned"])
    assert cfg.train.lr == 1e-4 and cfg.train.betas == [0.9, 0.999] and cfg.model.position == "learned"
    # fixed sets of values (typing.Literal) are refused in one line naming the key and the choices
    for override, needle in [
        ("train.sampling=x", "config train.sampling: expected one of random|all_prefixes|windows, got 'x'"),
        ("model.item_tower=both", "config model.item_tower: expected one of shared|separate|table, got 'both'"),
        ("ckpt.on_mismatch=maybe", "config ckpt.on_mismatch: expected one of refuse|fresh|accept, got 'maybe'"),
        ("train.precision=fp8", "config train.precision: expected one of auto|fp32|bf16|fp16, got 'fp8'"),
        ("train.loss=focal", "config train.loss: expected one of auto|infonce|softmax|dense, got 'focal'"),
        ("train.device=tpu", "config: train.device: expected auto|cpu|cuda|cuda:N, got 'tpu'"),
        ("train.warmup=soon", "config train.warmup: expected optimizer steps (20) or epochs (1 epoch), got 'soon'"),
    ]:
        with pytest.raises(LearnError) as e:
            load_config(None, [override])
        assert str(e.value) == needle
    t = load_config(None, ["train.warmup=1.5 epochs"]).train
    assert t.warmup_steps(10) == 15 and load_config(None, ["train.warmup=20"]).train.warmup_steps(10) == 20


def test_config_extends_another_file(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  lr: 2.0e-5\n  epochs: 7\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntrain:\n  lr: 1.0e-5\n")
    cfg = load_config(tmp_path / "child.yaml", ["train.seed=5"])
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.seed) == (1e-5, 7, 5)
    (tmp_path / "base.yaml").write_text("extends: child.yaml\n")
    with pytest.raises(LearnError, match="without cycles"):
        load_config(tmp_path / "child.yaml")
    # run_finetune.sh's per-dataset file: the paper's lr 1e-5 for Scientific, the rest as finetune_amazon.yaml
    sci = load_config(ROOT / "configs" / "finetune_amazon_scientific.yaml").to_dict()
    base = load_config(ROOT / "configs" / "finetune_amazon.yaml", ["train.lr=1e-5"]).to_dict()
    assert sci == base and sci["train"]["lr"] == 1e-5


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_loads_and_validates(name):
    """Each file under configs/ resolves (with what it extends) to a valid config whose model section builds."""
    from learn.model import ModelConfig

    cfg = load_config(ROOT / "configs" / name)
    ModelConfig(**{**cfg.to_dict()["model"], "num_items": 10}).validate()


def test_finetune_cli_bad_input_exits_2(tmp_path):
    from tests.conftest import run_cli

    proc = run_cli("finetune", f"data.dataset={tmp_path / 'nope'}", f"data.store={tmp_path / 'nostore'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


def test_torchrun_two_gloo_processes_through_launchers(tiny):
    """run_pretrain.sh then run_finetune.sh, 2 gloo ranks each, called from another folder: every relative path
    (CONFIG, DATA_ROOT, data paths in the arguments, log.output_dir) is the caller's; the default config the repo's."""
    tmp, data, store = tiny
    # run_finetune.sh expects DATA_ROOT/<dataset> and DATA_ROOT/<dataset>_baichuan_lmdb
    (tmp / "tiny_store").rename(tmp / "tiny_baichuan_lmdb")
    corpus = make_tiny_corpus(tmp, data, tmp / "tiny_baichuan_lmdb")
    (tmp / "pt.yaml").write_text(f"extends: {ROOT / 'configs' / 'pretrain_amazon.yaml'}\nlog:\n  run_name: pt2\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(NPROC="2", PYTHON=sys.executable, DATA_ROOT=".", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    common = [*TINY_MODEL, "log.output_dir=runs", "log.progress=false", "train.batch_size=8", "train.epochs=1",
              "model.input_dim=16"]
    pre = subprocess.run(["bash", str(ROOT / "run_pretrain.sh"), *common, f"data.pretrain_corpus={corpus.name}",
                          "data.pretrain_store=tiny_baichuan_lmdb", "data.dataset=", "data.store=",
                          "data.min_seq_len=3"],
                         env=dict(env, CONFIG="pt.yaml"), capture_output=True, text=True, cwd=tmp)
    assert pre.returncode == 0, pre.stderr[-3000:]
    ft = subprocess.run(["bash", str(ROOT / "run_finetune.sh"), "tiny", *common,
                         "train.init_from=runs/pt2", "train.ema_decay=0.9"],
                        env=env, capture_output=True, text=True, cwd=tmp)
    assert ft.returncode == 0, ft.stderr[-3000:]
    metrics = json.loads((tmp / "runs" / "finetune-tiny" / "metrics.json").read_text())
    assert metrics["test"]["users"] == 40
    ckpts = tmp / "runs" / "finetune-tiny" / "checkpoints"
    state = torch.load(ckpts / f"step-{max(list_steps(ckpts)):08d}" / "train_state.pt", weights_only=True)
    assert state["world_size"] == 2 and state["ema_count"] == state["step"] > 0  # averaged once per step under DDP


def test_wandb_offline_logs_without_network(tiny, monkeypatch):
    tmp, data, store = tiny
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    _run(_finetune_args(tmp, data, store, "train.epochs=1", "log.wandb=true", "log.run_name=wb"))
    run = tmp / "runs" / "wb"
    assert (run / "wandb_id.txt").exists()
    offline = list((run / "wandb").glob("offline-run-*"))
    assert offline, "wandb offline run folder missing"


def test_bf16_autocast_on_cpu_runs(tiny):
    tmp, data, store = tiny
    result = _run(_finetune_args(tmp, data, store, "train.epochs=1", "train.precision=bf16", "log.run_name=bf16"))
    assert result["test"]["users"] == 40


def test_separate_item_tower_and_id_table_under_two_gloo_ranks(tiny):
    """A separate item tower and an item-ID table, on 2 ranks."""
    tmp, data, store = tiny
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    args = _finetune_args(tmp, data, store, "train.epochs=1", "model.item_tower=separate", "log.run_name=sep",
                          "model.item_id_embedding=true")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "learn", "finetune", *args], env=env, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp / "runs" / "sep" / "metrics.json").read_text())["test"]["users"] == 40


# ------------------------------------------------------------------------------------------------ run folder, init_from
def test_on_mismatch_accept_resumes_with_more_epochs_and_fresh_moves_the_run_aside(tiny):
    tmp, data, store = tiny
    run = tmp / "runs" / "ft"
    _run(_finetune_args(tmp, data, store, "train.epochs=1"))
    steps = list_steps(run / "checkpoints")
    result = _run(_finetune_args(tmp, data, store, "train.epochs=2", "ckpt.on_mismatch=accept"))
    assert result["steps"] == 2 * steps[-1]  # resumed: one more epoch, not two
    assert "epochs: 2" in (run / "config.yaml").read_text()
    _run(_finetune_args(tmp, data, store, "train.epochs=1", "train.lr=1e-3", "ckpt.on_mismatch=fresh"))
    (aside,) = (tmp / "runs").glob("ft.old-*")
    assert "lr: 0.003" in (aside / "config.yaml").read_text() and "lr: 0.001" in (run / "config.yaml").read_text()
    assert list_steps(aside / "checkpoints") and (aside / "metrics.json").exists()


def test_init_from_takes_the_source_towers_unless_chosen_on_the_command_line(tiny, capsys):
    tmp, data, store = tiny
    _run(_finetune_args(tmp, data, store, "train.epochs=1", "log.run_name=src", "model.num_layers=1",
                        "model.hidden_size=16"))
    src = tmp / "runs" / "src"
    args = _finetune_args(tmp, data, store, "train.epochs=1", "log.run_name=dst", f"train.init_from={src}")
    capsys.readouterr()
    # the model.* values come from a config file, not the command line: the source's shape wins and all of it loads
    trainer = Trainer(load_config(None, [*args, "train.stage=finetune"]), explicit=set())
    assert (trainer.cfg.model.num_layers, trainer.cfg.model.hidden_size) == (1, 16)
    out = capsys.readouterr().out
    assert "num_layers=1" in out and "16/16 tensors" in out and "skipped" not in out
    trainer.folder.release(refused=True)
    chosen = {"model.num_layers", "model.hidden_size"}  # given on the command line: they win, the towers do not fit
    with pytest.raises(LearnError, match="towers did not load"):
        Trainer(load_config(None, [*args, "train.stage=finetune"]), explicit=chosen)
    assert not (tmp / "runs" / "dst").exists()
    partial = Trainer(load_config(None, [*args, "train.stage=finetune", "train.init_partial=true"]), explicit=chosen)
    assert partial.cfg.model.num_layers == 2 and "skipped" in capsys.readouterr().out


def test_init_from_another_catalogue_drops_only_the_id_table_and_bias(tiny, capsys):
    tmp, data, store = tiny
    ids = ["model.item_id_embedding=true", "model.item_bias=true"]
    _run(_finetune_args(tmp, data, store, "train.epochs=1", "log.run_name=big", *ids))
    small, small_store = make_tiny_dataset(tmp / "small", n_items=25)
    capsys.readouterr()
    result = _run(_finetune_args(tmp, small, small_store, "train.epochs=1", "log.run_name=small", *ids,
                                 f"train.init_from={tmp / 'runs' / 'big'}"))
    out = capsys.readouterr().out
    assert "28/30 tensors" in out and "skipped 2: " in out
    assert "id_embedding.weight (shape (30, 32) vs (25, 32))" in out and "item_bias (shape (30,) vs (25,))" in out
    assert result["test"]["users"] == 40


def test_nan_loss_stops_with_the_step_named(tiny):
    tmp, data, store = tiny
    with pytest.raises(LearnError, match=r"training loss is (nan|inf) at epoch 1, step 2 "):
        _run(_finetune_args(tmp, data, store, "train.lr=1e30"))
    assert not list_steps(tmp / "runs" / "ft" / "checkpoints")
