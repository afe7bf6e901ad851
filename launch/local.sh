#!/usr/bin/env bash
# Sets up the environment (first run only) and trains + evaluates an experiment on this machine.
#
#   launch/local.sh                                   # the quickstart: tiny NoPE decoder on copy
#   launch/local.sh configs/base.py:task=reverse_2x,pe=t5 runs/reverse_2x-t5 --config.train.num_steps=100
#   launch/local.sh --dry-run [CONFIG WORKDIR FLAGS...]   # print the command, run nothing
#
# On a CPU-only host it runs XLA's fastest measured CPU configuration: one device with oneDNN
# matmuls (benchmarks/results/README.md and cpu_flags_quickstart.md: faster than two virtual
# devices, and than XLA's default matmuls, at the quickstart size and at 4 layers x 256 on a
# 2-core machine). Overrides: set XLA_FLAGS yourself (kept as it is), or LENGGEN_CPU_DEFAULTS=0
# for XLA's own defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
  dry_run=1
  shift
fi
source launch/env.sh

config="${1:-configs/quickstart.py}"
workdir="${2:-runs/quickstart}"
shift $(( $# > 2 ? 2 : $# ))

CPU_XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_onednn=true"
CPU_XLA_FLAGS+=" --xla_cpu_experimental_onednn_custom_call=true"
on_cpu=0
if python -c 'import jax, sys; sys.exit(jax.default_backend() != "cpu")' 2>/dev/null; then
  on_cpu=1
  # A CPU-only host: with libtpu installed (the test or tpu extra), JAX would try a TPU backend
  # in every run and print libtpu's warnings. This changes no device the run gets.
  export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
fi
if [ -z "${XLA_FLAGS:-}" ] && [ "${LENGGEN_CPU_DEFAULTS:-1}" != 0 ] && [ "$on_cpu" = 1 ]; then
  export XLA_FLAGS="$CPU_XLA_FLAGS"
fi
command=(python -m lenggen.main --config="$config" --workdir="$workdir" "$@")
if [ "$dry_run" = 1 ]; then
  printf 'XLA_FLAGS=%q' "${XLA_FLAGS:-}"
  printf ' %q' "${command[@]}"
  printf '\n'
  exit 0
fi
exec "${command[@]}"
