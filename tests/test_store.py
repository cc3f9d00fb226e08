"""The LMDB item store: round trips, refusals of incomplete/corrupt stores, seed-format exports and imports."""

from __future__ import annotations

import os
import pickle

import lmdb
import numpy as np
import pytest

from learn.data.store import META_KEY, ItemStore, StoreMeta, StoreWriter, write_store
from learn.data.store_cli import export_pkl, export_txt, import_lmdb, import_txt, load_numpy_pickle
from learn.errors import LearnError
from tests.conftest import run_cli


def _vectors(n: int = 20, dim: int = 8, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return [f"B{i:04d}" for i in range(n)], x / np.linalg.norm(x, axis=1, keepdims=True)


def _meta(**kw) -> StoreMeta:
    return StoreMeta(dim=0, dtype="float32", count=0, model="tiny", **kw)


@pytest.mark.parametrize("dtype,atol", [("float32", 0.0), ("float16", 1e-3)])
def test_round_trip(tmp_path, dtype, atol):
    keys, x = _vectors()
    write_store(tmp_path / "s", keys, x, _meta(text_template_hash="abc"), dtype=dtype)
    s = ItemStore(tmp_path / "s")
    assert len(s) == 20 and s.dim == 8 and s.meta.dtype == dtype and s.meta.model == "tiny"
    assert s.meta.text_template_hash == "abc" and s.meta.created
    assert s.keys() == keys and "B0003" in s and "nope" not in s and "__meta__" not in s
    got = s.get(["B0005", "B0001", "B0005"])
    assert got.dtype == np.float32 and got.shape == (3, 8)
    np.testing.assert_allclose(got, x[[5, 1, 5]], atol=atol, rtol=0)
    np.testing.assert_allclose(s.get_one("B0002"), x[2], atol=atol, rtol=0)
    k2, arr = s.to_array()
    assert k2 == keys and arr.shape == (20, 8)
    assert s.get([]).shape == (0, 8)
    raw_bytes = (tmp_path / "s" / "data.mdb").stat().st_size
    assert raw_bytes > 0


def test_missing_keys_and_check(tmp_path):
    keys, x = _vectors()
    write_store(tmp_path / "s", keys, x, _meta())
    s = ItemStore(tmp_path / "s")
    with pytest.raises(LearnError, match=r"2 of 3 requested items are missing .*'X1'"):
        s.get(["B0001", "X1", "X2"])
    s.check(dim=8, model="tiny")
    with pytest.raises(LearnError, match="8-d vectors .* 4096-d were expected"):
        s.check(dim=4096)
    with pytest.raises(LearnError, match="built with model 'tiny'"):
        s.check(model="baichuan")


def test_view_cache_is_bounded_and_results_are_private(tmp_path):
    from learn.data import store as store_mod

    keys, x = _vectors(50)
    write_store(tmp_path / "s", keys, x, _meta())
    s = ItemStore(tmp_path / "s", view_cache=8)
    rng = np.random.default_rng(1)
    widest = 0
    for _ in range(20):  # random batches, some wider than the cap: always exact, never more views than cap/batch
        idx = rng.integers(0, 50, int(rng.integers(1, 12)))
        widest = max(widest, len(set(idx.tolist())))
        np.testing.assert_array_equal(s.get([keys[i] for i in idx]), x[idx])
        assert len(s._views().map) <= max(8, widest)
    got = s.get(keys[:3])
    got += 1.0  # a writable copy: the store's memory map is untouched
    np.testing.assert_array_equal(s.get(keys[:3]), x[:3])
    store_mod._release(tmp_path / "s")  # a writer took the environment: the reader reopens it
    np.testing.assert_array_equal(s.get(keys[5:9]), x[5:9])


def test_reader_sees_a_store_replaced_on_disk(tmp_path):
    keys, x = _vectors()
    write_store(tmp_path / "s", keys, x, _meta())
    s = ItemStore(tmp_path / "s")
    np.testing.assert_array_equal(s.get(keys), x)
    write_store(tmp_path / "s", keys, -x, _meta(), overwrite=True)
    np.testing.assert_array_equal(ItemStore(tmp_path / "s").get(keys), -x)  # a new reader: the new vectors
    np.testing.assert_array_equal(s.get(keys), x)  # the old reader keeps its consistent snapshot


def test_picklable_and_dataloader_workers(tmp_path):
    import torch

    keys, x = _vectors()
    write_store(tmp_path / "s", keys, x, _meta())
    s = ItemStore(tmp_path / "s")
    s.get(keys[:2])  # opened in the parent
    clone = pickle.loads(pickle.dumps(s))
    assert clone._env is None
    np.testing.assert_array_equal(clone.get(keys), x)

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return s.get([keys[i]])[0]

    ctx = "fork" if "fork" in torch.multiprocessing.get_all_start_methods() else None
    loader = torch.utils.data.DataLoader(DS(), batch_size=5, num_workers=2, multiprocessing_context=ctx)
    np.testing.assert_array_equal(torch.cat(list(loader)).numpy(), x)


def test_refuses_incomplete_and_corrupt_stores(tmp_path):
    keys, x = _vectors()
    with StoreWriter(tmp_path / "s", work_dir=tmp_path / "work") as w:  # persistent work folder, never finalized
        w.put_many(keys, x)
    assert not (tmp_path / "s").exists()
    with pytest.raises(LearnError, match="incomplete .*no __meta__"):
        ItemStore(tmp_path / "work")
    write_store(tmp_path / "ok", keys, x, _meta())
    env = lmdb.open(str(tmp_path / "ok"), subdir=True)
    with env.begin(write=True) as txn:
        txn.delete(b"B0003")
    env.close()
    with pytest.raises(LearnError, match="says 20 items but it holds 19"):
        ItemStore(tmp_path / "ok")
    write_store(tmp_path / "t", keys, x, _meta())
    env = lmdb.open(str(tmp_path / "t"), subdir=True)
    with env.begin(write=True) as txn:
        txn.put(b"B0004", b"\x00" * 6)  # truncated value
    env.close()
    with pytest.raises(LearnError, match="damaged item store .*'B0004' has 6 bytes"):  # found on open
        ItemStore(tmp_path / "t")
    with pytest.raises(LearnError, match="not found"):
        ItemStore(tmp_path / "nope")


def test_failed_write_leaves_nothing(tmp_path):
    keys, x = _vectors()
    x[3, 0] = np.nan
    with pytest.raises(LearnError, match="non-finite"):
        write_store(tmp_path / "s", keys, x, _meta())
    with pytest.raises(LearnError, match="reserved"):
        write_store(tmp_path / "s", ["__meta__"], x[:1], _meta())
    assert list(tmp_path.iterdir()) == []
    write_store(tmp_path / "s", keys[:2], x[:2], _meta())
    with pytest.raises(LearnError, match="already exists"):
        write_store(tmp_path / "s", keys[:2], x[:2], _meta())
    write_store(tmp_path / "s", keys[:3], x[:3], _meta(), overwrite=True)
    assert len(ItemStore(tmp_path / "s")) == 3 and [p.name for p in tmp_path.iterdir()] == ["s"]


def test_txt_and_pkl_exports_round_trip(tmp_path):
    keys, x = _vectors()
    write_store(tmp_path / "s", keys, x, _meta(layer=-1))
    assert export_txt(tmp_path / "s", tmp_path / "emb" / "Scientific.txt") == 20
    lines = (tmp_path / "emb" / "Scientific.txt").read_text().splitlines()
    key, vec = lines[0].split("\x01")
    assert key == "B0000" and len(vec.split(",")) == 8
    assert import_txt([tmp_path / "emb" / "Scientific.txt"], tmp_path / "back", meta_from=tmp_path / "s") == 20
    back = ItemStore(tmp_path / "back")
    np.testing.assert_array_equal(back.get(keys), x)  # %.9g round-trips float32 exactly
    assert back.meta.model == "tiny"  # meta copied: the vectors agree
    assert export_pkl(tmp_path / "s", tmp_path / "product2emb_Scientific.pkl") == 20
    with open(tmp_path / "product2emb_Scientific.pkl", "rb") as f:
        table = pickle.load(f)
    assert table["B0007"].dtype == np.float32
    np.testing.assert_array_equal(table["B0007"], x[7])


def test_import_authors_txt_parts_and_bad_lines(tmp_path):
    keys, x = _vectors(6, 4)
    for part, rows in enumerate((range(0, 3), range(3, 6))):
        (tmp_path / f"part_{part}.txt").write_text(
            "".join(f"{keys[i]}\x01{','.join(str(float(v)) for v in x[i])}\n" for i in rows))
    assert import_txt([tmp_path / "part_0.txt", tmp_path / "part_1.txt"], tmp_path / "s") == 6
    np.testing.assert_allclose(ItemStore(tmp_path / "s").get(keys), x, atol=1e-7)
    (tmp_path / "bad.txt").write_text("A\x011,2,3,4\nB\x011,2,3\n")
    with pytest.raises(LearnError, match="line 2: item 'B' has 3 values, expected 4"):
        import_txt([tmp_path / "bad.txt"], tmp_path / "s2")
    assert not (tmp_path / "s2").exists()


def _authors_lmdb(path, keys, x, num_samples=None):
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for k, v in zip(keys, x):
            txn.put(k.encode(), pickle.dumps(v.astype(np.float64)))
        txn.put(b"num_samples", str(len(keys) if num_samples is None else num_samples).encode())
    env.close()


def test_import_authors_lmdb(tmp_path):
    keys, x = _vectors(10, 6)
    _authors_lmdb(tmp_path / "Scientific_baichuan_lmdb", keys, x)
    with pytest.raises(LearnError, match="original-LEARN pickle LMDB"):
        ItemStore(tmp_path / "Scientific_baichuan_lmdb")
    assert import_lmdb(tmp_path / "Scientific_baichuan_lmdb", tmp_path / "s", dtype="float16") == 10
    s = ItemStore(tmp_path / "s")
    assert s.meta.dtype == "float16" and len(s) == 10
    np.testing.assert_allclose(s.get(keys), x, atol=1e-3)
    _authors_lmdb(tmp_path / "bad_count", keys, x, num_samples=11)
    with pytest.raises(LearnError, match="num_samples says 11"):
        import_lmdb(tmp_path / "bad_count", tmp_path / "s2")
    assert not (tmp_path / "s2").exists()


def test_numpy_only_unpickler_refuses_code():
    arr = np.arange(5, dtype=np.float64)
    np.testing.assert_array_equal(load_numpy_pickle(pickle.dumps(arr)), arr)
    np.testing.assert_array_equal(load_numpy_pickle(pickle.dumps(arr, protocol=5)), arr)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_numpy_pickle(pickle.dumps(Evil()))


def test_store_cli(tmp_path):
    keys, x = _vectors()
    write_store(tmp_path / "s", keys, x, _meta())
    r = run_cli("store", "info", str(tmp_path / "s"))
    assert r.returncode == 0 and '"dim": 8' in r.stdout and '"count": 20' in r.stdout
    r = run_cli("store", "export-txt", str(tmp_path / "s"), str(tmp_path / "a.txt"))
    assert r.returncode == 0 and (tmp_path / "a.txt").exists()
    with lmdb.open(str(tmp_path / "s"), subdir=True) as env, env.begin(write=True) as txn:
        txn.delete(META_KEY)
    r = run_cli("store", "export-pkl", str(tmp_path / "s"), str(tmp_path / "a.pkl"))
    assert r.returncode == 2 and r.stderr.startswith("error:") and "incomplete" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "a.pkl").exists()


