"""Published numbers to print beside ours, and the markdown results table (``Dataset | Metric | models``).

Only the datasets and splits named in the sources; an entry matches a dataset by name and by the format it was
prepared from (``source.json``), so Amazon 2014 "Office" never shows RecFormer's 2018 Office numbers.
"""

from __future__ import annotations

import math
import re

# Published numbers (NDCG@10 / Recall@10) to print beside ours. Only the datasets and splits named in the sources.
PUBLISHED: dict[str, dict] = {
    **{
        name: {
            "split": "RecFormer finetune data (Amazon 2018), leave-one-out, full ranking",
            "formats": ("recformer",),  # a dataset prepared from another source (e.g. Amazon 2014) is not this one
            "source": "LEARN README results table, github.com/adxcreative/LEARN @ 2fc1404",
            "models": {
                "LEARN": {"ndcg@10": learn[0], "recall@10": learn[1]},
                "RecFormer": {"ndcg@10": recformer[0], "recall@10": recformer[1]},
            },
        }
        for name, learn, recformer in [
            ("Scientific", (0.1060, 0.1594), (0.1027, 0.1448)),
            ("Instruments", (0.0878, 0.1240), (0.0830, 0.1052)),
            ("Arts", (0.1225, 0.1701), (0.1252, 0.1614)),
            ("Office", (0.1167, 0.1549), (0.1141, 0.1403)),
            ("Games", (0.0798, 0.1345), (0.0684, 0.1039)),
            ("Pet", (0.0990, 0.1284), (0.0972, 0.1162)),
        ]
    },
    "Scientific/UniSRec": {
        "split": "UniSRec downstream Scientific (Amazon 2018), leave-one-out, full ranking",
        "formats": ("unisrec",),
        "source": "the results tables of UniSRec (KDD'22), VQ-Rec (WWW'23) and MISSRec (MM'23)",
        "models": {
            "SASRec": {"ndcg@10": 0.0553, "recall@10": 0.1080},
            "UniSRec": {"ndcg@10": 0.0641, "recall@10": 0.1188},
            "VQ-Rec": {"ndcg@10": 0.0643, "recall@10": 0.1211},
            "MISSRec": {"ndcg@10": 0.0753, "recall@10": 0.1360},
        },
    },
}


def _norm_name(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _find_published(dataset: str, published: dict, source_format: str | None = None) -> str | None:
    """The published entry for ``dataset``: same name ignoring case and punctuation ("scientific_unisrec").

    With ``source_format`` (the ``prepare --from`` format recorded in the dataset's ``source.json``) an entry whose
    ``formats`` do not include it is not this dataset (Amazon 2014 "Office" is not RecFormer's 2018 Office).
    """
    key = dataset if dataset in published else {_norm_name(k): k for k in published}.get(_norm_name(dataset))
    if key and source_format and source_format not in published[key].get("formats", (source_format,)):
        return None
    return key


_METRIC_ORDER = ["ndcg@10", "recall@10", "ndcg@20", "recall@20", "ndcg@50", "recall@50", "ndcg@200", "recall@200",
                 "mrr"]
_METRIC_RE = re.compile(r"(ndcg|recall)@\d+")


def _metric_label(name: str) -> str:
    if name == "mrr":
        return "MRR"
    head, _, k = name.partition("@")
    return f"{ {'ndcg': 'NDCG', 'recall': 'Recall'}.get(head, head)}@{k}" if k else name


def results_table(rows: list[dict], published: dict | None = None, digits: int = 4) -> str:
    """Markdown table ``Dataset | Metric | <published models> | <our models>`` like the seed README's results table.

    Each row is ``{"dataset": str, "model": str, "ndcg@10": float, ...}`` (metric keys as returned by
    :func:`metrics_from_ranks`; other keys are ignored). ``published`` defaults to :data:`PUBLISHED` (``{}`` for none);
    a dataset matches a published entry by name, ignoring case and punctuation (``scientific_unisrec`` ->
    ``Scientific/UniSRec``). Metrics shown are those that any of our rows or
    the published entry for that dataset has; missing cells are ``-``.
    """
    published = PUBLISHED if published is None else published
    ours: dict[str, dict[str, dict]] = {}  # dataset -> model -> row, in the order of first appearance
    for row in rows:
        ours.setdefault(str(row["dataset"]), {})[str(row.get("model", "ours"))] = row
    our_models = list(dict.fromkeys(str(row.get("model", "ours")) for row in rows))
    pub = {}  # dataset -> its published models' metrics
    for ds, models in ours.items():
        key = _find_published(ds, published, next(iter(models.values())).get("source_format"))
        pub[ds] = published[key]["models"] if key else {}
    pub_models = list(dict.fromkeys(m for models in pub.values() for m in models))

    def fmt(v) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.{digits}f}"

    header = ["Dataset", "Metric", *(f"{m} (published)" for m in pub_models), *our_models]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for ds in ours:
        present = {k for r in ours[ds].values() for k in r} | {k for m in pub[ds].values() for k in m}
        metrics = [m for m in _METRIC_ORDER if m in present]
        metrics += sorted(k for k in present if _METRIC_RE.fullmatch(str(k)) and k not in metrics)
        for j, metric in enumerate(metrics):
            cells = [ds if j == 0 else "", _metric_label(metric)]
            cells += [fmt(pub[ds].get(m, {}).get(metric)) for m in pub_models]
            cells += [fmt(ours[ds].get(m, {}).get(metric)) for m in our_models]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
