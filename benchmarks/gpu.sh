#!/usr/bin/env bash
# GPU benchmarks (issue #7 part 4), then RESULTS.md: pretraining steps/s at batch 1024 (bf16, SDPA flash, eager and
# torch.compile), finetuning steps/s with a 38k-item catalogue (Pet), CEX tokens/s of 1B/7B-class decoders.
#
#   bash benchmarks/gpu.sh                       # everything (about 10 minutes on one H100)
#   bash benchmarks/gpu.sh --only pretrain       # arguments go to benchmarks/bench_gpu.py (--help)
#   bash benchmarks/gpu.sh --dry-run             # CPU, tiny sizes: checks the code paths (results not in RESULTS.md)
#
# Writes benchmarks/results/gpu_<device>.json (device name and machine recorded) and regenerates RESULTS.md.
# Without a CUDA device it stops at once with one line on stderr and exit status 2.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PY:-${PYTHON:-}}  # PY (or PYTHON) picks the interpreter
source scripts/python.sh
dry=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry=1; done
if [ "$dry" = 0 ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu.sh: no CUDA device visible to torch (torch.cuda.is_available() is False); run it on a GPU machine" >&2
    exit 2
fi
"$PY" benchmarks/bench_gpu.py "$@"
[ "$dry" = 1 ] || "$PY" benchmarks/report.py
