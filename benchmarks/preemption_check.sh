#!/usr/bin/env bash
# Step time of a 2-process CPU run (launch/multiprocess_local.sh, 2 processes x 2 virtual
# devices) with the per-step preemption check of a given lenggen.train.preemption: the
# committed one ("after": JAX's preemption sync point) against the one of git revision BEFORE
# ("before": a process_allgather of the SIGTERM flag every step). The variants alternate,
# REPEATS times each, so machine load drifts hit both alike.
#
#   benchmarks/preemption_check.sh BEFORE [REPEATS] [STEPS]     # from the repository root
#   nice -n 10 benchmarks/preemption_check.sh f0330a7 2 300
#
# Prints, per run, the median seconds per step over the log windows after the first (which
# holds the compilation), then the median of each variant and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
before="${1:?usage: $0 BEFORE_REVISION [REPEATS] [STEPS]}"
repeats="${2:-2}"
steps="${3:-300}"
source launch/env.sh >/dev/null
module=lenggen/train/preemption.py
saved="$(mktemp)"
cp "$module" "$saved"
trap 'cp "$saved" "$module"; rm -f "$saved"' EXIT
root="$(mktemp -d)"
results=()
for ((r = 0; r < repeats; r++)); do
  for variant in before after; do
    if [ "$variant" = before ]; then git show "$before:$module" > "$module"; else cp "$saved" "$module"; fi
    workdir="$root/$variant-$r"
    LENGGEN_COORDINATOR_PORT=$((20000 + RANDOM % 20000)) launch/multiprocess_local.sh 2 \
      configs/quickstart.py "$workdir" --mode=train --config.train.num_steps="$steps" \
      --config.train.log_every=50 --config.train.eval_every=100000 \
      --config.train.checkpoint_every=100000 --config.data.dir="$root/data" >/dev/null
    seconds="$(python - "$workdir/metrics.jsonl" <<'PY'
import json, statistics, sys
rates = [r["steps_per_second"] for r in map(json.loads, open(sys.argv[1]))
         if r.get("event") == "train"]
print(f"{statistics.median(1 / rate for rate in rates[1:]):.5f}")
PY
)"
    echo "$variant run $r: $seconds s/step"
    results+=("$variant $seconds")
  done
done
printf '%s\n' "${results[@]}" | python -c '
import statistics, sys
runs = [line.split() for line in sys.stdin]
b, a = (statistics.median(float(s) for name, s in runs if name == v) for v in ("before", "after"))
print(f"median s/step: before {b:.4f}, after {a:.4f}; before/after = {b / a:.3f}")
'
rm -rf "$root"
