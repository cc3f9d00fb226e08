"""Bad input to ``prepare``, ``stats``, ``download`` and the CLI itself (issue 13, points 1, 8, 9).

Every case asserts exit code 2, exactly one non-empty stderr line ``error: ...`` naming the problem (and the file
where there is one), and that the whole temporary folder (inputs, outputs, any pre-existing output) is byte for byte
as it was: nothing created, nothing damaged. Most run in-process through :func:`learn.cli.main`; a closed pipe, a
file-size limit and a full stdout need a subprocess.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import learn.hub as hub
from learn.cli import main
from tests import test_hub

ROOT = Path(__file__).resolve().parents[1]
NOT_UTF8 = b'{"0": [0, 1], "caf\xe9": [2]}'  # latin-1 bytes: invalid UTF-8


# ----------------------------------------------------------------------------------------------- helpers
def tree(root: Path) -> dict[str, object]:
    """Every path under ``root`` -> "dir" or (bytes, mode): compared before and after a refused command."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = Path(dirpath, f)
            out[os.path.relpath(p, root)] = (p.read_bytes(), p.stat().st_mode)
    return out


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {err!r}"
    line = lines[0]
    assert line.startswith("error: ") and len(line) > len("error: ") + 5, line
    return line


def refused(capsys, root: Path, argv: list[str], *needles: str) -> str:
    """Run ``learn argv`` in-process: exit 2, one ``error:`` line containing every needle, ``root`` unchanged."""
    before = tree(root)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    line = one_error_line(err)
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    assert tree(root) == before
    return line


def canonical(folder: Path, n_users: int = 6, n_items: int = 8) -> Path:
    """A small valid canonical dataset written by learn itself."""
    from learn.data.formats import SeqDataset, write_dataset

    keys = [f"I{i}" for i in range(n_items)]
    train, val, test = {}, {}, {}
    for u in range(n_users):
        seq = [(u + j) % n_items for j in range(5)]
        train[str(u)], val[str(u)], test[str(u)] = seq[:-2], seq[-2:-1], seq[-1:]
    ds = SeqDataset(folder, folder.name, train, val, test, {k: i for i, k in enumerate(keys)},
                    {f"U{u}": u for u in range(n_users)}, {k: {"title": f"item {k}"} for k in keys})
    write_dataset(ds, folder)
    return folder


def corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    seqs = [["a", "b", "c", "d", "e"], ["b", "c", "d", "e", "f"]]
    (folder / "train.json").write_text(json.dumps(seqs))
    (folder / "dev.json").write_text(json.dumps(seqs[:1]))
    (folder / "meta_data.json").write_text(json.dumps({k: {"title": k} for k in "abcdef"}))
    return folder


def recbole(folder: Path, n_users: int = 5, name: str = "x") -> Path:
    folder.mkdir(parents=True)
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    rows += [f"u{u}\ti{(u + j) % 9}\t{j}" for u in range(n_users) for j in range(6)]
    (folder / f"{name}.inter").write_text("\n".join(rows) + "\n")
    items = "".join(f"i{i}\tt{i}\n" for i in range(9))
    (folder / f"{name}.item").write_text("item_id:token\ttitle:token_seq\n" + items)
    return folder


def unisrec(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "x.item2index").write_text("".join(f"A{i}\t{i}\n" for i in range(4)))
    (folder / "x.user2index").write_text("U0\t0\nU1\t1\n")
    (folder / "x.text").write_text("".join(f"A{i}\ttext {i}\n" for i in range(4)))
    (folder / "x.valid.inter").write_text("0\t0 1\t2\n1\t1 2\t3\n")
    (folder / "x.test.inter").write_text("0\t0 1 2\t3\n1\t1 2 3\t0\n")
    return folder


def lcrec(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "x.inter.json").write_text(json.dumps({"0": [0, 1, 2, 3], "1": [1, 2, 3]}))
    (folder / "x.item.json").write_text(json.dumps({str(i): {"title": f"t{i}"} for i in range(4)}))
    return folder


