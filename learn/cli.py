"""The one way in: ``python -m learn <command> [args]``.

Each command lives in its own module and exposes ``main(argv: list[str]) -> int | None``; the table below
imports it lazily so ``--help`` stays fast. A :class:`learn.errors.LearnError` becomes one line on stderr and
exit code 2.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module:function, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("learn.data.prepare:main", "convert recformer/recbole/unisrec/lcrec/ml-100k data to LEARN format"),
    "stats": ("learn.data.stats:main", "users, items, interactions and sequence-length distribution of a dataset"),
    "embed": ("learn.cex:main", "content extraction: frozen LLM item embeddings into an LMDB item store"),
    "store": ("learn.data.store_cli:main", "inspect an item store; export/import the seed's .txt/.pkl/LMDB formats"),
    "pretrain": ("learn.train:main_pretrain", "pretrain the preference-alignment towers (torchrun for several ranks)"),
    "finetune": ("learn.train:main_finetune", "finetune on one downstream dataset with a full-catalogue softmax"),
    "eval": ("learn.evaluate:main", "full-ranking evaluation of a checkpoint (NDCG/Recall@k, MRR)"),
    "recommend": ("learn.recommend:main", "top-k items for users or a given history (--user/--history/--all)"),
    "export": ("learn.export:main", "user and item tower vectors (safetensors) + a FAISS index of the items"),
    "plot": ("learn.plot:main", "training loss and validation NDCG@10 per epoch of one or more runs (PNG)"),
    "text-baseline": ("learn.baselines:main", "no-training baseline: cosine of history item vectors vs every item"),
    "download": ("learn.hub:main", "download checkpoints/data (HTTP with resume + sha256, hf://, Google Drive)"),
    "convert-official": ("learn.convert:main", "convert the authors' epochN.pt checkpoint to a LEARN checkpoint"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m learn <command> [args]   (python -m learn <command> --help)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    return guarded(lambda args: getattr(importlib.import_module(module_name), func_name)(args), rest)


def guarded(func, argv: list[str] | None = None) -> int:
    """Run ``func(argv)``: a LearnError becomes one ``error:`` line on stderr and its exit code (2)."""
    from learn.errors import LearnError

    try:
        rc = func(argv)
    except LearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)
