#!/usr/bin/env bash
# Runs one experiment as N JAX processes on this machine (CPU), as a multi-host job would run:
# each process has 2 virtual CPU devices, so the mesh spans 2N devices; they meet at the
# coordinator 127.0.0.1:PORT (gloo CPU collectives).
#
#   launch/multiprocess_local.sh N [CONFIG] [WORKDIR] [FLAGS...]
#   launch/multiprocess_local.sh 2                                   # the quickstart, 2 processes
#   launch/multiprocess_local.sh 2 configs/base.py:task=copy,pe=t5,smoke=true /tmp/mp --config.train.num_steps=4
#   launch/multiprocess_local.sh --dry-run 4                         # print the commands only
#
# Each process runs
#   python -m lenggen.main --config=CONFIG --workdir=WORKDIR FLAGS... \
#       --coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=i
# (lenggen.main's flags for jax.distributed.initialize). Process 0 prints to this terminal; the
# others write WORKDIR/process_<i>.log. The global batch (config.train.batch_size) must divide by
# 2N. PORT is $LENGGEN_COORDINATOR_PORT (default 12355). XLA_FLAGS set here are kept, the device
# count flag added unless they set one. Ctrl-C or SIGTERM stops every process (SIGTERM: they checkpoint first).
# Exit status: the first non-zero status of a process, else 0.
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=0
args=()
for arg in "$@"; do
  if [ "$arg" = "--dry-run" ]; then dry_run=1; else args+=("$arg"); fi
done
set -- "${args[@]+"${args[@]}"}"

if [ $# -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [--dry-run] N [CONFIG] [WORKDIR] [FLAGS...]  (N: number of processes, got" \
       "'${1:-}')" >&2
  exit 2
fi
num_processes="$1"
config="${2:-configs/quickstart.py}"
workdir="${3:-runs/quickstart-multiprocess}"
shift $(( $# > 3 ? 3 : $# ))
port="${LENGGEN_COORDINATOR_PORT:-12355}"
xla_flags="${XLA_FLAGS:-}"
if [[ "$xla_flags" != *--xla_force_host_platform_device_count=* ]]; then
  xla_flags="${xla_flags:+$xla_flags }--xla_force_host_platform_device_count=2"
fi

# shellcheck source=launch/quote.sh
source launch/quote.sh

process_command() {  # the command of process $1 (then the extra flags), one quoted line
  local word
  printf 'XLA_FLAGS=%s python -m lenggen.main' "$(quote "$xla_flags")"
  for word in --config="$config" --workdir="$workdir" "${@:2}" \
      --coordinator_address="127.0.0.1:$port" --num_processes="$num_processes" \
      --process_id="$1"; do
    printf ' %s' "$(quote "$word")"
  done
  printf '\n'
}

if [ "$dry_run" = 1 ]; then
  echo "# $num_processes processes on localhost, coordinator 127.0.0.1:$port, 2 CPU devices each"
  for ((i = 0; i < num_processes; i++)); do
    process_command "$i" "$@"
  done
  exit 0
fi

source launch/env.sh
mkdir -p "$workdir"
pids=()
stop() {
  trap - INT TERM
  kill -TERM "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM
for ((i = 0; i < num_processes; i++)); do
  if [ "$i" = 0 ]; then
    XLA_FLAGS="$xla_flags" python -m lenggen.main --config="$config" --workdir="$workdir" "$@" \
      --coordinator_address="127.0.0.1:$port" --num_processes="$num_processes" --process_id=0 &
  else
    XLA_FLAGS="$xla_flags" python -m lenggen.main --config="$config" --workdir="$workdir" "$@" \
      --coordinator_address="127.0.0.1:$port" --num_processes="$num_processes" \
      --process_id="$i" >"$workdir/process_$i.log" 2>&1 &
  fi
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  code=0
  wait "${pids[$i]}" || code=$?
  if [ "$code" != 0 ]; then
    where=""
    [ "$i" != 0 ] && where=" (see $workdir/process_$i.log)"
    echo "process $i exited with status $code$where" >&2
    [ "$status" = 0 ] && status=$code
  fi
done
exit "$status"
