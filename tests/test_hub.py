"""learn.hub: HTTP downloads against a local server (resume, checksum, errors), safe extraction, hf/gdown routing."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import learn.hub as hub
from learn.cli import main as cli_main
from learn.errors import LearnError

DATA = os.urandom(3 * 1024 * 1024 + 123)  # a few CHUNKs, so a dropped connection leaves a partial .part
SHA = hashlib.sha256(DATA).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """GET with ``Range: bytes=N-``; paths in ``drop_once`` send half the body then close, once."""

    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        rng = self.headers.get("Range")
        srv.log.append((self.path, rng))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if rng and self.path not in srv.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in srv.drop_once:
            srv.drop_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            return  # HTTP/1.0: the connection closes here, short of Content-Length
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_server() -> ThreadingHTTPServer:
    """A local HTTP server in a thread serving ``srv.files`` ({path: bytes}); stop it with :func:`stop_server`."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.log, srv.drop_once, srv.ignore_range = {"/model.bin": DATA}, [], set(), set()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    return srv


def stop_server(srv: ThreadingHTTPServer) -> None:
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(hub, "_RETRY_WAIT", 0.0)
    srv = start_server()
    yield srv
    stop_server(srv)


def download(*args: str) -> int:
    return cli_main(["download", *args, "--quiet"])


def test_full_download_with_checksum(server, tmp_path):
    assert download(f"{server.url}/model.bin", "--to", str(tmp_path / "out"), "--sha256", SHA) == 0
    assert (tmp_path / "out" / "model.bin").read_bytes() == DATA
    assert sorted(os.listdir(tmp_path / "out")) == ["model.bin"]
    # a second run finds the verified file and does not download again
    assert download(f"{server.url}/model.bin", "--to", str(tmp_path / "out"), "--name", "model.bin") == 0
    assert len(server.log) == 1


def test_dropped_connection_resumes_in_the_same_run(server, tmp_path):
    server.drop_once.add("/model.bin")
    assert download(f"{server.url}/model.bin", "--to", str(tmp_path), "--sha256", SHA) == 0
    assert (tmp_path / "model.bin").read_bytes() == DATA
    assert server.log[0][1] is None and re.fullmatch(r"bytes=\d+-", server.log[1][1])
    assert not (tmp_path / "model.bin.part").exists()


def test_dropped_connection_resumes_on_the_next_run(server, tmp_path, capsys):
    server.drop_once.add("/model.bin")
    assert download(f"{server.url}/model.bin", "--to", str(tmp_path), "--retries", "0") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "resumes on the next run" in err
    part = tmp_path / "model.bin.part"
    assert not (tmp_path / "model.bin").exists() and 0 < part.stat().st_size < len(DATA)
    kept = part.stat().st_size
    assert download(f"{server.url}/model.bin", "--to", str(tmp_path), "--sha256", SHA) == 0
    assert server.log[-1][1] == f"bytes={kept}-"
    assert (tmp_path / "model.bin").read_bytes() == DATA and not part.exists()


def test_server_ignoring_range_restarts(server, tmp_path):
    server.ignore_range.add("/model.bin")
    (tmp_path / "model.bin.part").write_bytes(b"x" * 1000)  # stale bytes that must not survive
    assert download(f"{server.url}/model.bin", "--to", str(tmp_path), "--sha256", SHA) == 0
    assert server.log[0][1] == "bytes=1000-"
    assert (tmp_path / "model.bin").read_bytes() == DATA


def test_complete_part_file_is_verified_not_refetched(server, tmp_path):
    (tmp_path / "model.bin.part").write_bytes(DATA)  # the run died between download and rename
    assert download(f"{server.url}/model.bin", "--to", str(tmp_path), "--sha256", SHA) == 0
    assert (tmp_path / "model.bin").read_bytes() == DATA


def test_checksum_mismatch_deletes_and_exits_2(server, tmp_path, capsys):
    assert download(f"{server.url}/model.bin", "--to", str(tmp_path), "--sha256", "0" * 64) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sha256 mismatch") and "\n" not in err
    assert os.listdir(tmp_path) == []


