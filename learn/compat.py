"""Compatibility with the authors' scripts: the bodies of ``preprocess/amazon_2018/*.py`` (the seed's steps 2-4).

Each script is a few lines that call one ``seed_*_main`` here, on the seed layout ``DATA_ROOT/{pretrain_data,
finetune_data/<D>,item_embeddings}``. The core modules (:mod:`learn.cex`, :mod:`learn.data.store_cli`,
:mod:`learn.data.prepare`) know nothing of that layout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from learn.cex import add_encoder_flags, embed_dataset
from learn.data.formats import load_dataset, load_pretrain_corpus, write_item_texts, write_product_splits
from learn.data.store import DTYPES
from learn.data.store_cli import export_pkl, export_txt, import_txt
from learn.encoder import DEFAULT_MODEL_NAME, PAPER_MODEL
from learn.errors import ArgumentParser, DataError, LearnError
from learn.io import atomic_write_json

SHOW_MISSING = 10  # step 3: items without meta named one by one, the rest counted


# ----------------------------------------------------------------------------------------------- seed layout
def seed_finetune_folders(data_root: Path, names: list[str] | None = None, required: bool = False) -> list[Path]:
    """``DATA_ROOT/finetune_data/<D>`` for the named datasets, or for every subfolder holding a ``smap.json``.

    ``required``: refuse an empty selection."""
    base = Path(data_root) / "finetune_data"
    if names:
        for folder in (folders := [base / n for n in names]):
            if not folder.is_dir():
                raise DataError(folder, "folder not found" if not folder.exists() else "not a folder")
        return folders
    if not base.is_dir():
        raise DataError(base, "folder not found (expected the seed layout DATA_ROOT/finetune_data/<Dataset>/)")
    folders = sorted(p for p in base.iterdir() if p.is_dir() and (p / "smap.json").exists())
    if required and not folders:
        raise DataError(base, "no dataset folder with a smap.json")
    return folders


def _seed_parser(description: str | None, datasets: bool = True) -> ArgumentParser:
    """The seed scripts' shared flags: --data-root, and --datasets for those that read finetune_data/."""
    p = ArgumentParser(description=(description or "").split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=Path("./amazon_2018"),
                   help="the seed tree: holds pretrain_data/, finetune_data/, item_embeddings/")
    if datasets:
        p.add_argument("--datasets", nargs="+", help="default: every finetune_data/<D>/ with a smap.json")
    return p


# ------------------------------------------------------------------------------- step 2: motify_json.py
def seed_splits_main(argv: list[str] | None = None, *, description: str | None = None) -> int:
    """``preprocess/amazon_2018/motify_json.py`` (seed step 2): ``{train,val,test}_product.json``."""
    args = _seed_parser(description).parse_args(argv)
    for folder in seed_finetune_folders(args.data_root, args.datasets, required=True):
        ds = load_dataset(folder)
        write_product_splits(ds)
        print(f"{folder}: wrote train/val/test_product.json ({ds.num_users:,} users, {ds.num_items:,} items)")
    return 0


# ------------------------------------------------------------------------- step 3: build_product2text.py
def texts_from_meta(name: str, data) -> dict[str, str]:
    """{item key: template text} for smap items, printing the seed's messages about items without meta."""
    data.item_texts = None  # always rebuild from meta_data.json, never from a previous run's output
    texts = data.text_map()
    missing = [k for k in data.smap if k not in texts]
    for key in missing[:SHOW_MISSING]:
        print(f"missing {key} in {name}")
    if len(missing) > SHOW_MISSING:
        print(f"... and {len(missing) - SHOW_MISSING:,} more items without meta in {name}")
    print(f" total {len(texts)} items in {name}")
    print(f" total {len(data.smap)} items needs in {name}")
    return texts


