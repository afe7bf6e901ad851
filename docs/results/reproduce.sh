#!/usr/bin/env bash
# Rebuilds everything under docs/results/ from scratch on a CPU machine: the cpu_mini sweep
# (45 runs), its report, and the attention-similarity analysis on its checkpoints.
#
#   docs/results/reproduce.sh [RUNS_DIR]     # default runs/cpu_mini; rerunning resumes the sweep
#
# Run from the repository root after `launch/local.sh` or `launch/test.sh` made .venv (or with
# lenggen installed in the active Python).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/cpu_mini}
OUT=docs/results
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
SEEDS=(256788 234054 146317)  # configs/base.PAPER_SEEDS

XLA_FLAGS=--xla_force_host_platform_device_count=2 \
  "$PYTHON" -m lenggen.sweep --grid=configs/grids/cpu_mini.py --runs_dir="$RUNS"
"$PYTHON" -m lenggen.report "$RUNS" --out="$OUT/cpu_mini"

# Section 5 of the paper: NoPE of seed s against NoPE of the next seed (the NoPE' reference) and
# against the other PEs of seed s, on the test split (lengths beyond training).
for task in copy_repeat reverse_2x; do
  for i in 0 1 2; do
    seed=${SEEDS[$i]} other=${SEEDS[$(( (i + 1) % 3 ))]}
    compare=$RUNS/$task/nope/$other
    for pe in t5 alibi rotary ape; do compare+=",$RUNS/$task/$pe/$seed"; done
    "$PYTHON" -m lenggen.analysis.attention_similarity --reference="$RUNS/$task/nope/$seed" \
      --compare="$compare" --examples_per_length=10 --split=test \
      --output_dir="$OUT/attention_similarity/$task/seed_$seed"
  done
done
