#!/usr/bin/env bash
# Creates benchmarks/.torch-venv: a Python 3.11 virtual environment with a CPU build of PyTorch,
# for the PyTorch baseline of benchmarks/train_throughput.py (which runs it in a subprocess).
#
# Why a separate interpreter: lenggen needs Python >= 3.12, while the CPU-only torch wheel at
# hand is for Python 3.11; on 3.12 pip would fetch a multi-GB CUDA build. Where your own Python
# gets a CPU torch wheel directly, `pip install -e .[bench]` is enough and this is not needed.
#
#   benchmarks/torch_env.sh                 # python3.11 by default
#   PYTHON=/path/to/python3.x benchmarks/torch_env.sh
#   TORCH_SPEC='torch==2.13.0' benchmarks/torch_env.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${here}/.torch-venv"
python="${PYTHON:-python3.11}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"

if ! command -v "${python}" >/dev/null 2>&1; then
  echo "torch_env.sh: ${python} not found; set PYTHON=/path/to/python3.x" >&2
  exit 1
fi
"${python}" -m venv "${venv}"
"${venv}/bin/python" -m pip install --quiet --upgrade pip
"${venv}/bin/python" -m pip install --quiet "${torch_spec}" numpy
"${venv}/bin/python" -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)'
echo "PyTorch baseline interpreter: ${venv}/bin/python"
