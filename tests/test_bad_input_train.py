"""Bad input and refusals of pretrain / finetune / eval (issue 13): each case exits 2 with exactly one ``error:`` line
on stderr naming the problem, and creates or damages nothing (a refused run leaves no config.yaml / metrics.jsonl).

Covers: a run folder holding another config (lr, dataset, model, unreadable config.yaml; ``ckpt.on_mismatch``), its
lock held by another process, ``train.init_from`` with towers that do not fit / missing / tampered, an item store made
by another LLM at finetune (init and resume) and at eval, tampered checkpoints at eval, a non-finite loss.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from learn.config import load_config
from learn.train import Trainer
from tests.conftest import ROOT, TINY_MODEL, make_tiny_corpus, make_tiny_dataset, run_here


def _ft_args(tmp: Path, data: Path, store: Path, name: str, *extra: str) -> list[str]:
    return [*TINY_MODEL, f"data.dataset={data}", f"data.store={store}", f"log.output_dir={tmp / 'runs'}",
            f"log.run_name={name}", "log.wandb=false", "log.progress=false", "train.batch_size=8", "train.lr=3e-3",
            "train.epochs=1", "train.catalogue_chunk=7", "ckpt.save_every_steps=2", *extra]


def _pt_args(tmp: Path, corpus: Path, store: Path, name: str, *extra: str) -> list[str]:
    return [*TINY_MODEL, f"data.pretrain_corpus={corpus}", f"data.store={store}", f"log.output_dir={tmp / 'runs'}",
            f"log.run_name={name}", "log.wandb=false", "log.progress=false", "train.batch_size=8", "train.epochs=1",
            "data.min_seq_len=3", *extra]


def _store_like(src: Path, dst: Path, model: str = "other-llm", scale: float = 1.0) -> Path:
    """A store with the same keys and dim as ``src``, made by another LLM (or with scaled vectors)."""
    from learn.data.store import ItemStore, write_store

    keys, vectors = ItemStore(src).to_array()
    write_store(dst, keys, (vectors * scale).astype("float32"),
                meta={"dim": vectors.shape[1], "dtype": "float32", "count": len(keys), "model": model})
    return dst


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(proc: subprocess.CompletedProcess, *words: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-3000:]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Tiny data + store, one finished finetune run ``base`` and one pretrain run ``pt`` (in-process, fast)."""
    tmp = tmp_path_factory.mktemp("badtrain")
    data, store = make_tiny_dataset(tmp)
    Trainer(load_config(None, [*_ft_args(tmp, data, store, "base"), "train.stage=finetune"])).fit()
    corpus = make_tiny_corpus(tmp, data, store)
    Trainer(load_config(None, [*_pt_args(tmp, corpus, store, "pt"), "train.stage=pretrain"])).fit()
    other = _store_like(store, tmp / "other_store")
    return tmp, data, store, corpus, other


def _copy_run(tmp: Path, name: str, to: str) -> Path:
    dst = tmp / "runs" / to
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(tmp / "runs" / name, dst)
    return dst


def _finetune(*args: str):
    return run_here("finetune", *args)  # in-process: test_train.py pins the one-line exit of a finetune process


# ------------------------------------------------------------------------------------------ run folder: config
def test_resume_with_another_lr_lists_the_key_and_changes_nothing(env):
    tmp, data, store, _, _ = env
    run = _copy_run(tmp, "base", "lr")
    before = _snapshot(run)
    line = _refused(_finetune(*_ft_args(tmp, data, store, "lr", "train.lr=1e-3")), "train.lr", "ckpt.on_mismatch")
    assert "data." not in line  # only the key that differs
    assert _snapshot(run) == before


def test_resume_with_another_dataset_is_refused(env):
    tmp, data, store, _, _ = env
    run = _copy_run(tmp, "base", "ds")
    other_data = tmp / "tiny_copy"
    if not other_data.exists():
        shutil.copytree(data, other_data)
    before = _snapshot(run)
    _refused(_finetune(*_ft_args(tmp, other_data, store, "ds")), "data.dataset")
    assert _snapshot(run) == before


def test_accept_refuses_a_key_that_is_not_safe_to_change(env):
    tmp, data, store, _, _ = env
    run = _copy_run(tmp, "base", "acc")
    before = _snapshot(run)
    _refused(_finetune(*_ft_args(tmp, data, store, "acc", "train.seed=7", "train.epochs=2",
                                 "ckpt.on_mismatch=accept")), "train.seed", "only")
    assert _snapshot(run) == before


