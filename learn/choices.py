"""Typed config fields: a YAML value checked against and converted to its dataclass field's type (``coerce``), and
the ``Literal`` choices of a config dataclass built in code enforced (``check_choices``).

Both learn.config (loading YAML and overrides) and learn.model (``ModelConfig.validate`` on a config read back from a
checkpoint) use these, so neither has to import the other for them.
"""

from __future__ import annotations

import typing
from dataclasses import fields
from typing import Any, Literal

from learn.errors import LearnError

_EXPECTED = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}


def coerce(value: Any, typ: Any, where: str) -> Any:
    """Check/convert a YAML value to the dataclass field type (int -> float allowed, str digits not)."""
    if typing.get_origin(typ) is list:
        if not isinstance(value, list | tuple):
            raise LearnError(f"config {where}: expected a list, got {value!r}")
        return [coerce(v, typing.get_args(typ)[0], where) for v in value]
    if typing.get_origin(typ) is Literal:
        if value not in typing.get_args(typ):
            raise LearnError(f"config {where}: expected one of {'|'.join(typing.get_args(typ))}, got {value!r}")
        return value
    if typ not in _EXPECTED:
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(value, str) and typ in (int, float):  # YAML 1.1 reads "1e-4" as a string
        try:
            value, number = typ(value), True
        except ValueError:
            raise LearnError(f"config {where}: expected a number, got {value!r}") from None
    if isinstance(value, typ) and typ in (bool, str):
        return value
    if typ is int and number and (isinstance(value, int) or value.is_integer()):
        return int(value)
    if typ in (float, str) and number:
        return typ(value)
    raise LearnError(f"config {where}: expected {_EXPECTED[typ]}, got {value!r}")


def check_choices(obj: Any, prefix: str = "") -> None:
    """Refuse a field of a config dataclass built in code (not through :func:`learn.config.load_config`) whose value is
    not one of its choices."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        if typing.get_origin(hints[f.name]) is Literal:
            coerce(getattr(obj, f.name), hints[f.name], f"{prefix}{f.name}")
