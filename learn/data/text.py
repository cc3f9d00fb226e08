"""Item text: the seed's HTML clean-up and the ``Title: … Brand: … Category: …`` template.

Rules (version ``TEXT_RULES_VERSION``, hashed into the item store meta by :func:`template_hash`):

* every field is cleaned with :func:`clean_html` (the seed's replacements, in the seed's order) and stripped;
* ``category`` falls back to ``categories`` then ``genres`` (RecFormer / LC-Rec / MovieLens spellings);
* a list value is flattened and joined with spaces (as RecFormer joins the Amazon category path); numbers become
  strings; ``None``, missing keys and values that are empty after cleaning count as absent;
* an absent field drops its whole ``"<Name>: <value>"`` segment together with its ``". "`` separator, so
  ``{"title": "Pen", "brand": ""}`` gives ``"Title: Pen"`` rather than the seed's ``"Title: Pen. Brand: . Category: "``
  (the seed crashes on missing keys and keeps empty segments; when all three fields are present and carry no
  surrounding whitespace the output is byte-identical to the seed's);
* an item with no field at all gives ``""``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

TEMPLATE = "Title: {title}. Brand: {brand}. Category: {category}"
TEXT_RULES_VERSION = "1"

# The seed's replacements in the seed's order (order matters: "&amp;lt;" -> " and lt;").
# "&ndash" really has no semicolon in the seed.
HTML_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    ("&amp;", " and "),
    ("&lt;", ""),
    ("&gt;", ""),
    ("&ndash", ""),
    ("&mdash;", ""),
    ("&ensp;", ""),
    ("&nbsp;", " "),
    ("&shy;", ""),
    ("&copy;", ""),
    ("&trade;", ""),
    ("&reg;", ""),
    ("&quot;", ""),
)

_FIELDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("title", "Title", ("title",)),
    ("brand", "Brand", ("brand",)),
    ("category", "Category", ("category", "categories", "genres")),
)


def clean_html(s: str) -> str:
    """Apply the seed's HTML-entity replacements (spec 1.1) to ``s``."""
    for entity, replacement in HTML_REPLACEMENTS:
        s = s.replace(entity, replacement)
    return s


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(t for t in (_as_text(v) for v in value) if t)
    return clean_html(str(value)).strip()


def field_value(meta: dict, field: str) -> str:
    """The cleaned value of ``field`` ("title", "brand" or "category") in ``meta``; "" when absent."""
    keys = next((keys for name, _, keys in _FIELDS if name == field), ())
    return next((text for key in keys if (text := _as_text(meta.get(key)))), "")


def item_text(meta: dict | None) -> str:
    """The template text of one item's meta entry; absent fields are dropped with their separator."""
    if not isinstance(meta, dict):
        return ""
    parts = [f"{label}: {value}" for field, label, _ in _FIELDS if (value := field_value(meta, field))]
    return ". ".join(parts)


def template_hash() -> str:
    """sha256 hex of the template, the clean-up table and the rules version (stored with item embeddings)."""
    spec = repr((TEMPLATE, TEXT_RULES_VERSION, HTML_REPLACEMENTS, _FIELDS))
    return hashlib.sha256(spec.encode("utf-8")).hexdigest()


def normalise(text: str) -> str:
    """Case-folded word tokens joined by one space: punctuation and separators do not decide a text match."""
    return " ".join(re.findall(r"\w+", text.casefold()))