# ----------------------------------------------------------------------------------------------- generic CLI
@pytest.mark.parametrize("argv,needles", [
    (["frobnicate"], ["unknown command 'frobnicate'"]),
    (["stats"], ["python -m learn stats", "required: DIR"]),
    (["stats", "{tmp}", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["prepare", "{tmp}/a", "{tmp}/b"], ["required: --from"]),
    (["prepare", "--from", "nope", "{tmp}/a", "{tmp}/b"], ["argument --from: invalid choice: 'nope'"]),
    (["prepare", "--from", "recformer-pretrain", "--min-len", "abc", "{tmp}/a", "{tmp}/b"],
     ["argument --min-len: invalid int value: 'abc'"]),
    (["prepare", "--from", "mix", "--dev-fraction", "x", "{tmp}/a", "{tmp}/b"], ["invalid float value: 'x'"]),
    (["prepare", "--from", "recbole", "{tmp}/only"], ["takes exactly SRC OUT"]),
    (["download", "http://127.0.0.1:9/x.bin"], ["required: --to"]),
    (["download", "http://127.0.0.1:9/x.bin", "--to", "{tmp}/d", "--retries", "many"], ["invalid int value: 'many'"]),
    (["download", "ftp://example.org/x.bin", "--to", "{tmp}/d"], ["cannot download 'ftp://example.org/x.bin'"]),
    (["download", "http://example.org/x\n.bin", "--to", "{tmp}/d"], ["control character"]),
    (["download", "http://example.org/x.bin", "--to", "{tmp}/d", "--sha256", "abc"], ["--sha256 must be 64 hex"]),
], ids=lambda v: None)
def test_bad_command_line(capsys, tmp_path, argv, needles):
    refused(capsys, tmp_path, [a.replace("{tmp}", str(tmp_path)) for a in argv], *needles)


# ----------------------------------------------------------------------------------------------- stats
def _stats_case(tmp: Path, case: str) -> tuple[list[str], list[str]]:
    d = canonical(tmp / "ds")
    if case == "missing folder":
        return [str(tmp / "nope")], [str(tmp / "nope"), "folder not found"]
    if case == "file, not folder":
        (tmp / "f.json").write_text("{}")
        return [str(tmp / "f.json")], ["f.json", "not a folder"]
    if case in ("train.json", "meta_data.json", "item_text.json", "umap.json"):
        (d / case).write_bytes(NOT_UTF8)
        return [str(d)], [case, "not UTF-8"]
    if case == "malformed smap":
        (d / "smap.json").write_text('{"I0": 0,')
        return [str(d)], ["smap.json", "malformed JSON"]
    if case == "duplicate key":
        (d / "smap.json").write_text('{"I0": 0, "I0": 1}')
        return [str(d)], ["smap.json", "duplicate key 'I0'"]
    if case == "damaged gzip":
        (d / "train.json").unlink()
        (d / "train.json.gz").write_bytes(gzip.compress(b"[1, 2, 3]")[:-12] + b"garbage")
        return [str(d)], ["train.json.gz"]
    if case == "train.json is a folder":
        (d / "train.json").unlink()
        (d / "train.json").mkdir()
        return [str(d)], ["train.json", "cannot read"]
    if case == "unsafe pickle":
        (d / "item_text.json").unlink()
        (d / "product2text.dict").write_bytes(pickle.dumps({"I0": os.getcwd}))
        return [str(d)], ["product2text.dict", "refusing to load"]
    if case == "unknown item":
        (d / "test.json").write_text(json.dumps({"0": [99]}))
        return [str(d)], ["test.json", "unknown item id 99"]
    if case == "corpus dev.json":
        c = corpus(tmp / "corpus")
        (c / "dev.json").write_bytes(b'[["caf\xe9"]]')
        return [str(c)], ["dev.json", "not UTF-8"]
    if case == "corpus train.json":  # is_corpus() sniffs train.json: a non-UTF-8 one must still be one line
        c = corpus(tmp / "corpus")
        (c / "train.json").write_bytes(b'[["caf\xe9"]]')
        return [str(c)], ["train.json", "not UTF-8"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "missing folder", "file, not folder", "train.json", "meta_data.json", "item_text.json", "umap.json",
    "malformed smap", "duplicate key", "damaged gzip", "train.json is a folder", "unsafe pickle", "unknown item",
    "corpus dev.json", "corpus train.json",
])
def test_stats_refuses(capsys, tmp_path, case):
    args, needles = _stats_case(tmp_path, case)
    refused(capsys, tmp_path, ["stats", *args], *needles)


