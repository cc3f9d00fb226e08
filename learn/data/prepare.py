"""``python -m learn prepare --from FORMAT SRC OUT``: convert a dataset into the canonical format.

Sources: a RecFormer finetune folder, RecBole atomic files, the ML-100K example inside the installed recbole
package, UniSRec downstream files, LC-Rec JSON, a RecFormer pretrain folder, or a mix of canonical datasets
(-> pretraining corpus). Everything is read and validated in memory first; OUT is then written through
:func:`learn.io.atomic_dir`, so bad input leaves nothing behind.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import re
import sys
from pathlib import Path

from learn.data.formats import (
    SOURCE_NAME,
    PretrainCorpus,
    SeqDataset,
    check_folder,
    first_seen_smap,
    leave_one_out,
    load_dataset,
    progress,
    read_item_texts,
    read_meta,
    read_sequences,
    validate_corpus,
    validate_dataset,
    write_dataset,
    write_pretrain_corpus,
)
from learn.data.text import normalise
from learn.errors import ArgumentParser, DataError, LearnError
from learn.io import atomic_write_json, check_output_dir, read_json

FORMATS = ("recformer", "recbole", "unisrec", "lcrec", "ml-100k", "recformer-pretrain", "mix")
ASIN = re.compile(r"[0-9A-Z]{10}")
TITLE_FIELDS = ("movie_title", "title")
CATEGORY_FIELDS = ("class", "genre", "genres", "categories", "category")


def _one(folder: Path, pattern: str, name: str | None) -> str:
    """The dataset name NAME of the single ``folder/NAME<pattern>`` file (or the given ``name``)."""
    if name:
        return name
    hits = sorted(folder.glob(f"*{pattern}"))
    if not hits:
        raise DataError(folder, f"no *{pattern} file found")
    if len(hits) > 1:
        raise DataError(folder, f"several *{pattern} files ({', '.join(h.name for h in hits)}): pass --name")
    return hits[0].name[: -len(pattern)]


# ----------------------------------------------------------------------------------------------- RecFormer
def _normalise_meta(meta: dict[str, dict]) -> dict[str, dict]:
    """Rename "genres"/"categories" to "category" (RecFormer's field) where "category" is absent."""
    out = {}
    for key, entry in meta.items():
        alias = None if "category" in entry else next((a for a in ("categories", "genres") if a in entry), None)
        out[key] = {("category" if k == alias else k): v for k, v in entry.items()} if alias else entry
    return out


def from_recformer(src: Path) -> tuple[SeqDataset, list[str]]:
    ds = load_dataset(src, validate=False)
    ds.meta = _normalise_meta(ds.meta)
    return ds, []


# ----------------------------------------------------------------------------------------------- RecBole
def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; a missing, unreadable or non-UTF-8 file is a one-line DataError."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror or e}") from None


def _tab_rows(path: Path, lines: list[str], ncols: int, first: int) -> list[tuple[int, list[str]]]:
    """[(line number, fields), ...] of the non-blank ``lines`` (numbered from ``first``), each of ``ncols`` fields."""
    rows = []
    for n, line in enumerate(lines, start=first):
        if line.strip():
            fields = line.split("\t")
            if len(fields) != ncols:
                raise DataError(path, f"line {n}: expected {ncols} tab-separated fields, got {len(fields)}")
            rows.append((n, fields))
    return rows