def _poke(path, key: bytes, value: bytes) -> None:
    env = lmdb.open(str(path), subdir=True)
    with env.begin(write=True) as txn:
        txn.put(key, value)
    env.close()


def test_non_finite_vectors_are_refused_on_write_and_on_read(tmp_path):
    keys, x = _vectors()
    with pytest.raises(LearnError, match="non-finite .* float16 holds values up to 65504"):
        write_store(tmp_path / "half", keys, x * 1e6, _meta(), dtype="float16")  # finite in fp32, inf in fp16
    assert list(tmp_path.iterdir()) == []
    with StoreWriter(tmp_path / "raw") as w, pytest.raises(LearnError, match="non-finite"):
        w.put_raw([(b"A", np.array([1.0, np.inf], "<f4").tobytes())])
    write_store(tmp_path / "s", keys, x, _meta())
    _poke(tmp_path / "s", keys[4].encode(), np.full(8, np.nan, "<f4").tobytes())  # a store damaged behind our back
    store = ItemStore(tmp_path / "s")
    assert store.get(keys[:4]).shape == (4, 8)  # finite items still read
    for _ in range(2):  # the bad item is never kept, so every read refuses it
        with pytest.raises(LearnError, match=rf"1 item vectors are not finite .*'{keys[4]}'"):
            store.get(keys)
    with pytest.raises(LearnError, match="not finite"):
        export_txt(tmp_path / "s", tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "middle"])
