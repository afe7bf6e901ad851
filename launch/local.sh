#!/usr/bin/env bash
# Sets up the environment (first run only) and trains + evaluates an experiment on this machine.
#
#   launch/local.sh                                   # the quickstart: tiny NoPE decoder on copy
#   launch/local.sh configs/base.py:task=reverse_2x,pe=t5 runs/reverse_2x-t5 --config.train.num_steps=100
#
# On a CPU-only host the CPU is split into 2 virtual devices (data parallel), which uses both
# cores better than one device; set XLA_FLAGS yourself to override.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh

config="${1:-configs/quickstart.py}"
workdir="${2:-runs/quickstart}"
shift $(( $# > 2 ? 2 : $# ))

if [ -z "${XLA_FLAGS:-}" ] \
    && python -c 'import jax, sys; sys.exit(jax.default_backend() != "cpu")' 2>/dev/null; then
  export XLA_FLAGS=--xla_force_host_platform_device_count=2
fi
exec python -m lenggen.main --config="$config" --workdir="$workdir" "$@"
