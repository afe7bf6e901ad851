#!/usr/bin/env bash
# Sets up the environment (first run only) and runs the test suite. `.ci/run` runs exactly this.
#   launch/test.sh                 # everything
#   launch/test.sh tests/model -x  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh
exec python -m pytest -q "$@"
