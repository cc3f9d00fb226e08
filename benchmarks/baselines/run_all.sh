#!/usr/bin/env bash
# Prepare our canonical datasets and run the RecBole baselines on them one after another (CPU, 1 thread, nice 19).
#
# Usage: bash benchmarks/baselines/run_all.sh [RUN ...]     RUN = dataset:model, default: the list below.
# Logs: benchmarks/out/baselines/logs/<dataset>_<model>.log; results: benchmarks/baselines/results/*.json and
# a row each in benchmarks/baselines/RESULTS.md. Needs the project's .venv (prepare) and setup.sh's venv (RecBole).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="${BASELINES_OUT:-$ROOT/benchmarks/out/baselines}"
SHARED="${LEARN_SHARED_DATA:-$ROOT/../shared/data}"
PY="$HERE/.venv/bin/python"
[[ -x "$PY" ]] || bash "$HERE/setup.sh"
mkdir -p "$OUT/canonical" "$OUT/logs"

prepare() {  # dataset name -> canonical folder (made once)
  local dir="$OUT/canonical/$1"
  if [[ ! -f "$dir/test.json" ]]; then
    case "$1" in
      scientific_unisrec) "$ROOT/.venv/bin/python" -m learn prepare --from unisrec \
                            "$SHARED/amazon2018_scientific_unisrec" "$dir" >&2 ;;
      ml-100k) "$ROOT/.venv/bin/python" -m learn prepare --from ml-100k "$dir" >&2 ;;
      *) echo "unknown dataset $1" >&2; return 2 ;;
    esac
  fi
  echo "$dir"
}

config_for() {
  case "$1" in
    scientific_unisrec) echo "$HERE/configs/scientific.yaml" ;;
    ml-100k) echo "$HERE/configs/ml-100k.yaml" ;;
  esac
}

RUNS=("$@")
[[ ${#RUNS[@]} -gt 0 ]] || RUNS=(scientific_unisrec:SASRec ml-100k:SASRec scientific_unisrec:GRU4Rec scientific_unisrec:BERT4Rec)
for run in "${RUNS[@]}"; do
  dataset="${run%%:*}" model="${run#*:}"
  canonical="$(cd "$ROOT" && prepare "$dataset")"
  log="$OUT/logs/${dataset}_${model}.log"
  echo "$(date -u '+%F %T') start $dataset $model -> $log"
  (cd "$ROOT" && OMP_NUM_THREADS=1 nice -n 19 "$PY" "$HERE/run_recbole.py" --canonical "$canonical" \
      --dataset "$dataset" --model "$model" --config "$(config_for "$dataset")" --work-dir "$OUT") > "$log" 2>&1 \
    && echo "$(date -u '+%F %T') done $dataset $model" \
    || echo "$(date -u '+%F %T') FAILED $dataset $model (see $log)"
done