# ----------------------------------------------------------------------------------------------- prepare
def _prepare_case(tmp: Path, case: str) -> tuple[list[str], list[str]]:
    out = str(tmp / "out")
    if case == "recbole .inter":
        src = recbole(tmp / "rb")
        (src / "x.inter").write_bytes(b"user_id:token\titem_id:token\nu\xe9\ti1\n")
        return ["--from", "recbole", str(src), out], ["x.inter", "not UTF-8"]
    if case == "recbole .item":
        src = recbole(tmp / "rb")
        (src / "x.item").write_bytes(b"item_id:token\ttitle:token_seq\ni1\tcaf\xe9\n")
        return ["--from", "recbole", str(src), out], ["x.item", "not UTF-8"]
    if case == "recbole timestamp":
        src = recbole(tmp / "rb")
        with open(src / "x.inter", "a") as f:
            f.write("u1\ti1\tyesterday\n")
        return ["--from", "recbole", str(src), out], ["x.inter", "'yesterday' is not a number"]
    if case == "recbole empty":
        src = recbole(tmp / "rb")
        (src / "x.inter").write_text("")
        return ["--from", "recbole", str(src), out], ["x.inter", "empty file"]
    if case == "unisrec .text":
        src = unisrec(tmp / "us")
        (src / "x.text").write_bytes(b"A0\tcaf\xe9\n")
        return ["--from", "unisrec", str(src), out], ["x.text", "not UTF-8"]
    if case == "unisrec .item2index":
        src = unisrec(tmp / "us")
        (src / "x.item2index").write_bytes(b"A\xe90\t0\n")
        return ["--from", "unisrec", str(src), out], ["x.item2index", "not UTF-8"]
    if case == "lcrec .inter.json":
        src = lcrec(tmp / "lc")
        (src / "x.inter.json").write_bytes(NOT_UTF8)
        return ["--from", "lcrec", str(src), out], ["x.inter.json", "not UTF-8"]
    if case == "pretrain meta":
        src = corpus(tmp / "pt")
        (src / "meta_data.json").write_bytes(NOT_UTF8)
        return ["--from", "recformer-pretrain", str(src), out], ["meta_data.json", "not UTF-8"]
    if case == "recformer train.json":
        src = canonical(tmp / "rf")
        (src / "train.json").write_bytes(NOT_UTF8)
        return ["--from", "recformer", str(src), out], ["train.json", "not UTF-8"]
    if case == "missing source":
        return ["--from", "recformer", str(tmp / "nope"), out], [str(tmp / "nope"), "folder not found"]
    if case == "OUT exists":
        src = recbole(tmp / "rb")
        canonical(tmp / "out")
        return ["--from", "recbole", str(src), out], [out, "already exists", "--force"]
    if case == "OUT is a file":
        src = recbole(tmp / "rb")
        (tmp / "out").write_text("precious")
        return ["--from", "recbole", "--force", str(src), out], [out, "not a folder"]
    if case == "OUT under a file":
        src = recbole(tmp / "rb")
        (tmp / "file").write_text("precious")
        return ["--from", "recbole", str(src), str(tmp / "file" / "sub" / "out")], [str(tmp / "file"), "not a folder"]
    if case == "OUT is SRC":
        src = canonical(tmp / "rf")
        return ["--from", "recformer", "--force", str(src), str(src)], ["is also a source"]
    if case == "mix name clash":
        a, b = canonical(tmp / "a" / "ds"), canonical(tmp / "b" / "ds")
        return ["--from", "mix", str(a), str(b), out], ["share a name"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "recbole .inter", "recbole .item", "recbole timestamp", "recbole empty", "unisrec .text", "unisrec .item2index",
    "lcrec .inter.json", "pretrain meta", "recformer train.json", "missing source", "OUT exists", "OUT is a file",
    "OUT under a file", "OUT is SRC", "mix name clash",
])
def test_prepare_refuses(capsys, tmp_path, case):
    args, needles = _prepare_case(tmp_path, case)
    refused(capsys, tmp_path, ["prepare", *args], *needles)


