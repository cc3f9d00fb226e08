#!/usr/bin/env bash
# Create (or reuse) benchmarks/baselines/.venv: a separate virtualenv that runs RecBole 1.2.1 baselines on CPU.
#
# RecBole 1.2.1 predates numpy 2, pandas 2.3, setuptools 81 (pkg_resources) and torch's weights_only default, so it
# gets its own pinned environment instead of sharing the project's .venv. ray (imported only by
# recbole.quick_start, which run_recbole.py does not use) and hyperopt/plotly (hyper-parameter tuning) are left out.
#
# Usage: bash benchmarks/baselines/setup.sh            (PYTHON=/path/to/python3.11 to choose the interpreter)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

# The CPU build of torch: a plain `torch` requirement would pull the CUDA wheels and their nvidia-* dependencies.
TORCH_SPEC="torch==2.13.0"
CPU_WHEEL="$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n1 || true)"
if [[ -n "$CPU_WHEEL" ]]; then
  TORCH_SPEC="$CPU_WHEEL"
  "${PIP[@]}" "$TORCH_SPEC"
else
  # no local CPU wheel: try PyTorch's CPU index, else PyPI's build (which brings the CUDA libraries, ~GBs)
  "${PIP[@]}" --timeout 30 --retries 0 "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
    || "${PIP[@]}" "torch==2.13.0"
fi

"${PIP[@]}" \
  "numpy>=1.24,<2" \
  "pandas>=1.5,<2.3" \
  "setuptools<81" \
  "scipy>=1.10,<1.16" \
  "scikit-learn>=1.3,<1.7" \
  "pyyaml>=6" \
  "tqdm>=4.48.2" \
  "colorlog==4.7.2" \
  "colorama==0.4.4" \
  "tensorboard>=2.5" \
  "thop>=0.1.1.post2207130030" \
  "tabulate>=0.8.10" \
  "texttable>=0.9.0" \
  "psutil>=5.9.0"

# RecBole itself without its declared dependencies (they would drag in ray<=2.6.3 and an unpinned torch).
"${PIP[@]}" --no-deps "recbole==1.2.1"

"$VENV/bin/python" - <<'PY'
import numpy, pandas, torch
import recbole
from recbole.config import Config  # noqa: F401  (imports the config, logger and tensorboard stack)
from recbole.data import create_dataset  # noqa: F401
from recbole.utils import get_model, get_trainer  # noqa: F401
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert "+cpu" in torch.__version__ or not torch.cuda.is_available(), "expected the CPU build of torch"
print(f"baselines venv ready: recbole {recbole.__version__}, torch {torch.__version__}, "
      f"numpy {numpy.__version__}, pandas {pandas.__version__}")
PY