def read_atomic(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A RecBole atomic file: (column names without ``:type``, [(line number, fields), ...])."""
    lines = _read_lines(path)
    if not lines:
        raise DataError(path, "empty file (expected a typed header such as user_id:token)")
    columns = [c.split(":", 1)[0] for c in lines[0].split("\t")]
    return columns, _tab_rows(path, lines[1:], len(columns), 2)


def _col(path: Path, columns: list[str], names: tuple[str, ...], required: bool = True) -> int | None:
    idx = next((columns.index(c) for c in names if c in columns), None)
    if idx is None and required:
        raise DataError(path, f"no {names[0]} column in header ({', '.join(columns)})")
    return idx


def recbole_meta(path: Path) -> dict[str, dict]:
    """Item text fields of a RecBole ``.item`` file -> {item id: {title, brand, category}}."""
    columns, rows = read_atomic(path)
    i_item = _col(path, columns, ("item_id",))
    i_year = _col(path, columns, ("release_year",), required=False)
    cols = {"title": TITLE_FIELDS, "brand": ("brand",), "category": CATEGORY_FIELDS}
    cols = {k: i for k, names in cols.items() if (i := _col(path, columns, names, required=False)) is not None}
    meta: dict[str, dict] = {}
    for _, f in rows:
        entry = {k: f[i].strip() for k, i in cols.items() if f[i].strip()}
        year = f[i_year].strip() if i_year is not None else ""
        if "title" in entry and year:
            entry["title"] += f" ({year})"
        meta[f[i_item]] = entry
    return meta


def from_recbole(src: Path, name: str | None) -> tuple[SeqDataset, list[str]]:
    if src.is_file() and src.suffix == ".inter":
        src, name = src.parent, src.stem
    folder = check_folder(src)
    name = _one(folder, ".inter", name)
    inter = folder / f"{name}.inter"
    columns, rows = read_atomic(inter)
    i_user, i_item = _col(inter, columns, ("user_id",)), _col(inter, columns, ("item_id",))
    i_time = _col(inter, columns, ("timestamp",), required=False)
    events: dict[str, list[tuple[float, str]]] = {}
    for n, f in progress(rows, f"reading {inter.name}"):
        try:
            t = float(f[i_time]) if i_time is not None else 0.0
        except ValueError:
            raise DataError(inter, f"line {n}: timestamp {f[i_time]!r} is not a number") from None
        events.setdefault(f[i_user], []).append((t, f[i_item]))
    # sorted() is stable: equal timestamps keep their file order
    sequences = {u: [item for _, item in sorted(ev, key=lambda e: e[0])] for u, ev in events.items()}
    item_file = folder / f"{name}.item"
    meta = recbole_meta(item_file) if item_file.exists() else {}
    ds, dropped = leave_one_out(folder, name, sequences, meta)
    notes = [f"dropped {dropped:,} users with fewer than 3 interactions"] if dropped else []
    if not item_file.exists():
        notes.append(f"{item_file} not found: items have no text")
    return ds, notes


def ml100k_folder() -> Path:
    """``recbole/dataset_example/ml-100k`` of the installed recbole wheel, found without importing recbole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise LearnError("recbole is not installed, so its ml-100k example cannot be found (pip install recbole)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.inter").exists():
        raise DataError(folder / "ml-100k.inter", "file not found in the installed recbole package")
    return folder


# ----------------------------------------------------------------------------------------------- UniSRec
def _tsv(path: Path, ncols: int) -> list[tuple[int, list[str]]]:
    """Rows of a UniSRec tab-separated file, skipping a typed header line (``item_id:token ...``) if present."""
    lines = _read_lines(path)
    skip = 1 if lines and all(re.fullmatch(r"\w+:\w+", x) for x in lines[0].split("\t")) else 0
    return _tab_rows(path, lines[skip:], ncols, 1 + skip)


def _index_file(path: Path, what: str) -> dict[str, int]:
    out: dict[str, int] = {}
    owner: dict[int, str] = {}
    for n, (key, idx) in _tsv(path, 2):
        if not idx.isdigit():
            raise DataError(path, f"line {n}: index {idx!r} is not a non-negative integer")
        if key in out:
            raise DataError(path, f"line {n}: duplicate {what} {key!r}")
        if int(idx) in owner:
            raise DataError(path, f"line {n}: duplicate {what}: index {idx} also used by {owner[int(idx)]!r}")
        owner[int(idx)] = key
        out[key] = int(idx)
    return out


def _inter_rows(path: Path, num_items: int) -> dict[str, tuple[list[int], int]]:
    """{user idx: (history, target)} of a UniSRec ``.valid.inter``/``.test.inter`` file (one row per user)."""
    out: dict[str, tuple[list[int], int]] = {}
    for n, (user, hist, target) in _tsv(path, 3):
        try:
            ids = [int(x) for x in hist.split()] + [int(target)]
        except ValueError:
            raise DataError(path, f"line {n}: item ids must be integers") from None
        bad = next((i for i in ids if not 0 <= i < num_items), None)
        if bad is not None:
            raise DataError(path, f"line {n}: unknown item id {bad} (item2index has 0..{num_items - 1})")
        if user in out:
            raise DataError(path, f"line {n}: duplicate user {user!r}")
        out[user] = (ids[:-1], ids[-1])
    return out


def from_unisrec(src: Path, name: str | None) -> tuple[SeqDataset, list[str]]:
    folder = check_folder(src)
    name = _one(folder, ".valid.inter", name)
    stem = folder / name
    smap = _index_file(Path(f"{stem}.item2index"), "item")
    umap = _index_file(Path(f"{stem}.user2index"), "user")
    texts = {asin: text for _, (asin, text) in _tsv(Path(f"{stem}.text"), 2)}
    valid = _inter_rows(Path(f"{stem}.valid.inter"), len(smap))
    test = _inter_rows(Path(f"{stem}.test.inter"), len(smap))
    known_users = {str(i) for i in umap.values()}
    train_d, val_d, test_d = {}, {}, {}
    mismatched = 0
    for user in sorted(valid, key=int):
        if user not in known_users:
            raise DataError(Path(f"{stem}.valid.inter"), f"user {user!r} is not an index in {name}.user2index")
        hist, target = valid[user]
        train_d[user], val_d[user] = hist, [target]
        if user in test:
            t_hist, t_target = test[user]
            test_d[user] = [t_target]
            # the test history must be the tail of valid history + target (an empty one never is)
            if t_hist != [*hist, target][-len(t_hist) :]:
                mismatched += 1
    only_test = sorted(set(test) - set(valid), key=int)
    if only_test:
        raise DataError(Path(f"{stem}.test.inter"), f"user {only_test[0]!r} has a test row but no valid row")
    meta = {asin: {"title": text} for asin, text in texts.items()}
    ds = SeqDataset(folder, name, train_d, val_d, test_d, smap, umap, meta, item_texts=texts)
    note = f"{mismatched:,} users' test history != valid history + valid target (after the 50-item cut)"
    return ds, [note] if mismatched else []


# ----------------------------------------------------------------------------------------------- LC-Rec
def from_lcrec(src: Path, name: str | None) -> tuple[SeqDataset, list[str]]:
    folder = check_folder(src)
    name = _one(folder, ".inter.json", name)
    inter_path, item_path = folder / f"{name}.inter.json", folder / f"{name}.item.json"
    inter = read_json(inter_path, unique_keys=True)
    if not isinstance(inter, dict):
        raise DataError(inter_path, "expected a JSON object {user: [item index, ...]}")
    for user, seq in inter.items():
        if not isinstance(seq, list) or not all(type(i) is int and i >= 0 for i in seq):
            raise DataError(inter_path, f"user {user!r}: expected a list of non-negative item indices")
    items = read_json(item_path, unique_keys=True)
    if not isinstance(items, dict) or not all(isinstance(v, dict) for v in items.values()):
        raise DataError(item_path, "expected a JSON object {item index: {title, description, brand, categories}}")
    sequences = {u: [str(i) for i in seq] for u, seq in inter.items()}
    kept_ids = sorted({i for seq in inter.values() if len(seq) >= 3 for i in seq})
    smap = {str(i): j for j, i in enumerate(kept_ids)}  # their indices when contiguous, else sorted order
    meta = _normalise_meta(items)
    ds, dropped = leave_one_out(folder, name, sequences, meta, smap=smap)
    return ds, [f"dropped {dropped:,} users with fewer than 3 interactions"] if dropped else []


# ----------------------------------------------------------------------------------------------- pretraining corpora
def from_recformer_pretrain(src: Path, min_len: int, max_len: int | None) -> tuple[PretrainCorpus, list[str]]:
    """Keep sequences with ``min_len <= len <= max_len`` and index items in first-seen order over train then dev."""
    folder = check_folder(src)
    train, dev = read_sequences(folder / "train.json"), read_sequences(folder / "dev.json")
    kept = [[q for q in seqs if min_len <= len(q) and (max_len is None or len(q) <= max_len)] for seqs in (train, dev)]
    meta, texts = read_meta(folder / "meta_data.json"), read_item_texts(folder)
    corpus = PretrainCorpus(folder, *kept, first_seen_smap(*kept), meta, texts, smap_generated=True)
    dropped = len(train) + len(dev) - corpus.num_sequences
    return corpus, [f"dropped {dropped:,} sequences outside {min_len} <= length <= {max_len}"] if dropped else []


def from_mix(
    sources: list[Path], out: Path, min_len: int, max_len: int | None, dev_mode: str, dev_fraction: float, seed: int,
    keys: str = "auto", target: Path | None = None,
) -> tuple[PretrainCorpus, list[str]]:
    """Pretraining corpus from the train parts of canonical datasets (test items never enter it).

    Item keys stay as they are for a single source, and for a dataset whose keys all look like Amazon ASINs (10
    upper-case letters or digits; the same ASIN in two Amazon datasets is the same product); with several sources,
    every key of any other dataset becomes ``"<dataset name>:<key>"``. (A single source keeps its keys so its item
    store serves the corpus too.) dev = each user's train + val sequence (``--dev val``) or, with
    ``--dev holdout``, the train sequences of a seeded random ``--dev-fraction`` of users, removed from train.
    ``keys="prefix"`` prefixes every dataset's keys (categories never share an item key). With ``target``, the corpus
    is refused when a source is the target's dataset (same folder or dataset name) or when any corpus sequence holds
    one of the target's validation or test interactions (:func:`check_no_target_leak`).
    """
    datasets = [load_dataset(s) for s in sources]
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise LearnError(f"mix: two source folders share a name ({', '.join(names)}); names prefix item keys")
    target_windows = None
    if target is not None:
        goal = load_dataset(target)
        for src, ds in zip(sources, datasets):
            if src.resolve() == target.resolve() or ds.name == goal.name:
                raise LearnError(f"mix: source {src} is the target's dataset ({goal.name}); leave it out of the corpus")
        target_windows = held_out_windows(goal)
    rng = random.Random(seed)
    train, dev, meta, texts = [], [], {}, {}
    notes, clashes = [], 0

    def fits(seq: list[str]) -> bool:
        return len(seq) >= min_len and (max_len is None or len(seq) <= max_len)

    for ds in datasets:
        keep = keys == "auto" and (len(datasets) == 1 or all(ASIN.fullmatch(k) for k in ds.item_keys))
        prefix = "" if keep else f"{ds.name}:"
        keys = [prefix + k for k in ds.item_keys]
        for key, orig, text in zip(keys, ds.item_keys, ds.texts()):
            if key in texts and texts[key] != text:
                clashes += 1
            texts.setdefault(key, text)
            if orig in ds.meta:
                meta.setdefault(key, ds.meta[orig])
        for user in progress(ds.users, f"mixing {ds.name}"):
            seq = [keys[i] for i in ds.train.get(user, [])]
            held_out = dev_mode == "holdout" and rng.random() < dev_fraction
            if fits(seq):
                (dev if held_out else train).append(seq)
            if dev_mode == "val":
                ext = seq + [keys[i] for i in ds.val.get(user, [])]
                if fits(ext):
                    dev.append(ext)
        notes.append(f"{ds.name}: item keys {'kept' if not prefix else f'prefixed {prefix!r}'}")
    if clashes:
        notes.append(f"{clashes:,} shared item keys have different texts across datasets; the first one is kept")
    if target_windows is not None:
        signatures = {k: item_signature(meta.get(k), t) for k, t in texts.items()}
        check_no_target_leak(train + dev, signatures, target_windows, target)
        notes.append(f"no sequence holds any of the {len(target_windows):,} held-out interactions of {target}")
    texts = {k: t for k, t in texts.items() if t}
    return PretrainCorpus(out, train, dev, first_seen_smap(train, dev), meta, texts, smap_generated=True), notes


LEAK_WINDOW = 3  # a held-out interaction is matched with the (up to) two items before it
SIGNATURE_WORDS = 6  # an item is known by the first words of its title: the same product under another text template


def item_signature(meta: dict | None, text: str) -> str:
    """The first ``SIGNATURE_WORDS`` case-folded word tokens of the item's title (else of its text); "" when none.

    Two exports of one category write different texts for the same product (UniSRec: title + categories + brand in
    one field; LC-Rec: ``Title: … Brand: …``), but both start the title with the same words.
    """
    title = meta.get("title") if isinstance(meta, dict) else None
    words = normalise(title if isinstance(title, str) and title.strip() else text).split()
    return " ".join(words[:SIGNATURE_WORDS])


def held_out_windows(target: SeqDataset) -> set[tuple[str, ...]]:
    """Item signatures of each validation and test interaction of ``target`` with the items just before it.

    A window is the held-out item preceded by up to ``LEAK_WINDOW - 1`` items of the user's history (train for the
    validation item, train + validation for the test item); windows with an item of no title or text are skipped.
    """
    sig = [item_signature(target.meta.get(k), t) for k, t in zip(target.item_keys, target.texts())]
    windows = set()
    for split, before in ((target.val, (target.train,)), (target.test, (target.train, target.val))):
        for user, held in split.items():
            history = [i for part in before for i in part.get(user, [])]
            for item in held:
                window = tuple(sig[i] for i in [*history[-(LEAK_WINDOW - 1):], item])
                if all(window):
                    windows.add(window)
    return windows


def check_no_target_leak(
    seqs: list[list[str]], signatures: dict[str, str], held_out: set[tuple[str, ...]], target: Path
) -> None:
    """Refuse when a corpus sequence holds a held-out window of the target (the same items in the same order)."""
    sizes = sorted({len(w) for w in held_out})
    hits, first = 0, None
    for seq in seqs:
        words = [signatures.get(k, "") for k in seq]
        for n in sizes:
            for j in range(len(words) - n + 1):
                if tuple(words[j:j + n]) in held_out:
                    hits += 1
                    first = first or seq[j + n - 1]
    if hits:
        raise LearnError(f"mix: {hits:,} corpus windows repeat validation/test interactions of the target {target} "
                         f"(first: item {first}); a source holds the target's own users: leave it out")


# ----------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m learn prepare",
        description="Convert a dataset to the canonical RecFormer/LEARN layout (see docs/data.md).",
        epilog="examples:\n  python -m learn prepare --from ml-100k data/ml-100k\n"
        "  python -m learn prepare --from unisrec ../shared/data/amazon2018_scientific_unisrec data/scientific\n"
        "  python -m learn prepare --from mix data/scientific data/office data/mix_pretrain",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--from", dest="fmt", required=True, choices=FORMATS, help="source format")
    p.add_argument("paths", nargs="+", metavar="PATH", help="SRC OUT  (ml-100k: [-] OUT;  mix: DIR1 DIR2 ... OUT)")
    p.add_argument("--name", help="file stem NAME of NAME.inter / NAME.text / NAME.inter.json (default: the only one)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--min-len", type=int, help="pretraining corpora: shortest kept sequence (pretrain 5, mix 2)")
    p.add_argument("--max-len", type=int, help="pretraining corpora: longest kept sequence (pretrain 40, mix none)")
    p.add_argument("--dev", choices=("val", "holdout"), default="val", help="mix: how the dev sequences are made")
    p.add_argument("--dev-fraction", type=float, default=0.05, help="mix --dev holdout: share of users held out")
    p.add_argument("--seed", type=int, default=0, help="mix --dev holdout: random seed")
    p.add_argument("--keys", choices=("auto", "prefix"), default="auto",
                   help="mix: 'prefix' puts every item key behind its dataset name (auto: ASIN keys kept)")
    p.add_argument("--target", metavar="DIR", help="mix: the dataset the corpus is built for; refuses its own data "
                   "and any sequence that holds one of its validation/test interactions")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_intermixed_args(argv)  # options may follow the folders
    *srcs, out_arg = args.paths
    out = Path(out_arg)
    if args.fmt == "ml-100k":
        if len(srcs) > 1:
            raise LearnError("prepare --from ml-100k takes [SRC|-] OUT")
        srcs = [str(ml100k_folder())] if not srcs or srcs[0] == "-" else srcs
    elif args.fmt == "mix":
        if not srcs:
            raise LearnError("prepare --from mix takes DIR1 [DIR2 ...] OUT")
    elif len(srcs) != 1:
        raise LearnError(f"prepare --from {args.fmt} takes exactly SRC OUT ({len(args.paths)} paths given)")
    sources = [Path(s) for s in srcs]
    check_output_dir(out, "OUT")
    if out.exists() and not args.force:
        raise LearnError(f"{out} already exists (pass --force to replace it)")
    if any(s.resolve() == out.resolve() for s in sources):
        raise LearnError(f"{out} is also a source; write to another folder")

    src = sources[0]
    result: SeqDataset | PretrainCorpus
    if args.fmt == "recformer-pretrain":
        min_len = 5 if args.min_len is None else args.min_len
        max_len = 40 if args.max_len is None else args.max_len
        result, notes = from_recformer_pretrain(src, min_len, max_len)
    elif args.fmt == "mix":
        min_len = 2 if args.min_len is None else args.min_len
        target = Path(args.target) if args.target else None
        result, notes = from_mix(sources, out, min_len, args.max_len, args.dev, args.dev_fraction, args.seed,
                                 args.keys, target)
    elif args.fmt == "recformer":
        result, notes = from_recformer(src)
    elif args.fmt == "lcrec":
        result, notes = from_lcrec(src, args.name)
    elif args.fmt == "unisrec":
        result, notes = from_unisrec(src, args.name)
    else:  # recbole, ml-100k
        result, notes = from_recbole(src, args.name if args.fmt == "recbole" else "ml-100k")

    if (args.keys != "auto" or args.target) and args.fmt != "mix":
        raise LearnError("--keys and --target apply to prepare --from mix only")
    if isinstance(result, PretrainCorpus):
        warnings = validate_corpus(result)
        write_pretrain_corpus(result, out, overwrite=args.force)
        if args.fmt == "mix":  # the lineage: which datasets, and which target it was checked against
            lineage = {"format": "mix", "sources": [str(s) for s in sources], "keys": args.keys, "target": args.target}
            atomic_write_json(out / SOURCE_NAME, lineage, indent=1)
        summary = (
            f"{len(result.train):,} train + {len(result.dev):,} dev sequences, {result.num_items:,} items, "
            f"{result.num_interactions:,} interactions"
        )
    else:
        warnings = validate_dataset(result)
        write_dataset(result, out, overwrite=args.force)
        # the lineage, so published numbers are matched to the right data (not by folder name alone)
        atomic_write_json(out / SOURCE_NAME, {"format": args.fmt, "sources": [str(s) for s in sources]}, indent=1)
        summary = f"{result.num_users:,} users, {result.num_items:,} items, {result.num_interactions:,} interactions"
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(f"wrote {out}: {summary}")
    return 0
