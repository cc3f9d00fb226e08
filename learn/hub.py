"""Downloads: ``python -m learn download SOURCE --to DIR [--sha256 HEX] [--name FILE] [--extract]``.

SOURCE is one of
- an ``http(s)://`` URL: streamed into ``DIR/NAME.part`` with resume (HTTP Range) and retries; the file gets its final
  name only after its full size and (with ``--sha256``) its checksum are verified, so a partial file never looks
  complete. A checksum mismatch deletes the download (never a file that was there before the command). After a
  dropped connection the ``.part`` file stays and the next run resumes it; after an HTTP error (404, ...) nothing
  new is written.
- ``hf://ORG/NAME[@REVISION]`` (``hf://datasets/ORG/NAME`` for a dataset repo): weights, json, yaml, txt and
  tokenizer files of a Hugging Face repository through ``huggingface_hub.snapshot_download``.
- a Google Drive file or folder: ``gdrive://ID``, ``gdrive://folder/ID`` or a drive.google.com /
  drive.usercontent.google.com link, through ``gdown``.
The file name (``--name``, or the URL's percent-decoded last segment) must be one plain name: a separator, ``..``,
a control character or a drive letter is refused, so nothing is ever written outside ``--to``. A refused download
leaves no folder behind that it created.
``--extract`` unpacks a downloaded .zip/.tar/.tar.gz/.tgz/.tar.bz2/.tar.xz into ``DIR/<archive stem>/`` (other files
and folders are left as they are, with a note). It refuses the whole archive if any member would land outside that
folder (absolute paths, ``..``, links pointing outside, device files), and extracts into a temporary sibling folder
that is renamed only when everything succeeded.
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlparse

from tqdm import tqdm

from learn.errors import ArgumentParser, LearnError
from learn.io import atomic_dir, check_output_dir, missing_parents, remove_empty, sha256_file

CHUNK = 1 << 20
HF_PATTERNS = ["*.safetensors", "*.json", "*.yaml", "*.yml", "*.txt", "*.model"]
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip")


@dataclass(frozen=True)
class Source:
    """A parsed SOURCE argument: ``kind`` is "http", "hf", "gdrive-file" or "gdrive-folder"."""

    kind: str
    ref: str  # URL, repo id or Drive id
    revision: str | None = None
    repo_type: str | None = None


_DRIVE_ID = r"[A-Za-z0-9_-]{10,}"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # Unicode categories Cc and Cs (lone surrogates)


def parse_source(source: str) -> Source:
    """Classify SOURCE; raises :class:`LearnError` for anything we cannot download."""
    s = source.strip()
    if _CONTROL.search(s):
        raise LearnError(f"cannot download {source!r}: the source contains a control character")
    if s.startswith("hf://"):
        m = re.fullmatch(r"hf://(?:(dataset|space|model)s/)?([\w.-]+/[\w.-]+)(?:@(.*))?", s)
        if not m:
            raise LearnError(f"bad Hugging Face source {source!r}: expected hf://ORG/NAME[@REVISION]")
        return Source("hf", m[2], m[3] or None, m[1])
    if s.startswith("gdrive://"):
        m = re.fullmatch(rf"gdrive:///*(folders?/)?({_DRIVE_ID})/*", s)
        if not m:
            raise LearnError(f"bad Google Drive source {source!r}: expected gdrive://ID or gdrive://folder/ID")
        return Source("gdrive-folder" if m[1] else "gdrive-file", m[2])
    url = urlparse(s)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise LearnError(f"cannot download {source!r}: expected an http(s):// URL, hf://ORG/NAME or a Google Drive "
                         "link/gdrive://ID")
    if url.netloc.lower() in ("drive.google.com", "docs.google.com", "drive.usercontent.google.com"):
        m = re.search(rf"/folders/({_DRIVE_ID})", url.path)
        if m:
            return Source("gdrive-folder", m.group(1))
        m = re.search(rf"/(?:file/)?d/({_DRIVE_ID})", url.path)
        ids = parse_qs(url.query).get("id")
        if m or ids:
            return Source("gdrive-file", m.group(1) if m else ids[0])
        raise LearnError(f"cannot find a Google Drive file or folder id in {source!r}")
    return Source("http", s)


def _check_sha(path: Path, expected: str | None, delete: bool = True) -> None:
    """Raise if the sha256 of ``path`` is not ``expected``; ``delete`` removes it first (only files we wrote)."""
    if not expected or (got := sha256_file(path)) == expected.lower():
        return
    if delete:
        path.unlink(missing_ok=True)
        raise LearnError(f"sha256 mismatch for {path.name}: expected {expected.lower()}, got {got}; file deleted")
    raise LearnError(f"{path} already exists and its sha256 is {got}, not {expected.lower()}; it was left as it is "
                     "(remove it to download again)")


def check_file_name(name: str, what: str, hint: str = "it must be one plain file name") -> str:
    """Return ``name`` if it is one plain file name; raise for separators, ``..``, control characters and the like.

    Applies to ``--name`` and to the name taken from a URL's percent-decoded last segment, so that
    ``http://host/x/..%2Fescaped.txt`` can never write outside the ``--to`` folder.
    """
    problem = next((p for bad, p in [
        (not name, "it is empty"),
        (name in (".", ".."), "it is . or .."),
        ("/" in name or "\\" in name, "it contains a path separator"),
        (_CONTROL.search(name), "it contains a control character or undecodable bytes"),
        (re.match(r"^[A-Za-z]:", name), "it starts with a drive letter"),
        (len(name.encode("utf-8", "surrogatepass")) > 255, "it is longer than 255 bytes"),
    ] if bad), None)
    if problem:
        raise LearnError(f"refusing {what}: {problem}; {hint}")
    return name


# --------------------------------------------------------------------------------------------------------- HTTP
def _total_from_content_range(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) of a ``Content-Range: bytes START-END/TOTAL`` header (``None`` where absent or ``*``)."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    start, total = m.groups() if m else (None, None)
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def http_download(url: str, dest: Path, sha256: str | None = None, retries: int = 3, timeout: float = 60.0,
                  quiet: bool = False) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part`` with resume; returns ``dest`` once size and sha256 check out."""
    import requests

    part = dest.with_name(dest.name + ".part")
    if part.is_symlink() or (part.exists() and not part.is_file()):
        raise LearnError(f"{part} is not a regular file; remove it to download {dest.name}")
    session = requests.Session()
    attempt = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        # identity encoding: byte offsets must count the bytes on disk, not a compressed stream
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})}
        try:
            with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
                if r.status_code == 416 and offset:
                    # the .part is as long as (or longer than) the file: verify what we have, or start over
                    _, total = _total_from_content_range(r.headers.get("Content-Range"))
                    if total == offset:
                        break
                    part.unlink()
                    continue
                if r.status_code >= 400:
                    raise LearnError(f"download of {url} failed: HTTP {r.status_code} {r.reason or ''}".rstrip())
                if r.status_code == 206:
                    start, total = _total_from_content_range(r.headers.get("Content-Range"))
                    if start != offset:
                        raise LearnError(f"download of {url} failed: server resumed at byte {start}, "
                                         f"asked for {offset}")
                else:  # 200: a full body (the server ignored Range, or there was nothing to resume)
                    offset, length = 0, r.headers.get("Content-Length")
                    total = int(length) if length and "Content-Encoding" not in r.headers else None
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(part, "ab" if offset else "wb") as f, tqdm(
                        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                        disable=quiet, leave=False) as bar:
                    for block in r.iter_content(CHUNK):
                        f.write(block)
                        bar.update(len(block))
                size = part.stat().st_size
                if total is not None and size != total:
                    raise requests.ConnectionError(f"connection closed at byte {size} of {total}")
                break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            attempt += 1
            kept = part.exists() and part.stat().st_size > 0
            if attempt > retries:
                hint = f"; the partial download {part} resumes on the next run" if kept else ""
                raise LearnError(f"download of {url} failed after {attempt} tries: {_short(e)}{hint}") from None
            time.sleep(min(2 ** (attempt - 1), 10) * _RETRY_WAIT)
    _check_sha(part, sha256)
    os.replace(part, dest)
    return dest


