#!/usr/bin/env bash
# Prepare our canonical datasets and run the RecBole baselines on them one after another (CPU, 1 thread, nice 19).
#
# Usage: bash benchmarks/baselines/run_all.sh [RUN ...]     RUN = dataset:model, default: the list below.
# Datasets: scientific_unisrec (prepare --from unisrec), ml100k (prepare --from ml-100k) and ml100k_recbole_order
# (ml100k with RecBole's own tie order, i.e. exactly the split of the reference run in benchmarks/quality.md) and ml1m
# (prepare --from recformer ../shared/data/movielens_1m; not in the default list: an estimated ~20 hours on 2 CPU cores)
# and office2014 (prepare --from lcrec ../shared/data/amazon2014_office_lcrec, with the Scientific settings).
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
      ml100k) "$ROOT/.venv/bin/python" -m learn prepare --from ml-100k "$dir" >&2 ;;
      ml100k_recbole_order)  # our ml-100k re-ordered as RecBole orders ties (its own LS split; see check_split.py)
        "$PY" "$HERE/check_split.py" "$(prepare ml100k)" --write-recbole-order "$dir" >&2 || true
        [[ -f "$dir/test.json" ]] ;;
      ml1m) "$ROOT/.venv/bin/python" -m learn prepare --from recformer "$SHARED/movielens_1m" "$dir" >&2 ;;
      office2014) "$ROOT/.venv/bin/python" -m learn prepare --from lcrec "$SHARED/amazon2014_office_lcrec" "$dir" >&2 ;;
      *) echo "unknown dataset $1" >&2; return 2 ;;
    esac
  fi
  echo "$dir"
}

config_for() {
  case "$1" in
    scientific_unisrec|office2014) echo "$HERE/configs/scientific.yaml" ;;  # the Amazon settings
    ml100k*) echo "$HERE/configs/ml-100k.yaml" ;;
    ml1m) echo "$HERE/configs/ml-1m.yaml" ;;
  esac
}

RUNS=("$@")
[[ ${#RUNS[@]} -gt 0 ]] || RUNS=(scientific_unisrec:SASRec ml100k_recbole_order:SASRec scientific_unisrec:GRU4Rec scientific_unisrec:BERT4Rec
                               ml100k:SASRec)
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