def seed_texts_main(argv: list[str] | None = None, *, description: str | None = None) -> int:
    """``preprocess/amazon_2018/build_product2text.py`` (seed step 3): ``product2text.dict`` + ``item_text.json``."""
    p = _seed_parser(description)
    p.add_argument("--skip-pretrain", action="store_true", help="only the finetune datasets")
    args = p.parse_args(argv)
    for folder in seed_finetune_folders(args.data_root, args.datasets):
        write_item_texts(folder, texts_from_meta(folder.name, load_dataset(folder)))
    pretrain = args.data_root / "pretrain_data"
    if args.skip_pretrain:
        return 0
    if not pretrain.is_dir():
        print(f"{pretrain} not found: pretrain texts skipped")
        return 0
    corpus = load_pretrain_corpus(pretrain)
    if corpus.smap_generated:
        atomic_write_json(pretrain / "smap.json", corpus.smap)
        print(f"wrote {pretrain / 'smap.json'} ({corpus.num_items:,} items, first seen over train then dev)")
    write_item_texts(pretrain, texts_from_meta("pretrain_data", corpus))
    return 0


# --------------------------------------------------------------- step 4: extract_baichuan_emb_{pretrain,ft}.py
# The step-4 scripts call their main without learn.cli.guarded: a LearnError becomes one ``error:`` line here.
def seed_embed_main(argv: list[str] | None, *, pretrain: bool, description: str | None = None) -> int:
    """``preprocess/amazon_2018/extract_baichuan_emb_{pretrain,ft}.py``: embed, then export the seed's ``.txt``."""
    p = _seed_parser(description, datasets=not pretrain)
    p.add_argument("--llm", default=None, help=f"model folder or hub name (default: offline {DEFAULT_MODEL_NAME}; "
                   f"the paper: --llm {PAPER_MODEL} --trust-remote-code)")
    add_encoder_flags(p)
    try:
        a = p.parse_args(argv)
        rank0 = int(os.environ.get("RANK", 0)) == 0
        if a.llm is None and rank0:
            print(f"note: using the offline default model {DEFAULT_MODEL_NAME}; the paper used {PAPER_MODEL} "
                  f"(--llm {PAPER_MODEL} --trust-remote-code)")
        root = a.data_root
        if pretrain:
            jobs = [("pretrain", root / "pretrain_data")]
            if not jobs[0][1].is_dir():
                raise DataError(jobs[0][1], "folder not found (expected the seed layout DATA_ROOT/pretrain_data/)")
        else:
            jobs = [(f.name, f) for f in seed_finetune_folders(root, a.datasets, required=True)]
        for name, folder in jobs:
            store = root / "item_embeddings" / "cex_stores" / name
            embed_dataset(folder, store, llm=a.llm, layer=a.layer, max_length=a.max_length, batch_size=a.batch_size,
                          dtype=a.dtype, device=a.device, trust_remote_code=a.trust_remote_code,
                          store_dtype=a.store_dtype, overwrite=True)
            if rank0:
                txt = root / "item_embeddings" / f"{name}.txt"
                print(f"wrote {export_txt(store, txt)} items to {txt}")
    except LearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


# ------------------------------------------------------------- step 4: build_item_baichuan_lmdb_{pretrain,ft}.py
def seed_build_main(argv: list[str] | None, *, pretrain: bool, description: str | None = None) -> int:
    """``preprocess/amazon_2018/build_item_baichuan_lmdb_{pretrain,ft}.py``: the seed's ``.txt`` -> item stores."""
    p = _seed_parser(description, datasets=not pretrain)
    p.add_argument("--store-dtype", default="float32", choices=sorted(DTYPES))
    try:
        a = p.parse_args(argv)
        root, emb = a.data_root, a.data_root / "item_embeddings"
        if pretrain:
            out = emb / "item_baichuan_lmdb"
            n = import_txt([emb / "pretrain.txt"], out, a.store_dtype, overwrite=True,
                           meta_from=emb / "cex_stores" / "pretrain")
            print(f"wrote {n} items to {out}")
            return 0
        for folder in seed_finetune_folders(root, a.datasets, required=True):
            name = folder.name
            out = root / "finetune_data" / f"{name}_baichuan_lmdb"
            n = import_txt([emb / f"{name}.txt"], out, a.store_dtype, overwrite=True,
                           meta_from=emb / "cex_stores" / name)
            pkl = root / "finetune_data" / f"product2emb_{name}.pkl"
            export_pkl(out, pkl)
            print(f"wrote {n} items to {out} and {pkl}")
    except LearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0