_RETRY_WAIT = 1.0  # seconds, scaled by 1, 2, 4, ...; tests set it to 0


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1][:300] if text else type(e).__name__


# ------------------------------------------------------------------------------------------------- extraction
def archive_stem(path: Path) -> str | None:
    """Folder name for an archive (``x.tar.gz`` -> ``x``), or ``None`` if ``path`` is not a known archive."""
    for suffix in ARCHIVE_SUFFIXES:  # no suffix ends another one, so at most one matches
        if path.name.lower().endswith(suffix) and path.name[: -len(suffix)] not in ("", ".", ".."):
            return path.name[: -len(suffix)]
    return None


def _check_member(archive: Path, root: Path, name: str, tar_member: tarfile.TarInfo | None = None) -> None:
    """Reject absolute member names, any ``..`` component (even one that would stay inside), names that resolve
    outside ``root`` (already resolved with realpath, once per archive) and tar members that the "data" filter
    refuses (links pointing outside, device files)."""
    real = str(root)
    if (name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name)
            or ".." in PurePosixPath(name.replace("\\", "/")).parts
            or os.path.commonpath([os.path.realpath(os.path.join(root, name)), real]) != real):
        raise LearnError(f"{archive.name}: refusing to extract {name!r} (outside the target folder)")
    try:
        if tar_member is not None:  # checked by hand first: the "data" filter would silently strip a leading "/"
            tarfile.data_filter(tar_member, str(root))
    except tarfile.FilterError as e:
        raise LearnError(f"{archive.name}: refusing to extract {name!r} ({_short(e)})") from None


