#!/usr/bin/env bash
# Runs one experiment on a Cloud TPU VM (single host or a pod slice): creates the VM unless it
# exists, copies this checkout to every worker, installs lenggen and jax[tpu] there, runs the same
# `python -m lenggen.main` on all workers, and copies the results (not the checkpoints) back.
#
#   launch/tpu_vm.sh [OPTIONS] CONFIG WORKDIR [FLAGS...]
#   launch/tpu_vm.sh --dry-run configs/base.py:task=reverse_2x,pe=t5 runs/reverse_2x/t5/256788
#   launch/tpu_vm.sh --name=lg-v4-16 --accelerator-type=v4-16 --spot \
#       configs/base.py:task=scan,pe=nope runs/scan/nope/256788 --config.train.batch_size=64
#
# Options (defaults from the environment):
#   --name=NAME                ($LENGGEN_TPU_NAME, default lenggen-tpu)
#   --zone=ZONE                ($LENGGEN_TPU_ZONE, default us-central2-b)
#   --project=PROJECT          ($LENGGEN_TPU_PROJECT, default: gcloud's configured project)
#   --accelerator-type=TYPE    ($LENGGEN_TPU_TYPE, default v4-8)
#   --version=RUNTIME          ($LENGGEN_TPU_VERSION, default tpu-ubuntu2204-base)
#   --spot                     create a Spot VM (preemptible; rerun this script to resume)
#   --delete                   delete the VM when the run has finished
#   --dry-run                  print the commands, run nothing
#
# WORKDIR is relative: it lives under ~/lenggen on the workers and arrives at the same path
# here. On a Cloud TPU VM jax.distributed finds its coordinator, process count and process id
# by itself, so no --coordinator_address/--num_processes/--process_id flags are passed (lenggen.main
# initialises jax.distributed without them). The run writes its workdir on each worker's disk;
# process 0 writes results.json, metrics.jsonl and the plots, which come back. Rerunning the
# same command resumes from the workers' newest checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."

name="${LENGGEN_TPU_NAME:-lenggen-tpu}"
zone="${LENGGEN_TPU_ZONE:-us-central2-b}"
project="${LENGGEN_TPU_PROJECT:-}"
accelerator_type="${LENGGEN_TPU_TYPE:-v4-8}"
version="${LENGGEN_TPU_VERSION:-tpu-ubuntu2204-base}"
spot=0
delete=0
dry_run=0
positional=()
for arg in "$@"; do
  case "$arg" in
    --name=*) name="${arg#*=}" ;;
    --zone=*) zone="${arg#*=}" ;;
    --project=*) project="${arg#*=}" ;;
    --accelerator-type=*) accelerator_type="${arg#*=}" ;;
    --version=*) version="${arg#*=}" ;;
    --spot) spot=1 ;;
    --delete) delete=1 ;;
    --dry-run) dry_run=1 ;;
    *) positional+=("$arg") ;;
  esac
done
set -- "${positional[@]+"${positional[@]}"}"
if [ $# -lt 2 ]; then
  echo "usage: $0 [--dry-run] [--name=N] [--zone=Z] [--project=P] [--accelerator-type=T]" \
       "[--version=V] [--spot] [--delete] CONFIG WORKDIR [FLAGS...]" >&2
  exit 2
fi
config="$1"
workdir="$2"
shift 2
if [[ "$workdir" = /* ]]; then
  echo "WORKDIR must be relative (it lives under ~/lenggen on the workers), got '$workdir'." >&2
  exit 2
fi

quote() {  # one word, shell-quoted only where needed (readable dry-run output)
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

quote_all() {  # the words, quoted, space-separated
  local first=1 word
  for word in "$@"; do
    [ "$first" = 1 ] || printf ' '
    quote "$word"
    first=0
  done
}

step() {  # prints the command (dry run) or runs it
  if [ "$dry_run" = 1 ]; then
    quote_all "$@"
    printf '\n'
  else
    "$@"
  fi
}

tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
[ -n "$project" ] && where+=(--project="$project")
archive="lenggen-src.tgz"
results_archive="lenggen-results.tgz"

# Python >= 3.12 for jax >= 0.11: the image's python3.12 if any, else one installed by uv.
setup_command='mkdir -p ~/lenggen && tar xzf ~/'"$archive"' -C ~/lenggen && cd ~/lenggen'
setup_command+=' && if ! command -v python3.12 >/dev/null; then'
setup_command+=' curl -LsSf https://astral.sh/uv/install.sh | sh && ~/.local/bin/uv python install 3.12;'
setup_command+=' fi && export LENGGEN_PYTHON="$(command -v python3.12 || ~/.local/bin/uv python find 3.12)"'
setup_command+=' && source launch/env.sh && pip install --quiet --upgrade "jax[tpu]"'
train_command="cd ~/lenggen && source .venv/bin/activate && python -m lenggen.main"
train_command+=" $(quote_all --config="$config" --workdir="$workdir" "$@")"
pack_command="cd ~/lenggen && tar czf ~/$results_archive --exclude=checkpoints --exclude=best"
pack_command+=" $(quote "$workdir")"

echo "# TPU VM $name ($accelerator_type, $version) in $zone: create unless it exists"
if [ "$dry_run" = 1 ]; then
  step "${tpu[@]}" describe "$name" "${where[@]}"
  echo "# ... and only if that fails:"
fi
if [ "$dry_run" = 1 ] || ! "${tpu[@]}" describe "$name" "${where[@]}" >/dev/null 2>&1; then
  create=("${tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$accelerator_type"
          --version="$version")
  [ "$spot" = 1 ] && create+=(--spot)
  step "${create[@]}"
fi
echo "# Copy this checkout to every worker and install lenggen + jax[tpu]"
step tar czf "/tmp/$archive" setup.py README.md lenggen configs launch
step "${tpu[@]}" scp "/tmp/$archive" "$name:$archive" "${where[@]}" --worker=all
step "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$setup_command"
echo "# Train and evaluate on all workers (one JAX process each)"
step "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$train_command"
echo "# Copy the results back from worker 0 (checkpoints stay on the workers)"
step "${tpu[@]}" ssh "$name" "${where[@]}" --worker=0 --command="$pack_command"
step "${tpu[@]}" scp "$name:$results_archive" "/tmp/$results_archive" "${where[@]}" --worker=0
step tar xzf "/tmp/$results_archive" -C .
if [ "$delete" = 1 ]; then
  echo "# Delete the VM"
  step "${tpu[@]}" delete "$name" "${where[@]}" --quiet
fi
[ "$dry_run" = 1 ] || echo "Results in $workdir/ (results.json, metrics.jsonl, plots)."
