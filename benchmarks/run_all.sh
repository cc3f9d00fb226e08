#!/usr/bin/env bash
# The one command that regenerates benchmarks/RESULTS.md: runs every CPU benchmark that exists here (each writes
# benchmarks/results/<name>.json through benchmarks/common.write_result), then benchmarks/report.py.
#
#   bash benchmarks/run_all.sh              # everything (bench_scale.py builds a 1M-item store: about an hour on 2 cores)
#   bash benchmarks/run_all.sh rank scale   # only bench_rank.py and bench_scale.py, then the report
#   QUICK=1 bash benchmarks/run_all.sh      # --quick where a benchmark has it (smoke test; numbers not comparable)
#
# A benchmark whose inputs are missing is skipped with a message; a failing one is reported and the others still run.
# Not run here: bench_train.py --epoch (needs benchmarks/baselines/.venv and the prepared Scientific split) and the
# GPU benchmarks (benchmarks/gpu.sh).
# The exit status is 1 if any benchmark failed.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PY:-${PYTHON:-}}  # PY (or PYTHON) picks the interpreter
source scripts/python.sh
SHARED=${SHARED:-../shared/data}
ALL=(embed store rank train scale)
WANT=("$@")
[ ${#WANT[@]} -eq 0 ] && WANT=("${ALL[@]}")
failed=()

missing_input() {  # prints why a benchmark cannot run here, or nothing
    case "$1" in
        embed) [ -f "$SHARED/amazon2018_scientific_recformer_items/meta.json" ] ||
                   echo "needs $SHARED/amazon2018_scientific_recformer_items/meta.json" ;;
    esac
}

for name in "${WANT[@]}"; do
    script="benchmarks/bench_$name.py"
    if [ ! -f "$script" ]; then
        echo "== skip $name: $script does not exist"
        continue
    fi
    why=$(missing_input "$name")
    if [ -n "$why" ]; then
        echo "== skip $name: $why"
        continue
    fi
    args=()
    if [ -n "${QUICK:-}" ] && grep -q -- '"--quick"' "$script"; then args+=(--quick); fi
    echo "== $PY $script ${args[*]:-}   ($(date -u '+%H:%M:%S UTC'), load $(cut -d' ' -f1 /proc/loadavg))"
    if ! "$PY" "$script" "${args[@]}"; then
        echo "== FAILED: $script"
        failed+=("$name")
    fi
done

"$PY" benchmarks/report.py || exit 1
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