def extract_archive(archive: Path, to: Path | None = None) -> Path:
    """Unpack ``archive`` into ``to`` (default: ``<folder>/<stem>``) safely and atomically; returns the folder."""
    stem = archive_stem(archive)
    if stem is None:
        raise LearnError(f"{archive.name}: --extract supports {', '.join(ARCHIVE_SUFFIXES)}")
    to = to or archive.with_name(stem)
    if to.exists():
        raise LearnError(f"{to} already exists; remove it to extract {archive.name} again")
    try:
        with atomic_dir(to) as tmp:
            root = Path(os.path.realpath(tmp))  # resolved once, not per member
            if archive.name.lower().endswith(".zip"):
                with zipfile.ZipFile(archive) as zf:
                    for name in zf.namelist():
                        _check_member(archive, root, name)
                    zf.extractall(tmp)
            else:
                with tarfile.open(archive) as tf:
                    for member in tf.getmembers():
                        _check_member(archive, root, member.name, member)
                    tf.extractall(tmp, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise LearnError(f"{archive.name}: not a readable archive ({_short(e)})") from None
    return to


# --------------------------------------------------------------------------------------------------------- CLI
def download(source: str, to: str | Path, sha256: str | None = None, name: str | None = None,
             extract: bool = False, retries: int = 3, quiet: bool = False) -> Path:
    """Fetch SOURCE into folder ``to``; returns the downloaded file or folder (or the extracted folder)."""
    src = parse_source(source)
    to = Path(to)
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise LearnError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    if name is not None:
        check_file_name(name, f"--name {name!r}")
    if sha256 and src.kind in ("hf", "gdrive-folder"):
        what = "hf:// repositories" if src.kind == "hf" else "Google Drive folders"
        raise LearnError(f"--sha256 applies to single files, not {what}")
    check_output_dir(to, "--to folder")
    if src.kind == "http" and not name:
        raw = PurePosixPath(urlparse(src.ref).path).name
        if raw in ("", ".", ".."):
            raise LearnError(f"cannot derive a file name from {src.ref!r}; pass --name FILE")
        name = check_file_name(unquote(raw), f"the file name {unquote(raw)!r} decoded from {src.ref!r}",
                               "pass --name FILE")
    created = missing_parents(to)  # removed again (when empty) if the download is refused
    try:
        result = _fetch(src, to, name, sha256, retries, quiet)
    except BaseException:
        remove_empty(created)
        raise
    if not extract:
        return result
    stem = archive_stem(result) if result.is_file() else None
    if stem is None:  # a folder or a plain file: nothing to unpack (scripts may pass --extract blindly)
        print(f"note: {result} is not a {'/'.join(ARCHIVE_SUFFIXES)} archive; nothing extracted", file=sys.stderr)
        return result
    if result.with_name(stem).exists():
        if not quiet:
            print(f"{result.with_name(stem)} already extracted")
        return result.with_name(stem)
    return extract_archive(result)


def _fetch(src: Source, to: Path, name: str | None, sha256: str | None, retries: int, quiet: bool) -> Path:
    if src.kind == "http":
        dest = to / name
        if dest.exists() or dest.is_symlink():
            if not dest.is_file():
                raise LearnError(f"{dest} exists and is not a regular file; pass --name FILE or another --to")
            _check_sha(dest, sha256, delete=False)  # never delete a file that was there before
            if not quiet:
                print(f"{dest} already downloaded")
        else:
            http_download(src.ref, dest, sha256, retries=retries, quiet=quiet)
        return dest
    if src.kind == "hf":
        from huggingface_hub import snapshot_download
    else:
        import gdown

        before = {p.name for p in to.iterdir()} if to.is_dir() else set()  # files gdown "resumes" are not ours
    try:
        if src.kind == "hf":
            return Path(snapshot_download(src.ref, revision=src.revision, repo_type=src.repo_type,
                                          allow_patterns=HF_PATTERNS, local_dir=to))
        if src.kind == "gdrive-folder":
            if not gdown.download_folder(id=src.ref, output=str(to), quiet=quiet, resume=True, retries=retries):
                raise LearnError(f"download of Google Drive folder {src.ref} failed (nothing downloaded)")
            return to
        to.mkdir(parents=True, exist_ok=True)
        output = str(to / name) if name else str(to) + os.sep
        path = gdown.download(id=src.ref, output=output, quiet=quiet, resume=True, retries=retries)
    except LearnError:
        raise
    except Exception as e:  # hub and gdown errors come in many classes; all are one line for the user
        what = f"hf://{src.ref}" if src.kind == "hf" else f"Google Drive {src.ref}"
        raise LearnError(f"download of {what} failed: {type(e).__name__}: {_short(e)}") from None
    if not path:
        raise LearnError(f"download of Google Drive file {src.ref} failed (is it shared publicly?)")
    result = Path(path)
    _check_sha(result, sha256, delete=not (result.parent == to and result.name in before))
    return result


def main(argv: list[str]) -> int:
    p = ArgumentParser.from_doc("python -m learn download", __doc__)
    p.add_argument("source", metavar="SOURCE", help="http(s) URL, hf://ORG/NAME[@REV], gdrive://ID or a Drive link")
    p.add_argument("--to", required=True, metavar="DIR", help="folder to download into")
    p.add_argument("--sha256", metavar="HEX", help="expected sha256 of the file (checked before it gets its name)")
    p.add_argument("--name", metavar="FILE", help="file name to save as (default: from the URL / Drive)")
    p.add_argument("--extract", action="store_true", help="unpack a .zip/.tar[.gz|.bz2|.xz]/.tgz into DIR/<stem>/")
    p.add_argument("--retries", type=int, default=3, help="reconnects after a dropped connection (default 3)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    print(download(**vars(p.parse_args(argv))))  # every flag is an argument of download() of the same name
    return 0