def test_unknown_on_mismatch_value_creates_nothing(env):
    tmp, data, store, _, _ = env
    _refused(_finetune(*_ft_args(tmp, data, store, "badmode", "ckpt.on_mismatch=maybe")), "ckpt.on_mismatch")
    assert not (tmp / "runs" / "badmode").exists()


def test_unreadable_config_yaml_in_the_run_folder_is_refused(env):
    tmp, data, store, _, _ = env
    run = _copy_run(tmp, "base", "garbled")
    (run / "config.yaml").write_bytes(b"\xff\xfe: [unclosed")
    before = _snapshot(run)
    _refused(_finetune(*_ft_args(tmp, data, store, "garbled")), "config.yaml", "unreadable")
    assert _snapshot(run) == before


def test_pretrain_resume_with_another_model_is_refused(env):
    tmp, _, store, corpus, _ = env
    run = _copy_run(tmp, "pt", "pt-arch")
    before = _snapshot(run)
    _refused(run_here("pretrain", *_pt_args(tmp, corpus, store, "pt-arch", "model.num_layers=1")),
             "model.num_layers")
    assert _snapshot(run) == before


# ------------------------------------------------------------------------------------------ run folder: lock
def _hold_lock(folder: Path) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    code = ("import fcntl, sys, time\nf = open(sys.argv[1], 'a+')\nfcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\ntime.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder / ".lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_second_process_on_a_running_folder_refuses_at_once(env):
    tmp, data, store, _, _ = env
    run = _copy_run(tmp, "base", "busy")
    before = _snapshot(run)
    holder = _hold_lock(run)
    try:
        _refused(_finetune(*_ft_args(tmp, data, store, "busy")), "in use by another")
    finally:
        holder.kill()
        holder.wait()
    assert _snapshot(run) == before


def test_lock_held_on_a_new_folder_leaves_no_config_or_metrics(env):
    tmp, data, store, _, _ = env
    run = tmp / "runs" / "busy-new"
    holder = _hold_lock(run)
    try:
        _refused(_finetune(*_ft_args(tmp, data, store, "busy-new")), "in use by another")
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


# ------------------------------------------------------------------------------------------ init_from
def test_init_from_with_towers_that_do_not_fit_is_refused(env):
    tmp, data, store, _, _ = env
    _refused(_finetune(*_ft_args(tmp, data, store, "wide", f"train.init_from={tmp / 'runs' / 'base'}",
                                 "model.hidden_size=64")), "towers did not load", "train.init_partial")
    assert not (tmp / "runs" / "wide").exists()


def test_init_from_a_missing_run_is_refused(env):
    tmp, data, store, _, _ = env
    _refused(_finetune(*_ft_args(tmp, data, store, "nosrc", f"train.init_from={tmp / 'runs' / 'nope'}")), "nope",
             "pretrain first (bash run_pretrain.sh)", "train.init_from= to start from scratch")
    assert not (tmp / "runs" / "nosrc").exists()


def test_init_from_a_tampered_checkpoint_is_refused(env):
    tmp, data, store, _, _ = env
    src = _copy_run(tmp, "base", "tampered-src")
    with open(src / "best" / "model.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    _refused(_finetune(*_ft_args(tmp, data, store, "from-tampered", f"train.init_from={src}")), "sha256")
    assert not (tmp / "runs" / "from-tampered").exists()


def test_init_from_with_a_store_from_another_llm_is_refused(env):
    tmp, data, _, _, other = env
    _refused(_finetune(*_ft_args(tmp, data, other, "otherllm", f"train.init_from={tmp / 'runs' / 'base'}")),
             "other-llm", "same LLM")
    assert not (tmp / "runs" / "otherllm").exists()


def test_resume_after_the_store_was_rebuilt_by_another_llm_is_refused(env):
    tmp, data, store, _, _ = env
    mine = tmp / "rebuilt_store"
    shutil.copytree(store, mine)
    Trainer(load_config(None, [*_ft_args(tmp, data, mine, "rebuilt"), "train.stage=finetune"])).fit()
    shutil.rmtree(mine)
    _store_like(store, mine)
    run = tmp / "runs" / "rebuilt"
    before = _snapshot(run)
    _refused(_finetune(*_ft_args(tmp, data, mine, "rebuilt", "train.epochs=2", "ckpt.on_mismatch=accept")),
             "other-llm", "checkpoint")
    assert _snapshot(run) == before


def test_resume_from_a_folder_that_is_no_checkpoint_leaves_nothing(env):
    tmp, data, store, _, _ = env
    _refused(_finetune(*_ft_args(tmp, data, store, "badresume", f"ckpt.resume={data}")), "not a usable checkpoint")
    assert not (tmp / "runs" / "badresume").exists()


# ------------------------------------------------------------------------------------------ non-finite loss
def test_exploding_lr_stops_at_the_step_that_went_non_finite(env):
    tmp, data, store, _, _ = env
    _refused(_finetune(*_ft_args(tmp, data, store, "boom", "train.lr=1e30")), "training loss is", "step 2")
    run = tmp / "runs" / "boom"
    assert not (run / "checkpoints").exists() and not (run / "best").exists() and not (run / "metrics.json").exists()


def test_a_model_producing_nan_stops_at_step_1(env):
    tmp, data, store, _, _ = env
    huge = tmp / "huge_store"
    if not huge.exists():
        _store_like(store, huge, model="random", scale=1e30)  # finite vectors whose squares overflow float32
    _refused(_finetune(*_ft_args(tmp, data, huge, "nanmodel")), "training loss is", "step 1")
    assert not (tmp / "runs" / "nanmodel" / "checkpoints").exists()


# ------------------------------------------------------------------------------------------ eval
def _eval(ckpt: Path, data: Path, store: Path, out: Path):
    return run_here("eval", "--ckpt", ckpt, "--data", data, "--store", store, "--out", out)  # processes: test_evaluate


def test_eval_of_a_missing_run_writes_nothing(env):
    tmp, data, store, _, _ = env
    _refused(_eval(tmp / "runs" / "missing", data, store, tmp / "ev-missing"), "missing")
    assert not (tmp / "ev-missing").exists()


def test_eval_with_a_store_from_another_llm_is_refused(env):
    tmp, data, _, _, other = env
    _refused(_eval(tmp / "runs" / "base", data, other, tmp / "ev-other"), "other-llm")
    assert not (tmp / "ev-other").exists()


def test_eval_of_tampered_best_weights_is_refused(env):
    tmp, data, store, _, _ = env
    run = _copy_run(tmp, "base", "ev-tampered")
    with open(run / "best" / "model.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    before = _snapshot(run)
    _refused(_eval(run, data, store, tmp / "ev-t"), "sha256", "model.safetensors")
    assert not (tmp / "ev-t").exists() and _snapshot(run) == before


def test_eval_of_a_tampered_step_checkpoint_is_refused(env):
    tmp, data, store, _, _ = env
    run = _copy_run(tmp, "base", "ev-step")
    step = sorted((run / "checkpoints").glob("step-*"))[-1]
    (step / "config.yaml").write_text((step / "config.yaml").read_text().replace("hidden_size: 32", "hidden_size: 33"))
    _refused(_eval(step, data, store, tmp / "ev-s"), "sha256", "config.yaml")
    assert not (tmp / "ev-s").exists()


def test_eval_with_a_corrupted_manifest_is_refused(env):
    tmp, data, store, _, _ = env
    run = _copy_run(tmp, "base", "ev-manifest")
    (run / "best" / "manifest.json").write_text("{not json")
    _refused(_eval(run, data, store, tmp / "ev-m"), "manifest.json")
    assert not (tmp / "ev-m").exists()


def test_the_fixture_run_still_evaluates(env):
    """The control: the untouched run passes every check above (so each refusal is caused by its one change)."""
    tmp, data, store, _, _ = env
    proc = _eval(tmp / "runs" / "base", data, store, tmp / "ev-ok")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp / "ev-ok" / "metrics.json").exists()


# ------------------------------------------------------------------------------------------ impossible configs
def _refused_here(capsys, argv: list[str], *words: str) -> str:
    """``python -m learn ARGV`` in-process: exit 2 and one ``error:`` line holding ``words``."""
    from learn.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error:"), (rc, lines)
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize("stage,extra,needle", [
    ("finetune", ["model.position=learned", "model.max_len=8", "data.max_history=9"],
     "data.max_history 9 exceeds model.max_len 8"),
    ("finetune", ["log.log_every=0"], "log.log_every must be at least 1"),
    ("finetune", ["train.eval_every=-1"], "train.eval_every and train.patience must be >= 0"),
    ("finetune", ["data.finetune_min_len=9", "data.finetune_max_len=5"], "data.finetune_min_len 9 exceeds"),
    ("finetune", ["train.loss=dense", "train.mask_history=true"], "train.mask_history=true needs the softmax loss"),
    ("finetune", ["model.item_tower=table", "model.output_dim=16"], "model.item_tower=table needs"),
    ("finetune", ["ckpt.keep_last_n=-1"], "ckpt.keep_last_n"),
    ("pretrain", ["train.loss=softmax", "data.preload_store=false"], "train.loss=softmax scores the whole"),
    ("pretrain", ["data.min_seq_len=50", "data.max_seq_len=40"], "data.min_seq_len 50 exceeds"),
])
def test_impossible_config_is_refused_before_any_file_is_written(env, capsys, stage, extra, needle):
    """Refused by config validation, before the run folder (its .lock, config.yaml, metrics.jsonl) exists, whatever
    the data: here the sequences are short enough that a learned-position run would never have hit max_len."""
    tmp, data, store, corpus, _ = env
    args = (_ft_args(tmp, data, store, "combo", *extra) if stage == "finetune"
            else _pt_args(tmp, corpus, store, "combo", *extra))
    _refused_here(capsys, [stage, *args], f"config: {needle}")
    assert not (tmp / "runs" / "combo").exists()


def test_max_history_beyond_an_inherited_max_len_is_refused_and_leaves_nothing(env, capsys):
    """train.init_from takes model.max_len from the source run: the check runs again with it, and the refused start
    removes the folder it had locked."""
    tmp, data, store, _, _ = env
    src = tmp / "runs" / "short-pos"
    if not src.exists():
        Trainer(load_config(None, [*_ft_args(tmp, data, store, "short-pos", "model.position=learned",
                                             "model.max_len=8", "data.max_history=8"), "train.stage=finetune"])).fit()
    _refused_here(capsys, ["finetune", *_ft_args(tmp, data, store, "inherit-pos", f"train.init_from={src}")],
                  "data.max_history 40 exceeds model.max_len 8")
    assert not (tmp / "runs" / "inherit-pos").exists()


# ------------------------------------------------------------------------------------------ wandb without a login
def test_wandb_mode_without_a_login_is_offline(monkeypatch, tmp_path):
    from learn.tracking import wandb_mode

    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    mode, line = wandb_mode()
    assert mode == "offline" and "no API key" in line and "WANDB_MODE=disabled" in line
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert wandb_mode() == (None, None)  # `wandb login` wrote a key: wandb's own (online) default
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == (None, None)
    monkeypatch.delenv("WANDB_API_KEY")
    for mode in ("offline", "online", "disabled"):
        monkeypatch.setenv("WANDB_MODE", mode)
        assert wandb_mode() == ("disabled" if mode == "disabled" else None, None)


def test_wandb_that_cannot_start_leaves_the_metrics_to_jsonl(monkeypatch, tmp_path):
    import wandb

    from learn.tracking import MetricLogger

    def refuse(**_):
        raise wandb.errors.UsageError("api_key not configured (no-tty). call wandb.login(key=[your_api_key])")

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(wandb, "init", refuse)
    notices = []
    logger = MetricLogger(tmp_path / "run", {}, notice=notices.append)
    logger.log({"train/loss": 1.0}, 1)
    logger.close()
    assert len(notices) == 1 and notices[0].startswith("wandb: could not start (UsageError: api_key not configured")
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("train/loss") == 1
    assert not (tmp_path / "run" / "wandb_id.txt").exists()


def test_finetune_without_a_wandb_login_logs_offline_with_one_notice(env, tmp_path):
    """WANDB_MODE unset and no API key (a fresh machine): the run finishes, one notice line, no traceback."""
    tmp, data, store, _, _ = env
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    clean.update(HOME=str(tmp_path), NETRC=str(tmp_path / "no-netrc"), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    args = [a for a in _ft_args(tmp, data, store, "wandb-offline", "train.max_steps=2") if a != "log.wandb=false"]
    proc = subprocess.run([sys.executable, "-m", "learn", "finetune", *args], capture_output=True, text=True,
                          env=clean, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count("wandb: no API key") == 1 and "Traceback" not in out, out[-3000:]
    run = tmp / "runs" / "wandb-offline"
    assert list((run / "wandb").glob("offline-run-*")) and (run / "metrics.json").exists()


# ------------------------------------------------------------------------------------------ users without history
def _with_a_test_only_user(tmp: Path, data: Path) -> Path:
    """A copy of the tiny dataset plus one user who appears only in the test split (no history item at all)."""
    import json

    dst = tmp / "tiny_testonly"
    if not dst.exists():
        shutil.copytree(data, dst)
        test = json.loads((dst / "test.json").read_text())
        umap = json.loads((dst / "umap.json").read_text())
        test["999"], umap["U999"] = [3], 999
        (dst / "test.json").write_text(json.dumps(test))
        (dst / "umap.json").write_text(json.dumps(umap))
    return dst


def test_eval_counts_and_reports_users_without_history(env, tmp_path):
    tmp, data, store, _, _ = env
    testonly = _with_a_test_only_user(tmp, data)
    proc = _eval(tmp / "runs" / "base", testonly, store, tmp_path / "ev")
    assert proc.returncode == 0, proc.stderr[-2000:]
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "1 test user(s) without any history item" in notes[0], proc.stderr
    import json

    test = json.loads((tmp_path / "ev" / "metrics.json").read_text())["test"]
    assert test["users"] == 40 and test["skipped"] == 1 and "skipped" not in json.loads(
        (tmp_path / "ev" / "metrics.json").read_text())["val"]


def test_text_baseline_reports_users_without_history(env, capsys):
    from learn.cli import main

    tmp, data, store, _, _ = env
    testonly = _with_a_test_only_user(tmp, data)
    assert main(["text-baseline", "--data", str(testonly), "--store", str(store)]) == 0
    out, err = capsys.readouterr()
    assert "users=40 skipped=1" in out
    assert [line for line in err.splitlines() if line.startswith("note:")] == [
        "note: 1 test user(s) without any history item before the test item (e.g. only in the test split) skipped: "
        "not ranked, not part of the mean of 40"]


# ------------------------------------------------------------------------------------------ catalogue identity
def without_catalogue_identity(run: Path, dst: Path, dataset: Path | None = None) -> Path:
    """A copy of ``run`` whose best/ weights look written before catalogue identities were recorded (no
    ``learn.catalogue`` metadata; ``dataset``: its config.yaml names that data.dataset instead), manifest renewed."""
    import yaml
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from learn.checkpoint import CATALOGUE_KEY, WEIGHT_FILES, write_manifest

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(run, dst)
    best = dst / "best"
    with safe_open(str(best / "model.safetensors"), "pt") as f:
        meta = {k: v for k, v in (f.metadata() or {}).items() if k != CATALOGUE_KEY}
    save_file(load_file(best / "model.safetensors"), str(best / "model.safetensors"), metadata=meta)
    if dataset is not None:
        doc = yaml.safe_load((best / "config.yaml").read_text())
        doc["data"]["dataset"] = str(dataset)
        (best / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    write_manifest(best, WEIGHT_FILES)
    return dst


def _permuted(tmp: Path, data: Path) -> Path:
    """The tiny dataset with two items' indices swapped in smap.json: the same items, count and store, another
    order (an ID table or bias applied by index would score the wrong item)."""
    import json

    dst = tmp / "tiny_permuted"
    if not dst.exists():
        shutil.copytree(data, dst)
        smap = json.loads((dst / "smap.json").read_text())
        smap["I000"], smap["I001"] = smap["I001"], smap["I000"]
        (dst / "smap.json").write_text(json.dumps(smap))
    return dst


@pytest.fixture(scope="module")
def cat(env):
    """The base (text-only) run, a text+ID+bias run on the same data, and datasets with another catalogue."""
    tmp, data, store, _, _ = env
    if not (tmp / "runs" / "ids").exists():
        Trainer(load_config(None, [*_ft_args(tmp, data, store, "ids", "model.item_id_embedding=true",
                                             "model.item_bias=true"), "train.stage=finetune"])).fit()
    big, big_store = make_tiny_dataset(tmp / "big", n_items=35)
    return tmp, data, store, _permuted(tmp, data), big, big_store


def _cli(*argv) -> subprocess.CompletedProcess:
    return run_here(*argv)


@pytest.mark.parametrize("command", ["eval", "recommend", "export"])
def test_a_run_on_another_catalogue_is_refused(cat, tmp_path, command):
    """The issue's case: an ID run ranked on a dataset whose items sit at other indices (same count) finished with
    numbers from the wrong items' biases; on a larger catalogue it ended in an IndexError traceback."""
    tmp, data, store, permuted, big, big_store = cat
    run = tmp / "runs" / "ids"
    extra = {"eval": ["--out", tmp_path / "out"], "recommend": ["--user", "U1"], "export": ["--out", tmp_path / "out"]}
    for other, other_store in ((permuted, store), (big, big_store)):
        line = _refused(_cli(command, "--ckpt", run, "--data", other, "--store", other_store, *extra[command]),
                        f"the catalogue of {other}", f"is not the one {run / 'best'} was trained on",
                        "model.item_id_embedding / model.item_bias would score other items by index")
        assert "30 items of" in line and ("35 items" in line or "30 items" in line)
    assert not (tmp_path / "out").exists()


def test_other_catalogue_flag_lets_only_a_text_only_model_rank_it(cat, tmp_path):
    tmp, data, store, permuted, _, _ = cat
    base = ["--data", permuted, "--store", store, "--out"]
    _refused(_cli("eval", "--ckpt", tmp / "runs" / "base", *base, tmp_path / "a"), "text-only model could rank it",
             "--other-catalogue")
    proc = _cli("eval", "--ckpt", tmp / "runs" / "base", *base, tmp_path / "b", "--other-catalogue")
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr[-2000:]
    _refused(_cli("eval", "--ckpt", tmp / "runs" / "ids", *base, tmp_path / "c", "--other-catalogue"),
             "--other-catalogue ranks another catalogue from item text alone",
             "model.item_id_embedding and model.item_bias")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_weights_without_a_catalogue_identity_fall_back_to_the_saved_config(cat, tmp_path):
    """Weights written before the identity was recorded: their run's config.yaml names the dataset; its smap.json
    decides when the folder exists, the ID table's row count when it is gone (with one note when nothing decides)."""
    tmp, data, store, permuted, big, big_store = cat
    old = without_catalogue_identity(tmp / "runs" / "ids", tmp_path / "old")
    assert _cli("eval", "--ckpt", old, "--data", data, "--store", store, "--out", tmp_path / "o1").returncode == 0
    _refused(_cli("eval", "--ckpt", old, "--data", permuted, "--store", store, "--out", tmp_path / "o2"),
             f"is not the one of {data}", "no catalogue identity recorded")
    gone = without_catalogue_identity(tmp / "runs" / "ids", tmp_path / "gone", dataset=tmp_path / "deleted")
    _refused(_cli("eval", "--ckpt", gone, "--data", big, "--store", big_store, "--out", tmp_path / "o3"),
             "has per-item rows for 30 items", "has 35")
    proc = _cli("eval", "--ckpt", gone, "--data", permuted, "--store", store, "--out", tmp_path / "o4")
    notes = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 0 and len(notes) == 1 and notes[0].startswith("note:"), proc.stderr[-2000:]
    assert "records no catalogue identity" in notes[0] and "30 items either way" in notes[0]
    _refused(_cli("eval", "--ckpt", gone, "--data", permuted, "--store", store, "--out", tmp_path / "o5",
                  "--other-catalogue"), "records no catalogue identity", "from item text alone")  # ID rows: never
    assert not any((tmp_path / o).exists() for o in ("o2", "o3", "o5"))


def test_pretraining_with_id_rows_refuses_validation_on_another_catalogue(cat, capsys):
    tmp, _, store, permuted, _, _ = cat
    corpus = tmp / "corpus"
    _refused_here(capsys, ["pretrain", *_pt_args(tmp, corpus, store, "pt-ids", "model.item_bias=true",
                                                 f"data.dataset={permuted}")],
                  "model.item_bias: validation on data.dataset=", "by index")
    assert not (tmp / "runs" / "pt-ids").exists()


def test_trainer_and_export_report_users_without_history(env, capsys, tmp_path):
    import json

    from learn.cli import main

    tmp, data, store, _, _ = env
    testonly = _with_a_test_only_user(tmp, data)
    Trainer(load_config(None, [*_ft_args(tmp, testonly, store, "testonly-run", "train.max_steps=2"),
                               "train.stage=finetune"])).fit()
    out = capsys.readouterr().out
    assert out.count("note: 1 test user(s) without any history item") == 1, out
    assert json.loads((tmp / "runs" / "testonly-run" / "metrics.json").read_text())["test"]["skipped"] == 1
    assert main(["export", "--ckpt", str(tmp / "runs" / "testonly-run"), "--data", str(testonly), "--store",
                 str(store), "--out", str(tmp_path / "export"), "--history-from", "test"]) == 0  # as eval ranks
    assert "and 40 users (1 without any history item left out)" in capsys.readouterr().out
    assert json.loads((tmp_path / "export" / "export.json").read_text())["users_without_history"] == 1
