# Sourced by the scripts: LEARN_ROOT = this checkout; PY = $PYTHON when set, else LEARN_ROOT/.venv/bin/python, else
# python3; and this checkout first on PYTHONPATH, so `$PY -m learn` runs this code from any folder.
LEARN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-}
if [ -z "$PY" ]; then if [ -x "$LEARN_ROOT/.venv/bin/python" ]; then PY=$LEARN_ROOT/.venv/bin/python; else PY=python3; fi; fi
export PYTHONPATH="$LEARN_ROOT${PYTHONPATH:+:$PYTHONPATH}"
