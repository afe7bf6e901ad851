r"""Which XLA CPU configuration trains fastest here: 1 or 2 devices, with or without oneDNN.

XLA_FLAGS are read when JAX starts, so each variant is its own subprocess. On a shared machine
timings drift with the load, so the variants are interleaved (each round runs every variant once,
in a rotated order) and the report gives each variant's median over rounds and its ratio to the
configuration listed first (by default: 1 device, XLA's default flags) of the same size.

  python -m benchmarks.cpu_flags --rounds=3          # writes benchmarks/results/cpu_flags.md
  python -m benchmarks.cpu_flags --sizes=quickstart --rounds=1 --out=/tmp/x.md

A variant's time is lenggen's jitted train step (benchmarks/train_throughput.py's `measure_jax`,
configs/quickstart.py's recipe, NoPE, batch 64 x 64), the best of `--repeats` windows of
`--steps` steps after compilation and warm-up.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

ONEDNN = (
    "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_onednn=true "
    "--xla_cpu_experimental_onednn_custom_call=true"
)
# name -> (devices, oneDNN flags on, model dtype)
VARIANTS = {
    "1 device": (1, False, "float32"),
    "2 devices": (2, False, "float32"),
    "1 device + oneDNN": (1, True, "float32"),
    "2 devices + oneDNN": (2, True, "float32"),
    "1 device + oneDNN + bf16": (1, True, "bfloat16"),
    "2 devices + oneDNN + bf16": (2, True, "bfloat16"),
}
BASELINE = "1 device"


def xla_flags(devices: int, onednn: bool) -> str:
    """The XLA_FLAGS of one variant."""
    flags = [f"--xla_force_host_platform_device_count={devices}"] if devices > 1 else []
    return " ".join(flags + ([ONEDNN] if onednn else []))


def worker(size: str, dtype: str, steps: int, repeats: int) -> None:
    """Times one variant in this process (XLA_FLAGS already set) and prints ms/step as JSON."""
    from benchmarks import train_throughput as tt

    config = tt.case_config(size, "nope", 0.0)
    config.model.dtype = dtype
    batch = tt.synthetic_batch(64, 64, 32)
    run = tt.measure_jax(config, 32, batch, check_steps=2, warmup=2, steps=steps, repeats=repeats)
    print(json.dumps(dict(ms=1e3 * min(run["step_seconds"]), devices=run["devices"])))


def time_variant(name: str, size: str, steps: int, repeats: int) -> float:
    devices, onednn, dtype = VARIANTS[name]
    env = dict(os.environ, XLA_FLAGS=xla_flags(devices, onednn))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.cpu_flags",
            "--worker",
            f"--sizes={size}",
            f"--dtype={dtype}",
            f"--steps={steps}",
            f"--repeats={repeats}",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    reply = json.loads(out.stdout.strip().splitlines()[-1])
    if reply["devices"] != devices:
        raise RuntimeError(f"{name}: expected {devices} devices, JAX saw {reply['devices']}")
    return reply["ms"]


def report(times: dict, args, load: tuple) -> str:
    lines = [
        "# XLA CPU configurations: train step time (ms), interleaved runs",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"shared with other jobs (load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "at the end). Ratios compare variants measured in the same rounds.",
        "",
        f"Command: `python -m benchmarks.cpu_flags --sizes={args.sizes} --rounds={args.rounds} "
        f'--steps={args.steps} --repeats={args.repeats} --variants="{args.variants}"`. '
        "NoPE, batch 64 x 64, vocabulary 32; "
        f"each cell: median over {args.rounds} rounds of the best of {args.repeats} windows of "
        f"{args.steps} steps. oneDNN flags: `{ONEDNN}`.",
        "",
        "| size | variant | ms/step (median) | all rounds | speed-up vs the size's first row |",
        "|---|---|---|---|---|",
    ]
    for size, by_variant in times.items():
        baseline = BASELINE if BASELINE in by_variant else next(iter(by_variant))
        base = statistics.median(by_variant[baseline])
        for name, values in by_variant.items():
            median = statistics.median(values)
            rounds = ", ".join(f"{v:.0f}" for v in values)
            lines.append(f"| {size} | {name} | {median:.0f} | {rounds} | {base / median:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="quickstart,4x256")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "cpu_flags.md"))
    parser.add_argument("--worker", action="store_true", help="internal: time one variant")
    parser.add_argument("--dtype", default="float32", help="internal: the worker's model dtype")
    args = parser.parse_args()
    if args.worker:
        worker(args.sizes, args.dtype, args.steps, args.repeats)
        return
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"Unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}.")
    sizes = args.sizes.split(",")
    times = {size: {name: [] for name in names} for size in sizes}
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for size in sizes:
            for name in order:
                ms = time_variant(name, size, args.steps, args.repeats)
                times[size][name].append(ms)
                print(f"round {round_ + 1} {size:<10} {name:<28} {ms:7.1f} ms/step", flush=True)
    text = report(times, args, os.getloadavg())
    with open(args.out, "w") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
