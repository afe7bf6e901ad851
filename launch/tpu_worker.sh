#!/usr/bin/env bash
# Runs on every worker of a Cloud TPU VM (launch/tpu_vm.sh sends this checkout and calls it):
# builds the environment once per VM and leaves it for every later launch and resume.
#
#   launch/tpu_worker.sh          # in ~/lenggen on the worker
#
# Python: python3.13 if the image has one, else Python $PYTHON_VERSION installed by uv
# $UV_VERSION (both pinned: the versions requirements/lock.txt was made with). Then
# launch/env.sh makes .venv with exactly the versions of requirements/lock.txt and
# requirements/tpu.txt (libtpu), under a lock, and only when the stamp in .venv differs: a
# resumed run runs what it started with, unless the checkout's pins changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_VERSION=3.13.0
UV_VERSION=0.13.9

if [ -z "${LENGGEN_PYTHON:-}" ]; then
  if command -v python3.13 >/dev/null 2>&1; then
    LENGGEN_PYTHON="$(command -v python3.13)"
  else
    uv="$HOME/.local/bin/uv"
    if ! [ -x "$uv" ] || [ "$("$uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
      curl -LsSf "https://astral.sh/uv/$UV_VERSION/install.sh" | env UV_NO_MODIFY_PATH=1 sh
    fi
    "$uv" python install --quiet "$PYTHON_VERSION"
    LENGGEN_PYTHON="$("$uv" python find "$PYTHON_VERSION")"
  fi
fi
export LENGGEN_PYTHON LENGGEN_ACCELERATOR=tpu
# shellcheck disable=SC1091
source launch/env.sh
python -c 'import importlib.metadata as m, sys
print(f"lenggen environment: Python {sys.version.split()[0]}, "
      + ", ".join(f"{p} {m.version(p)}" for p in ("jax", "jaxlib", "libtpu")))'
