# Sourced by the scripts (from the repository root): PY = $PYTHON when set, else .venv/bin/python, else python3.
PY=${PYTHON:-}
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
