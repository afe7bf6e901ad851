#!/usr/bin/env bash
# Sets up the environment (first run only) and runs the test suite. `.ci/run` runs exactly this.
#   launch/test.sh                 # everything
#   launch/test.sh tests/model -x  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh
# One linter and one formatter for the whole tree (ruff.toml; `ruff format .` fixes what the
# format check reports), then the tests: two pytest workers (the tests are mostly
# single-threaded XLA compiles, so two use both cores: 9 min -> 5 min here); a test file's tests
# stay on one worker, so its module fixtures are built once.
ruff check --quiet .
ruff format --check --quiet .
exec python -m pytest -q -n 2 --dist loadfile "$@"
