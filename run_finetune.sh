#!/usr/bin/env bash
# Finetune LEARN on one downstream dataset (default Office): dataset=Scientific bash run_finetune.sh
#   or  bash run_finetune.sh Scientific train.epochs=50      (first argument without '=' picks the dataset)
# DATA_ROOT (default amazon_2018/finetune_data) holds <dataset>/ and <dataset>_baichuan_lmdb/.
# Config: CONFIG, else configs/finetune_amazon_<dataset in lower case>.yaml when it exists (per-dataset settings, e.g.
# Scientific's lr 1e-5), else configs/finetune_amazon.yaml (both from this repository).
# Works from any folder: relative paths (CONFIG, DATA_ROOT, paths in the arguments, the runs/ folder) are read from the
# folder it is called in.
# SIGTERM or SIGUSR1 (a scheduler's preemption) reaches every rank: each finishes its step, that step is
# checkpointed and the script exits 75; the same command resumes where it stopped (scripts/launch.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/scripts/launch.sh"
dataset=${dataset:-Office}
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then dataset=$1; shift; fi
root=${DATA_ROOT:-amazon_2018/finetune_data}
config=$here/configs/finetune_amazon_${dataset,,}.yaml
[ -f "$config" ] || config=$here/configs/finetune_amazon.yaml
launch finetune "${CONFIG:-$config}" \
  data.dataset="$root/$dataset" data.store="$root/${dataset}_baichuan_lmdb" log.run_name="finetune-$dataset" "$@"
