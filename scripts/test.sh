#!/usr/bin/env bash
# The test command: set up (or reuse) .venv, lint, run the default pytest suite in parallel (pytest-xdist: one worker
# per CPU core, at most 4; LEARN_TEST_WORKERS=N overrides, 0 runs in this process).
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m slow   or   bash scripts/test.sh tests/test_model.py
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export WANDB_MODE=${WANDB_MODE:-disabled} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
workers=${LEARN_TEST_WORKERS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}  # nproc honours OMP_NUM_THREADS
[ "$workers" -le 4 ] || workers=4
# tests use tiny tensors: one intra-op thread per worker, so the workers do not fight over the cores
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
.venv/bin/ruff check .
if [ "$workers" -gt 1 ]; then
  .venv/bin/python -m pytest -n "$workers" --dist worksteal "$@"
else
  .venv/bin/python -m pytest "$@"
fi
