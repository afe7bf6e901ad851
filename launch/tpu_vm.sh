#!/usr/bin/env bash
# Runs one experiment on a Cloud TPU VM, a single host or every worker of a pod slice: creates
# the VM unless it exists (recreates a preempted Spot VM), copies this checkout to every worker,
# builds the pinned environment there once (launch/tpu_worker.sh), and runs the same
# `python -m lenggen.main` on all workers with `gcloud compute tpus tpu-vm ssh --worker=all`.
#
#   launch/tpu_vm.sh [OPTIONS] CONFIG WORKDIR [FLAGS...]
#   launch/tpu_vm.sh --dry-run configs/base.py:task=reverse_2x,pe=t5 runs/reverse_2x/t5/256788
#   launch/tpu_vm.sh --name=lg-v4-32 --accelerator-type=v4-32 --spot \
#       configs/base.py:task=scan,pe=nope gs://my-bucket/runs/scan/nope/256788
#
# Options (defaults from the environment):
#   --name=NAME                ($LENGGEN_TPU_NAME, default lenggen-tpu)
#   --zone=ZONE                ($LENGGEN_TPU_ZONE, default us-central2-b)
#   --project=PROJECT          ($LENGGEN_TPU_PROJECT, default: gcloud's configured project)
#   --accelerator-type=TYPE    ($LENGGEN_TPU_TYPE, default v4-8)
#   --version=RUNTIME          ($LENGGEN_TPU_VERSION, default: the TPU generation's base image)
#   --spot                     create a Spot VM (preemptible; rerun this script to resume)
#   --delete                   delete the VM when the run has finished
#   --dry-run                  print the commands, run nothing
#
# WORKDIR: a slice with more than one worker (v4-16 and up, v5litepod-16 and up, ...) runs one
# JAX process per worker, and all of them write the same checkpoints: WORKDIR must then be a
# gs://BUCKET/PATH that every worker reaches (the VMs' service account needs write access to
# the bucket); the results stay there. A single-worker VM may also use a relative WORKDIR: it
# lives under ~/lenggen on the worker, and its results (not its checkpoints) come back to the
# same path here. jax.distributed starts by itself on the workers: JAX reads the slice from
# the VM's metadata server (lenggen/distributed.py). Rerunning the same command resumes from
# the newest checkpoint, with the same pinned versions (requirements/lock.txt, tpu.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

name="${LENGGEN_TPU_NAME:-lenggen-tpu}"
zone="${LENGGEN_TPU_ZONE:-us-central2-b}"
project="${LENGGEN_TPU_PROJECT:-}"
accelerator_type="${LENGGEN_TPU_TYPE:-v4-8}"
version="${LENGGEN_TPU_VERSION:-}"
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

# Workers (hosts) of an accelerator type; empty if unknown. v2-v5p types count TensorCores
# (8 per host); v5e and v6e count chips (up to 8 on one host, else 4 per host).
generation="${accelerator_type%-*}"
size="${accelerator_type##*-}"
workers=""
if [[ "$size" =~ ^[0-9]+$ ]]; then
  case "$generation" in
    v2|v3|v4|v5p) workers=$(( size <= 8 ? 1 : size / 8 )) ;;
    v5litepod|v6e) workers=$(( size <= 8 ? 1 : size / 4 )) ;;
  esac
fi
if [ -z "$version" ]; then
  case "$generation" in
    v5litepod) version=v2-alpha-tpuv5-lite ;;
    v5p) version=v2-alpha-tpuv5 ;;
    v6e) version=v2-alpha-tpuv6e ;;
    *) version=tpu-ubuntu2204-base ;;
  esac
fi
if [[ "$workdir" != gs://* ]]; then
  if [ "$workers" != 1 ]; then
    echo "$accelerator_type has ${workers:-an unknown number of} workers, which must share one" \
         "workdir: WORKDIR must be gs://BUCKET/PATH, got '$workdir'." >&2
    exit 2
  fi
  if [[ "$workdir" = /* ]]; then
    echo "WORKDIR must be relative (it lives under ~/lenggen on the worker) or gs://, got" \
         "'$workdir'." >&2
    exit 2
  fi
fi

# shellcheck source=launch/quote.sh
source launch/quote.sh

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
create=("${tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$accelerator_type"
        --version="$version")
[ "$spot" = 1 ] && create+=(--spot)
setup_command="mkdir -p ~/lenggen && tar xzf ~/$archive -C ~/lenggen && ~/lenggen/launch/tpu_worker.sh"
train_command="cd ~/lenggen && source .venv/bin/activate && python -m lenggen.main"
train_command+=" $(quote_all --config="$config" --workdir="$workdir" "$@")"
pack_command="cd ~/lenggen && tar czf ~/$results_archive --exclude=checkpoints --exclude=best"
pack_command+=" $(quote "$workdir")"

echo "# TPU VM $name ($accelerator_type: ${workers:-?} worker(s), $version) in $zone"
if [ "$dry_run" = 1 ]; then
  step "${tpu[@]}" describe "$name" "${where[@]}" --format='value(state)'
  echo "# ... if it does not exist:"
  step "${create[@]}"
  echo "# ... if it was preempted or stopped (state PREEMPTED or TERMINATED): delete it, then" \
       "create it as above"
  step "${tpu[@]}" delete "$name" "${where[@]}" --quiet
else
  state="$("${tpu[@]}" describe "$name" "${where[@]}" --format='value(state)' 2>/dev/null || true)"
  case "$state" in
    "") step "${create[@]}" ;;
    PREEMPTED|TERMINATED)
      echo "$name is $state: deleting and creating it again (checkpoints in $workdir remain)."
      step "${tpu[@]}" delete "$name" "${where[@]}" --quiet
      step "${create[@]}" ;;
    *) echo "$name exists ($state): reusing it." ;;
  esac
fi
echo "# Copy this checkout to every worker; build the pinned environment once per VM"
step tar czf "/tmp/$archive" setup.py README.md lenggen configs launch requirements
step "${tpu[@]}" scp "/tmp/$archive" "$name:$archive" "${where[@]}" --worker=all
step "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$setup_command"
echo "# Train and evaluate on all workers (one JAX process each)"
status=0
step "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$train_command" || status=$?
if [ "$status" != 0 ]; then
  echo "lenggen on $name stopped with status $status (75: preempted, checkpointed). Rerun" \
       "the same command to resume." >&2
  exit "$status"
fi
if [[ "$workdir" = gs://* ]]; then
  [ "$dry_run" = 1 ] || echo "Results in $workdir/ (results.json, metrics.jsonl, plots)."
else
  echo "# Copy the results back from worker 0 (checkpoints stay on the worker)"
  step "${tpu[@]}" ssh "$name" "${where[@]}" --worker=0 --command="$pack_command"
  step "${tpu[@]}" scp "$name:$results_archive" "/tmp/$results_archive" "${where[@]}" --worker=0
  step tar xzf "/tmp/$results_archive" -C .
  [ "$dry_run" = 1 ] || echo "Results in $workdir/ (results.json, metrics.jsonl, plots)."
fi
if [ "$delete" = 1 ]; then
  echo "# Delete the VM"
  step "${tpu[@]}" delete "$name" "${where[@]}" --quiet
fi
