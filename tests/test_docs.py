"""The documentation follows the code: docs/config.md lists every config option with its real default and the shipped
configs that set it, and no page names an option that does not exist."""

from __future__ import annotations

import re
import typing
from dataclasses import fields
from pathlib import Path

import yaml

from learn.choices import coerce
from learn.config import RunConfig
from tests.conftest import ROOT

SECTIONS = ("model", "data", "train", "log", "ckpt")
SECTION = "(?:" + "|".join(SECTIONS) + ")"
# dotted names in the docs that look like options but are not: (name, where it is and what it is)
NOT_OPTIONS = {"model.cfg": "docs/model.md's Python API: the config attribute of a LEARNModel"}


def _options() -> dict[str, tuple[object, object]]:
    """'section.name' -> (default, type hint) of every field of every config section."""
    cfg = RunConfig()
    out = {}
    for section in SECTIONS:
        obj = getattr(cfg, section)
        hints = typing.get_type_hints(type(obj))
        for f in fields(obj):
            out[f"{section}.{f.name}"] = (getattr(obj, f.name), hints[f.name])
    return out


def _set_keys(path: Path) -> set[str]:
    """Dotted keys a config file sets, itself or through the file it extends."""
    data = yaml.safe_load(path.read_text()) or {}
    base = data.pop("extends", None)
    keys = {f"{section}.{name}" for section, values in data.items() for name in values}
    return keys | (_set_keys(path.parent / base) if base else set())


def _rows() -> dict[str, list[str]]:
    """docs/config.md's option rows: 'section.name' -> [default, set in, when to change it]."""
    rows = {}
    for line in (ROOT / "docs" / "config.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        found = re.fullmatch(rf"`({SECTION}\.\w+)`", cells[0]) if line.startswith("|") else None
        if found:
            assert found[1] not in rows, f"docs/config.md lists {found[1]} twice"
            rows[found[1]] = cells[1:]
    return rows


def test_config_md_lists_every_option_and_nothing_else():
    rows, options = _rows(), _options()
    assert sorted(set(options) - set(rows)) == [], "options missing from docs/config.md"
    assert sorted(set(rows) - set(options)) == [], "docs/config.md lists options that do not exist"
    assert all(len(cells) == 3 and cells[2] for cells in rows.values()), "each row: default | set in | when"


def test_config_md_defaults_and_shipped_configs_are_the_real_ones():
    configs = {p.stem: _set_keys(p) for p in sorted((ROOT / "configs").glob("*.yaml"))}
    for key, (default, hint) in _options().items():
        cell, set_in, _ = _rows()[key]
        written = coerce(yaml.safe_load(cell.strip("`")), hint, key)
        assert written == default, f"docs/config.md: {key} default {cell}, the code says {default!r}"
        users = sorted(name for name, keys in configs.items() if key in keys)
        listed = {"all": sorted(configs), "—": []}.get(set_in, sorted(set_in.replace(" ", "").split(",")))
        assert listed == users, f"docs/config.md: {key} is set in {users}, the page says {set_in}"


def test_no_page_names_an_option_that_does_not_exist():
    """README.md and docs/*.md: every `section.name` that looks like an option is one (retired options are gone)."""
    options = set(_options())
    pattern = re.compile(rf"(?<![\w/.\-])({SECTION})\.([a-z_]+)\b(?![(.\w/*-])")
    files = ("md", "py", "json", "jsonl", "yaml", "safetensors", "mdb")
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for found in pattern.finditer(page.read_text()):
            name = f"{found[1]}.{found[2]}"
            if found[2] not in files and name not in NOT_OPTIONS:
                assert name in options, f"{page.relative_to(ROOT)} names {name}, which is not an option"


def test_readme_is_short_and_its_command_table_is_learn_help():
    """README.md stays a five-minute read (at most 150 lines; the rest lives in docs/) and lists every command with the
    help line `learn --help` prints."""
    from learn.cli import COMMANDS

    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150, "README.md is over 150 lines: move detail to docs/"
    for name, (_, help_line) in COMMANDS.items():
        assert re.search(rf"^  {re.escape(name)} +{re.escape(help_line)}$", readme, re.M), f"README: {name}"
