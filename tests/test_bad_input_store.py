"""Bad input to `store`, `embed`, `text-baseline`, `eval` and the run config (issue 13, points 2, 3 and 8).

Every case asserts the CLI's promise: exit code 2, exactly one non-empty stderr line starting with ``error:`` that
names the problem, and no output created or damaged (a snapshot of every file under the test folders before and
after). Commands run in-process through :func:`learn.cli.main` where that is safe; a truncated ``data.mdb`` could
kill the process with SIGBUS if its check failed, so those cases run in a subprocess.
"""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import lmdb
import numpy as np
import pytest

from learn.cli import main
from learn.data.store import StoreWriter
from tests.conftest import TINY_MODEL, make_tiny_dataset, run_cli


# ------------------------------------------------------------------------------------------------------ helpers
def _snapshot(*roots: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            if p.is_file():
                out[str(p)] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                out[str(p)] = (-1, "dir")
    return out


def _one_error_line(rc: int, err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _refused(capsys, roots: tuple[Path, ...], args: list[str], *needles: str) -> str:
    """Run ``python -m learn ARGS`` in-process; assert the one-line refusal and that nothing under ``roots`` changed."""
    before = _snapshot(*roots)
    capsys.readouterr()
    rc = main([str(a) for a in args])
    _, err = capsys.readouterr()
    line = _one_error_line(rc, err, *needles)
    assert _snapshot(*roots) == before
    return line


def _refused_subprocess(roots: tuple[Path, ...], args: list[str], *needles: str) -> str:
    before = _snapshot(*roots)
    r = run_cli(*map(str, args))
    assert r.returncode != -7, "killed by SIGBUS"
    line = _one_error_line(r.returncode, r.stderr, *needles)
    assert _snapshot(*roots) == before
    return line


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "lock.mdb").unlink(missing_ok=True)
    return dst


def _poke(store: Path, key: bytes, value: bytes) -> None:
    env = lmdb.open(str(store), subdir=True)
    with env.begin(write=True) as txn:
        txn.put(key, value)
    env.close()


# ----------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny dataset, its good store, damaged copies of it, and a trained checkpoint (one epoch)."""
    from learn.config import load_config
    from learn.train import Trainer

    root = tmp_path_factory.mktemp("bad_store")
    data, store = make_tiny_dataset(root)
    stores = {"good": store}
    nan = stores["nan"] = _copy(store, root / "nan_store")
    _poke(nan, b"I007", np.full(16, np.nan, "<f4").tobytes())
    inf = stores["inf"] = _copy(store, root / "inf_store")
    _poke(inf, b"I003", np.r_[np.inf, np.zeros(15)].astype("<f4").tobytes())
    trunc = stores["truncated"] = _copy(store, root / "trunc_store")
    (trunc / "data.mdb").write_bytes((store / "data.mdb").read_bytes()[:8192])
    garbage = stores["garbage"] = _copy(store, root / "garbage_store")
    (garbage / "data.mdb").write_bytes(np.random.default_rng(0).bytes((store / "data.mdb").stat().st_size))
    empty = stores["empty"] = _copy(store, root / "empty_store")
    (empty / "data.mdb").write_bytes(b"")
    short = stores["short_value"] = _copy(store, root / "short_value_store")
    _poke(short, b"I005", b"\x00" * 10)
    with StoreWriter(root / "never", work_dir=root / "no_meta_store") as w:  # an embed that never finished
        w.put_many(["I000", "I001"], np.ones((2, 16), "f4"))
    stores["no_meta"] = root / "no_meta_store"
    runs = root / "runs"
    args = [*TINY_MODEL, f"data.dataset={data}", f"data.store={store}", f"log.output_dir={runs}",
            "log.run_name=ft", "log.wandb=false", "log.progress=false", "train.batch_size=8", "train.epochs=1",
            "train.stage=finetune", "data.max_history=4"]
    Trainer(load_config(None, args)).fit()
    return {"root": root, "data": data, "stores": stores, "ckpt": runs / "ft"}


@pytest.fixture
def out(tmp_path) -> Path:
    """An empty folder for outputs; tests assert it stays empty."""
    return tmp_path


def _roots(inputs, out):
    return (inputs["root"], out)


# ----------------------------------------------------------------------------------------------- store command
@pytest.mark.parametrize("kind,needle", [
    ("garbage", "damaged item store (LMDB cannot open it: MDB_INVALID"),
    ("empty", "damaged item store (data.mdb is empty)"),
    ("short_value", "damaged item store (item 'I005' has 10 bytes, expected 64"),
    ("no_meta", "incomplete (no __meta__ record)"),
])
def test_store_info_damaged(capsys, inputs, out, kind, needle):
    _refused(capsys, _roots(inputs, out), ["store", "info", inputs["stores"][kind]], needle)


def test_store_info_truncated_is_one_line_not_sigbus(inputs, out):
    store = inputs["stores"]["truncated"]
    _refused_subprocess(_roots(inputs, out), ["store", "info", store],
                        f"{store / 'data.mdb'}: damaged item store (the file has 8,192 bytes", "python -m learn embed")


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_store_export_of_non_finite_store(capsys, inputs, out, kind):
    _refused(capsys, _roots(inputs, out), ["store", "export-txt", inputs["stores"][kind], out / "x.txt"],
             "item vectors are not finite (NaN/Inf)")


@pytest.mark.parametrize("value,needle", [
    ("0.5,nan", "line 2: item 'B' has a non-finite value"),
    ("0.5,1e999", "line 2: item 'B' has a non-finite value"),
    ("0.5,abc", "line 2: item 'B' has a non-numeric value"),
    ("0.5", "line 2: item 'B' has 1 values, expected 2"),
])
def test_store_import_txt_bad_values(capsys, inputs, out, tmp_path_factory, value, needle):
    src = tmp_path_factory.mktemp("txt") / "emb.txt"
    src.write_text(f"A\x010.1,0.2\nB\x01{value}\n")
    _refused(capsys, (*_roots(inputs, out), src.parent), ["store", "import-txt", src, "--out", out / "s"],
             f"{src}: {needle}")


def test_store_import_txt_float16_overflow(capsys, inputs, out, tmp_path_factory):
    src = tmp_path_factory.mktemp("txt") / "emb.txt"
    src.write_text("A\x010.1,0.2\nB\x01100000,0.2\n")
    _refused(capsys, (*_roots(inputs, out), src.parent),
             ["store", "import-txt", src, "--out", out / "s", "--store-dtype", "float16"],
             "non-finite (NaN/Inf) vectors for 1 items (e.g. 'B'; float16 holds values up to 65504)")


def test_store_import_lmdb_non_finite_pickle(capsys, inputs, out, tmp_path_factory):
    src = tmp_path_factory.mktemp("lmdb") / "legacy"
    env = lmdb.open(str(src), subdir=True)
    with env.begin(write=True) as txn:
        txn.put(b"A", pickle.dumps(np.array([0.1, 0.2])))
        txn.put(b"B", pickle.dumps(np.array([np.nan, 0.2])))
        txn.put(b"num_samples", b"2")
    env.close()
    _refused(capsys, (*_roots(inputs, out), src), ["store", "import-lmdb", src, "--out", out / "s"],
             f"{src}: item 'B': non-finite vector")


def test_store_import_lmdb_garbage_source(capsys, inputs, out):
    _refused(capsys, _roots(inputs, out), ["store", "import-lmdb", inputs["stores"]["garbage"], "--out", out / "s"],
             "damaged item store (LMDB cannot open it")


# -------------------------------------------------------------------------------------------- text-baseline
@pytest.mark.parametrize("ks", ["abc", "0", "10,-5", "10,"])
def test_text_baseline_bad_ks(capsys, inputs, out, ks):
    _refused(capsys, _roots(inputs, out), ["text-baseline", "--data", inputs["data"], "--store",
                                           inputs["stores"]["good"], "--ks", ks, "--out", out / "m.json"],
             f"--ks must be comma-separated positive integers (e.g. 10,50), got {ks!r}")


@pytest.mark.parametrize("kind,needle", [
    ("nan", "1 item vectors are not finite (NaN/Inf), e.g. 'I007'"),
    ("inf", "1 item vectors are not finite (NaN/Inf), e.g. 'I003'"),
    ("short_value", "damaged item store (item 'I005'"),
])
def test_text_baseline_damaged_store(capsys, inputs, out, kind, needle):
    _refused(capsys, _roots(inputs, out), ["text-baseline", "--data", inputs["data"], "--store",
                                           inputs["stores"][kind], "--out", out / "m.json"], needle)


def test_text_baseline_truncated_store(inputs, out):
    _refused_subprocess(_roots(inputs, out), ["text-baseline", "--data", inputs["data"], "--store",
                                              inputs["stores"]["truncated"], "--out", out / "m.json"],
                        "damaged item store (the file has 8,192 bytes")


# ------------------------------------------------------------------------------------------------------- eval
@pytest.mark.parametrize("ks", ["abc", "0"])
def test_eval_bad_ks_before_anything_is_loaded(capsys, inputs, out, ks):
    # the checkpoint does not exist: --ks is checked first
    _refused(capsys, _roots(inputs, out), ["eval", "--ckpt", out / "no_such_run", "--data", inputs["data"],
                                           "--store", inputs["stores"]["good"], "--ks", ks, "--out", out / "ev"],
             f"--ks must be comma-separated positive integers (e.g. 10,50), got {ks!r}")


@pytest.mark.parametrize("kind,needle", [
    ("nan", "1 item vectors are not finite (NaN/Inf), e.g. 'I007'"),
    ("garbage", "damaged item store (LMDB cannot open it"),
])
def test_eval_damaged_store(capsys, inputs, out, kind, needle):
    _refused(capsys, _roots(inputs, out), ["eval", "--ckpt", inputs["ckpt"], "--data", inputs["data"],
                                           "--store", inputs["stores"][kind], "--out", out / "ev"], needle)


def test_eval_truncated_store(inputs, out):
    _refused_subprocess(_roots(inputs, out), ["eval", "--ckpt", inputs["ckpt"], "--data", inputs["data"],
                                              "--store", inputs["stores"]["truncated"], "--out", out / "ev"],
                        "damaged item store (the file has 8,192 bytes")


# -------------------------------------------------------------------------------------------------- finetune
def _finetune(inputs, out, store, *extra):
    return ["finetune", *TINY_MODEL, f"data.dataset={inputs['data']}", f"data.store={store}",
            f"log.output_dir={out / 'runs'}", "log.wandb=false", "log.progress=false", "train.epochs=1", *extra]


def test_finetune_truncated_store(inputs, out):
    _refused_subprocess(_roots(inputs, out), _finetune(inputs, out, inputs["stores"]["truncated"]),
                        "damaged item store (the file has 8,192 bytes")


def test_finetune_nan_store(capsys, inputs, out):
    _refused(capsys, _roots(inputs, out), _finetune(inputs, out, inputs["stores"]["nan"]),
             "item vectors are not finite (NaN/Inf), e.g. 'I007'")


@pytest.mark.parametrize("override,needle", [
    ("train.lr=.inf", "train.lr=inf: numbers must be finite"),
    ("train.lr=.nan", "train.lr=nan: numbers must be finite"),
    ("train.lr=0", "train.lr must be positive"),
    ("train.lr=-1e-3", "train.lr must be positive"),
    ("train.epochs=0", "train.epochs must be at least 1"),
    ("model.num_heads=5", "model.hidden_size 64 is not divisible by model.num_heads 5"),
    ("model.num_heads=0", "model.num_heads must be at least 1"),
    ("train.eval_metric=foo", "train.eval_metric: unknown 'foo'"),
    ("train.eval_metric=ndcg@20", "train.eval_metric: unknown 'ndcg@20'"),
    ("train.betas=[0.9, .nan]", "train.betas=[0.9, nan]: numbers must be finite"),
])
def test_config_refused_before_any_data_is_loaded(capsys, inputs, out, override, needle):
    # the dataset does not exist: the config is checked before anything is read
    args = ["finetune", "model.hidden_size=64", "model.num_heads=4", f"data.dataset={out / 'no_such_dataset'}",
            f"data.store={out / 'no_such_store'}", f"log.output_dir={out / 'runs'}", "log.wandb=false", override]
    _refused(capsys, _roots(inputs, out), args, f"config: {needle}")


# ----------------------------------------------------------------------------------------------------- embed
@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_embed_out_in_the_dataset_folder(capsys, inputs, out, where):
    data = inputs["data"]
    target = {"same": data, "inside": data / "store", "parent": data.parent}[where]
    word = {"same": "is", "inside": "is inside", "parent": "contains"}[where]
    # --llm does not exist either: --out is checked before the model or the texts are loaded
    _refused(capsys, _roots(inputs, out), ["embed", "--data", data, "--out", target, "--llm", out / "no_model",
                                           "--overwrite"],
             f"--out {target} {word} the dataset folder {data}")


def test_embed_out_is_an_existing_file(capsys, inputs, out):
    (out / "notes.txt").write_text("keep me")
    _refused(capsys, _roots(inputs, out), ["embed", "--data", inputs["data"], "--out", out / "notes.txt", "--llm",
                                           out / "no_model", "--overwrite"],
             f"--out {out / 'notes.txt'} exists and is not an item store")