def test_disk_full_while_writing_leaves_nothing(capsys, tmp_path, monkeypatch):
    """ENOSPC in the middle of writing OUT: one line naming OUT, no OUT, no temp folder, no created parent."""
    import learn.data.formats as formats

    src = recbole(tmp_path / "rb")
    real, calls = formats._dump, []

    def dump(path, obj):
        calls.append(path)
        if len(calls) == 3:
            with open(path, "w") as f:
                f.write("[1, 2")  # half a file, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, obj)

    monkeypatch.setattr(formats, "_dump", dump)
    out = tmp_path / "new" / "out"
    refused(capsys, tmp_path, ["prepare", "--from", "recbole", str(src), str(out)], str(out), "No space left")


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    from learn.io import atomic_write_json

    target = tmp_path / "metrics.json"
    target.write_text('{"old": 1}')

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        atomic_write_json(target, {"new": 2})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert os.listdir(tmp_path) == ["metrics.json"] and target.read_text() == '{"old": 1}'


# ----------------------------------------------------------------------------------------------- download
@pytest.fixture
def http(monkeypatch):
    monkeypatch.setattr(hub, "_RETRY_WAIT", 0.0)
    srv = test_hub.start_server()
    srv.files["/x/plain.txt"] = b"hello"
    yield srv
    test_hub.stop_server(srv)


@pytest.mark.parametrize("path,needle", [
    ("/x/..%2Fescaped.txt", "path separator"),
    ("/x/..%2F..%2Fescaped.txt", "path separator"),
    ("/x/%2Fetc%2Fescaped.txt", "path separator"),
    ("/x/..%5Cescaped.txt", "path separator"),
    ("/x/bad%0Aname.txt", "control character"),
    ("/x/bad%00name.txt", "control character"),
    ("/x/%2E%2E", "it is . or .."),
    ("/x/C%3Aescaped.txt", "drive letter"),
])
def test_download_url_name_never_escapes(capsys, tmp_path, http, path, needle):
    for p in ("/x/..%2Fescaped.txt", "/x/..%2F..%2Fescaped.txt", "/escaped.txt", path):
        http.files[p] = b"owned"
    refused(capsys, tmp_path, ["download", http.url + path, "--to", str(tmp_path / "a" / "b"), "--quiet"], needle)
    assert http.log == []  # refused before any request


@pytest.mark.parametrize("name,needle", [
    ("../escaped.txt", "path separator"), ("/tmp/escaped.txt", "path separator"), ("a\tb", "control character"),
    ("..", "is . or .."), ("", "empty"),
])
def test_download_bad_name_flag(capsys, tmp_path, http, name, needle):
    argv = ["download", f"{http.url}/x/plain.txt", "--to", str(tmp_path / "d"), "--name", name, "--quiet"]
    refused(capsys, tmp_path, argv, "--name", needle)


def test_download_to_an_existing_file(capsys, tmp_path, http):
    (tmp_path / "f").write_text("precious")
    argv = ["download", f"{http.url}/x/plain.txt", "--to", str(tmp_path / "f"), "--quiet"]
    refused(capsys, tmp_path, argv, str(tmp_path / "f"), "not a folder")
    argv[3] = str(tmp_path / "f" / "sub")
    refused(capsys, tmp_path, argv, str(tmp_path / "f"), "not a folder")


def test_wrong_sha_keeps_a_file_that_was_there(capsys, tmp_path, http):
    (tmp_path / "plain.txt").write_text("my own file")
    argv = ["download", f"{http.url}/x/plain.txt", "--to", str(tmp_path), "--sha256", "0" * 64, "--quiet"]
    refused(capsys, tmp_path, argv, "plain.txt", "left as it is")


