# Shared by run_pretrain.sh / run_finetune.sh: pick the process count and call torchrun. It runs in the caller's folder
# (relative paths stay the caller's) and imports this checkout's learn (scripts/python.sh puts it on PYTHONPATH).
#   NPROC     processes per node (default: number of GPUs, or 1 on CPU)
#   NNODES, NODE_RANK, RDZV_ENDPOINT   multi-node rendezvous (c10d); default: --standalone on one node
#   MAX_RESTARTS   torchrun --max-restarts: when a worker dies, all are restarted and resume from the newest
#                  verified checkpoint (ckpt.resume=auto); each restart round gets its own store keys
#   LEARN_DIST_TIMEOUT   seconds a collective waits for a silent peer (default 1800)
#   TORCH_ELASTIC_SHUTDOWN_TIMEOUT   seconds torchrun waits, after passing SIGTERM / SIGUSR1 on to every rank, for
#                  them to finish the step in flight and checkpoint it before it kills them (here 120, torchrun's 30);
#                  the launch then exits 75: stopped by a signal, run the same command to resume (learn/preempt.py)
# torchrun runs under `python -m learn.launch`, which passes its output through but replaces torchrun's
# failure traceback with one line at the end: the worker's `error:` line (exit code 2 for bad input, as the CLI).
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"
launch() {
  local stage=$1 config=$2; shift 2
  local nproc=${NPROC:-$("$PY" -c "import torch; print(max(1, torch.cuda.device_count()))")}
  local rdzv=(--standalone)
  if [ -n "${NNODES:-}" ] && [ "${NNODES}" != 1 ]; then
    rdzv=(--nnodes "$NNODES" --node-rank "${NODE_RANK:-0}" --rdzv-backend c10d --rdzv-endpoint "${RDZV_ENDPOINT:?set RDZV_ENDPOINT=host:port}")
    # a fresh store per restart round: the shared one keeps the dead round's keys (see learn/distributed.py)
    export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-1}
  fi
  export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-120}
  local signals=(--signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1)  # SIGUSR1 (Slurm) too, to every rank
  echo "+ torchrun ${rdzv[*]} --nproc-per-node $nproc --max-restarts ${MAX_RESTARTS:-0} -m learn $stage --config $config $*" >&2
  exec "$PY" -m learn.launch "${rdzv[@]}" "${signals[@]}" --nproc-per-node "$nproc" --max-restarts "${MAX_RESTARTS:-0}" \
    -m learn "$stage" --config "$config" "$@"
}
