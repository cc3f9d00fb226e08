#!/usr/bin/env bash
# Evaluate a checkpoint on a prepared dataset and print the results table.
#   bash scripts/eval.sh CKPT DATASET [STORE] [extra learn-eval args]
# CKPT: a run folder (uses best/), a checkpoints/step-* folder, or a converted model folder.
# STORE defaults to <DATASET>_baichuan_lmdb beside the dataset folder (the seed's layout). Works from any folder:
# relative paths are read from the folder it is called in.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bash scripts/eval.sh CKPT DATASET [STORE] [--mask-history ...]" >&2; exit 2; }
ckpt=$1 data=${2%/}; shift 2
store="${data}_baichuan_lmdb"
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then store=$1; shift; fi
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"
exec "$PY" -m learn eval --ckpt "$ckpt" --data "$data" --store "$store" "$@"