def test_404_writes_nothing(server, tmp_path, capsys):
    assert download(f"{server.url}/missing.bin", "--to", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert "HTTP 404" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def tar_bytes(members: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """(name, data, link target) -> .tar.gz bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:  # "hard:TARGET" makes a hard link, anything else a symlink
                hard = link.startswith("hard:")
                info.type, info.linkname = (tarfile.LNKTYPE, link[5:]) if hard else (tarfile.SYMTYPE, link)
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_extract_good_archives(server, tmp_path):
    server.files["/ckpt.tar.gz"] = tar_bytes([("ckpt/config.json", b"{}", None), ("ckpt/w.bin", b"123", None)])
    server.files["/data.zip"] = zip_bytes({"a/b.txt": b"hello", "c.txt": b"x"})
    assert download(f"{server.url}/ckpt.tar.gz", "--to", str(tmp_path), "--extract") == 0
    assert (tmp_path / "ckpt" / "ckpt" / "w.bin").read_bytes() == b"123"
    assert download(f"{server.url}/data.zip", "--to", str(tmp_path), "--extract") == 0
    assert (tmp_path / "data" / "a" / "b.txt").read_bytes() == b"hello"
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "ckpt.tar.gz", "data", "data.zip"]


@pytest.mark.parametrize("name,payload", [
    ("evil.tar.gz", lambda: tar_bytes([("ok.txt", b"fine", None), ("../evil.txt", b"owned", None)])),
    ("abs.tar.gz", lambda: tar_bytes([("ok.txt", b"fine", None), ("/tmp/evil.txt", b"owned", None)])),
    ("link.tar.gz", lambda: tar_bytes([("ok.txt", b"fine", None), ("up", None, "../../etc")])),
    ("hard.tar.gz", lambda: tar_bytes([("ok.txt", b"fine", None), ("pw", None, "hard:../../etc/passwd")])),
    ("evil.zip", lambda: zip_bytes({"ok.txt": b"fine", "../evil.txt": b"owned"})),
])
def test_unsafe_archive_is_rejected_whole(server, tmp_path, capsys, name, payload):
    server.files[f"/{name}"] = payload()
    target = tmp_path / "dl"
    assert download(f"{server.url}/{name}", "--to", str(target), "--extract") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "refusing to extract" in err and "\n" not in err
    assert os.listdir(target) == [name]  # the archive stays; nothing extracted, no temp folder
    assert sorted(os.listdir(tmp_path)) == ["dl"]


@pytest.mark.parametrize("source,expected", [
    ("https://example.org/a/b/model.safetensors?x=1", hub.Source("http", "https://example.org/a/b/model.safetensors?x=1")),
    ("hf://org/name", hub.Source("hf", "org/name")),
    ("hf://org/name@v1.0", hub.Source("hf", "org/name", "v1.0")),
    ("hf://datasets/org/data@main", hub.Source("hf", "org/data", "main", "dataset")),
    ("gdrive://11wTD3jMoP_Fb5SlHfKr28NIMCnG_jOpy", hub.Source("gdrive-file", "11wTD3jMoP_Fb5SlHfKr28NIMCnG_jOpy")),
    ("gdrive://folder/12QXyYftF0r06ie2j9kc6XPbOpgA78dQN",
     hub.Source("gdrive-folder", "12QXyYftF0r06ie2j9kc6XPbOpgA78dQN")),
    ("https://drive.google.com/drive/folders/12QXyYftF0r06ie2j9kc6XPbOpgA78dQN?usp=sharing",
     hub.Source("gdrive-folder", "12QXyYftF0r06ie2j9kc6XPbOpgA78dQN")),
    ("https://drive.google.com/drive/u/0/folders/12QXyYftF0r06ie2j9kc6XPbOpgA78dQN",
     hub.Source("gdrive-folder", "12QXyYftF0r06ie2j9kc6XPbOpgA78dQN")),
    ("https://drive.google.com/file/d/123AHjsvZFTeT_Mhfb81eMHvnE8fbsFi3/view?usp=sharing",
     hub.Source("gdrive-file", "123AHjsvZFTeT_Mhfb81eMHvnE8fbsFi3")),
    ("https://drive.google.com/open?id=123AHjsvZFTeT_Mhfb81eMHvnE8fbsFi3",
     hub.Source("gdrive-file", "123AHjsvZFTeT_Mhfb81eMHvnE8fbsFi3")),
    ("https://drive.google.com/uc?export=download&id=123AHjsvZFTeT_Mhfb81eMHvnE8fbsFi3",
     hub.Source("gdrive-file", "123AHjsvZFTeT_Mhfb81eMHvnE8fbsFi3")),
    ("https://drive.usercontent.google.com/download?id=123AHjsvZFTeT_Mhfb81eMHvnE8fbsFi3&export=download",
     hub.Source("gdrive-file", "123AHjsvZFTeT_Mhfb81eMHvnE8fbsFi3")),
])
def test_parse_source(source, expected):
    assert hub.parse_source(source) == expected


@pytest.mark.parametrize("bad", ["ftp://x/y", "model.bin", "hf://justname", "gdrive://short",
                                 "https://drive.google.com/drive/my-drive"])
def test_parse_source_rejects(bad):
    with pytest.raises(LearnError):
        hub.parse_source(bad)


def test_gdown_routing(monkeypatch, tmp_path):
    import gdown

    calls = []

    def fake_download(id=None, output=None, **kw):  # noqa: A002 (gdown's keyword)
        calls.append(("file", id, output, kw.get("resume")))
        path = output + "remote.zip" if output.endswith(os.sep) else output
        with open(path, "wb") as f:
            f.write(zip_bytes({"x.txt": b"1"}))
        return path

    def fake_folder(id=None, output=None, **kw):  # noqa: A002
        calls.append(("folder", id, output, kw.get("resume")))
        os.makedirs(output, exist_ok=True)
        return [os.path.join(output, "epoch20.pt")]

    monkeypatch.setattr(gdown, "download", fake_download)
    monkeypatch.setattr(gdown, "download_folder", fake_folder)
    fid, did = "123AHjsvZFTeT_Mhfb81eMHvnE8fbsFi3", "12QXyYftF0r06ie2j9kc6XPbOpgA78dQN"
    assert download(f"https://drive.google.com/file/d/{fid}/view", "--to", str(tmp_path / "f"), "--extract") == 0
    assert calls[-1] == ("file", fid, str(tmp_path / "f") + os.sep, True)
    assert (tmp_path / "f" / "remote" / "x.txt").read_bytes() == b"1"
    assert download(f"gdrive://{fid}", "--to", str(tmp_path / "g"), "--name", "data.zip") == 0
    assert calls[-1] == ("file", fid, str(tmp_path / "g" / "data.zip"), True)
    assert download(f"gdrive://{fid}", "--to", str(tmp_path / "h"), "--name", "d.zip", "--sha256", "1" * 64) == 2
    assert not (tmp_path / "h" / "d.zip").exists()
    assert download(f"https://drive.google.com/drive/folders/{did}", "--to", str(tmp_path / "ckpt")) == 0
    assert calls[-1] == ("folder", did, str(tmp_path / "ckpt"), True)


def test_hf_routing(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    def fake_snapshot(repo_id, **kw):
        calls.append((repo_id, kw))
        return str(kw["local_dir"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    assert download("hf://org/model@abc123", "--to", str(tmp_path)) == 0
    repo, kw = calls[-1]
    assert repo == "org/model" and kw["revision"] == "abc123" and kw["local_dir"] == tmp_path
    assert set(kw["allow_patterns"]) >= {"*.safetensors", "*.json", "*.yaml"} and "*.bin" not in kw["allow_patterns"]

    def failing(repo_id, **kw):
        raise RuntimeError("Repository Not Found for url\nmore lines")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    assert download("hf://org/missing", "--to", str(tmp_path)) == 2


def test_extract_on_a_plain_file_is_a_note(server, tmp_path, capsys):
    assert download(f"{server.url}/model.bin", "--to", str(tmp_path), "--extract") == 0
    assert "nothing extracted" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["model.bin"]


def test_download_script_sources_parse():
    """Every source listed at the top of scripts/download_checkpoints.sh is one `learn download` accepts (not run)."""
    from pathlib import Path

    script = (Path(__file__).resolve().parents[1] / "scripts" / "download_checkpoints.sh").read_text()
    entries = re.findall(r'^\s+"(\w+)\|([^|]+)\|([^|]+)\|([^|]+)\|([^|"]+)"$', script, flags=re.M)
    assert [e[0] for e in entries] == ["checkpoints", "pretrain", "finetune"]
    kinds = [hub.parse_source(e[1]).kind for e in entries]
    assert kinds == ["gdrive-folder", "gdrive-file", "gdrive-file"]
    for *_, size, sha in entries:
        assert size == "unknown" or size.isdigit()
        assert sha == "unknown" or re.fullmatch(r"[0-9a-f]{64}", sha)


def test_gdrive_wrong_sha_keeps_a_file_that_was_there(monkeypatch, tmp_path, capsys):
    """gdown skips a file that exists (resume); a wrong --sha256 then must not delete the user's file."""
    import gdown

    def fake_download(id=None, output=None, **kw):  # noqa: A002 (gdown's keyword)
        if not os.path.exists(output):
            with open(output, "wb") as f:
                f.write(b"fresh")
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    (tmp_path / "d.zip").write_bytes(b"mine")
    fid = "123AHjsvZFTeT_Mhfb81eMHvnE8fbsFi3"
    assert download(f"gdrive://{fid}", "--to", str(tmp_path), "--name", "d.zip", "--sha256", "1" * 64) == 2
    assert "left as it is" in capsys.readouterr().err
    assert (tmp_path / "d.zip").read_bytes() == b"mine"
    assert download(f"gdrive://{fid}", "--to", str(tmp_path / "new"), "--name", "d.zip", "--sha256", "1" * 64) == 2
    assert not (tmp_path / "new").exists()  # the fresh, wrong file is deleted and so is the folder it needed
