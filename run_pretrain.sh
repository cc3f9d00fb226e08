#!/usr/bin/env bash
# Pretrain LEARN: one process per GPU (1 on CPU) through torchrun. Extra key=value arguments go to the trainer.
#   bash run_pretrain.sh                       NPROC=2 bash run_pretrain.sh train.epochs=1
#   CONFIG=configs/demo_pretrain.yaml bash run_pretrain.sh
#   multi-node: NNODES=2 NODE_RANK=0 RDZV_ENDPOINT=host:29500 bash run_pretrain.sh   (same on every node)
#   MAX_RESTARTS=1 bash run_pretrain.sh   when a worker dies, torchrun restarts all of them once; they resume from
#   the newest verified checkpoint (ckpt.save_every_steps=N bounds the work lost). See scripts/launch.sh.
# Works from any folder: relative paths (CONFIG, paths in the arguments, the runs/ folder) are read from the folder it
# is called in; the default config is this repository's configs/pretrain_amazon.yaml.
# SIGTERM or SIGUSR1 (a scheduler's preemption) reaches every rank: each finishes its step, that step is
# checkpointed and the script exits 75; the same command resumes where it stopped (scripts/launch.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/scripts/launch.sh"
launch pretrain "${CONFIG:-$here/configs/pretrain_amazon.yaml}" "$@"