def test_damaged_data_mdb_is_refused_before_any_mapped_read(tmp_path, damage):
    """Checked in a child process: a read past the end of a truncated memory map is SIGBUS, not an exception."""
    keys, x = _vectors(n=400, dim=64)
    write_store(tmp_path / "s", keys, x, _meta())
    data = tmp_path / "s" / "data.mdb"
    size = data.stat().st_size
    if damage == "truncate":
        os.truncate(data, 8192)
    elif damage == "garbage":
        data.write_bytes(np.random.default_rng(0).bytes(size))
    elif damage == "empty":
        os.truncate(data, 0)
    else:  # a page in the middle overwritten: the header and the size are right, the B-tree is not
        with open(data, "r+b") as f:
            f.seek(3 * 4096)
            f.write(np.random.default_rng(1).bytes(4096))
    r = run_cli("store", "info", str(tmp_path / "s"))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"error: {data}: damaged item store ("), r.stderr
    assert "python -m learn embed" in r.stderr


def test_merge_prefixes_keys_keeps_meta_and_refuses_mixed_stores(tmp_path):
    (ka, xa), (kb, xb) = _vectors(5, seed=1), _vectors(3, seed=2)  # the same keys B0000.. in both categories
    write_store(tmp_path / "a", ka, xa, _meta(layer=-2, text_template_hash="t"))
    write_store(tmp_path / "b", kb, xb, _meta(layer=-2, text_template_hash="t"))
    r = run_cli("store", "merge", f"office={tmp_path / 'a'}", f"toys={tmp_path / 'b'}", "--out", str(tmp_path / "m"))
    assert r.returncode == 0 and "wrote 8 items" in r.stdout, r.stderr
    m = ItemStore(tmp_path / "m")
    assert m.keys() == [f"office:{k}" for k in ka] + [f"toys:{k}" for k in kb]
    np.testing.assert_array_equal(m.get(["toys:B0002", "office:B0004"]), np.stack([xb[2], xa[4]]))
    assert (m.meta.model, m.meta.layer, m.meta.text_template_hash, m.meta.count) == ("tiny", -2, "t", 8)
    assert m.meta.extra["merged_from"] == [f"office={tmp_path / 'a'}", f"toys={tmp_path / 'b'}"]

    write_store(tmp_path / "c", kb, xb, _meta(layer=-1, text_template_hash="t"))  # another layer: other vectors
    for args, problem in (([f"x={tmp_path / 'a'}", f"y={tmp_path / 'c'}"], "(layer differ)"),
                          ([str(tmp_path / "a"), str(tmp_path / "b")], "already in an earlier source"),
                          ([f"a:b={tmp_path / 'a'}"], "without ':'")):
        r = run_cli("store", "merge", *args, "--out", str(tmp_path / "bad"))
        assert r.returncode == 2 and problem in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "bad").exists()