@pytest.mark.parametrize("path,sha,needle", [
    ("/x/plain.txt", "0" * 64, "sha256 mismatch"),
    ("/x/missing.txt", None, "HTTP 404"),
])
def test_refused_download_leaves_no_folder(capsys, tmp_path, http, path, sha, needle):
    argv = ["download", http.url + path, "--to", str(tmp_path / "new" / "deeper"), "--quiet"]
    refused(capsys, tmp_path, argv + (["--sha256", sha] if sha else []), needle)


def test_good_download_still_works(capsys, tmp_path, http):
    sha = hashlib.sha256(b"hello").hexdigest()
    assert main(["download", f"{http.url}/x/plain.txt", "--to", str(tmp_path / "d"), "--sha256", sha, "--quiet"]) == 0
    assert (tmp_path / "d" / "plain.txt").read_bytes() == b"hello"
    assert sorted(os.listdir(tmp_path)) == ["d"]


# ----------------------------------------------------------------------------------------------- subprocesses
def _run(args: list[str], stdout=subprocess.PIPE, preexec_fn=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "learn", *args], stdout=stdout, stderr=subprocess.PIPE, env=env,
                          cwd=ROOT, preexec_fn=preexec_fn)


def test_closed_pipe_is_quiet(tmp_path):
    """``learn stats D | head -1`` where head has gone: no traceback, no "Exception ignored" at exit."""
    d = canonical(tmp_path / "ds")
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first byte: every write gets EPIPE
    try:
        proc = _run(["stats", str(d)], stdout=w)
    finally:
        os.close(w)
    assert proc.stderr.decode() == ""
    assert proc.returncode == 141


def test_full_stdout_is_one_line(tmp_path):
    d = canonical(tmp_path / "ds")
    with open("/dev/full", "w") as full:
        proc = _run(["stats", str(d)], stdout=full)
    assert proc.returncode == 2
    assert "No space left" in one_error_line(proc.stderr.decode())  # no 'Exception ignored' at exit either


def _small_file_limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))


def test_file_size_limit_while_writing(tmp_path):
    src = recbole(tmp_path / "rb", n_users=300)
    before = tree(tmp_path)
    out = tmp_path / "out"
    proc = _run(["prepare", "--from", "recbole", str(src), str(out)], preexec_fn=_small_file_limit)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr.decode())
    assert str(out) in line and "File too large" in line
    assert tree(tmp_path) == before


# ----------------------------------------------------------------------------------------------- umask
@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_outputs_follow_the_umask(tmp_path, http, umask, mask, file_mode, dir_mode):
    from learn.io import atomic_write_json

    umask(mask)
    out = tmp_path / "data" / "ds"
    assert main(["prepare", "--from", "recbole", str(recbole(tmp_path / "rb")), str(out)]) == 0
    atomic_write_json(tmp_path / "m" / "metrics.json", {"a": 1})
    assert main(["download", f"{http.url}/x/plain.txt", "--to", str(tmp_path / "dl"), "--quiet"]) == 0
    for folder in (tmp_path / "data", out, tmp_path / "m", tmp_path / "dl"):
        assert folder.stat().st_mode & 0o7777 == dir_mode, folder
    for f in [*out.iterdir(), tmp_path / "m" / "metrics.json", tmp_path / "dl" / "plain.txt"]:
        assert f.stat().st_mode & 0o7777 == file_mode, f


# ----------------------------------------------------------------------------------------------- convert-official
class _Payload:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_convert_official_malicious_pickle_is_one_line(tmp_path, protocol):
    """A plain pickle (not torch.save's zip) with code in it: the one error line, no torch pickle-protocol warning."""
    bad = tmp_path / "epoch20.pt"
    bad.write_bytes(pickle.dumps({"state_dict": _Payload()}, protocol=protocol))
    before = tree(tmp_path)
    proc = _run(["convert-official", str(bad), str(tmp_path / "out")])
    assert proc.returncode == 2 and b"should-never-run" not in proc.stdout
    line = one_error_line(proc.stderr.decode())
    assert str(bad) in line and ("needs pickled code" in line or "not a torch checkpoint" in line), line
    assert tree(tmp_path) == before
