r"""Runs the scale study (configs/grids/scale_study.py) one run at a time, recording each run's
CPU time, and summarises what finished.

  nice -n 19 python experiments/scale_study.py run --runs_dir=runs/scale_study
  python experiments/scale_study.py summarize

`--only=GLOBS` (','-joined run-name globs, as lenggen.sweep's) runs a subset of the grid.
`run` trains the grid's runs in its order (cheapest first), each as
`python -m lenggen.main ...` in RUNS_DIR/<name>, skipping runs already recorded. After each run
it writes OUT/runs/<name with '/' as '__'>.json: the run's name, PE and point, its config (the
workdir's config.json), its CPU time (user and system seconds of the child process and its
threads, from os.wait4's rusage: on a shared machine wall time says more about the neighbours
than about the run, so both are kept), wall time, and exact match by length on the validation
split (the training lengths) and the test split (beyond them). A run interrupted with the
runner resumes from its newest checkpoint next time; the CPU time of an attempt the runner did
not see end is lost, which the record says (`timing_complete`).

`summarize` reads every record in OUT/runs and writes OUT/summary.csv, OUT/summary.md (one row
per run) and OUT/scale_study.png (exact match beyond the training lengths against model size and
against training steps, one line per PE; other tasks or numbers of symbols get their own plot).

Exit status: 0 done; 1 some run failed (the others still ran); 2 bad input, nothing ran.
"""

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script: the grid file imports lenggen from the checkout.
    sys.path.insert(0, REPO)

from lenggen import config_args, grid, tasks  # noqa: E402
from lenggen.data import tokenizer  # noqa: E402
from lenggen.report import paper  # noqa: E402

GRID = os.path.join(REPO, "configs", "grids", "scale_study.py")
OUT = os.path.join(REPO, "docs", "results", "scale_study")
LOG_FILE = "study.log"
ATTEMPTS_FILE = "study_attempts.jsonl"
CSV_FIELDS = (
    "name",
    "task",
    "num_symbols",
    "pe",
    "point",
    "size",
    "parameters",
    "num_steps",
    "learning_rate",
    "examples_seen",
    "in_distribution",
    "beyond",
    "cpu_seconds",
    "wall_seconds",
    "timing_complete",
)


# The paper's models (docs/paper.md, "Model" and "Training"): ~109.6M weights (24.65M of them the
# T5 vocabulary's embeddings; counted as count_parameters counts, the PE table aside), trained
# 40,000 steps of batch 64. The plot marks its numbers there, at the end of their dotted lines.
PAPER_PARAMETERS = 109_600_000
PAPER_STEPS = 40_000


class StudyError(ValueError):
    """Bad input: a missing grid or output folder, a malformed record."""


def load_grid(arg: str | None = None):
    """The scale-study grid module and its runs."""
    module = config_args.load_file(GRID, "lenggen_scale_study_grid")
    return module, module.get_grid(arg)


def record_path(out: str, name: str) -> str:
    return os.path.join(out, "runs", name.replace("/", "__") + ".json")


def _point_of(name: str) -> str:
    """`copy_repeat/t5+m2x128_s2000_lr1em3/256788` -> `m2x128_s2000_lr1em3`."""
    return name.split("/")[1].partition("+")[2]


def count_parameters(model: dict, vocab_size: int) -> int:
    """Weights of the decoder (tied embedding, per-layer attention, FFN and two norm scales,
    final norm); PE parameters (T5's table: 32 x heads) are left out, so T5 and NoPE compare at
    one size."""
    d, inner = model["d_model"], model["num_heads"] * model["d_kv"]
    per_layer = 4 * d * inner + 2 * d * model["d_ff"] + 2 * d
    return model["num_layers"] * per_layer + vocab_size * d + d


def attempts_cpu(workdir: str) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, attempts) summed over WORKDIR/ATTEMPTS_FILE."""
    path = os.path.join(workdir, ATTEMPTS_FILE)
    if not os.path.exists(path):
        return 0.0, 0.0, 0
    with open(path) as handle:
        attempts = [json.loads(line) for line in handle if line.strip()]
    cpu = sum(a["user_seconds"] + a["system_seconds"] for a in attempts)
    return cpu, sum(a["wall_seconds"] for a in attempts), len(attempts)


def _resumes(workdir: str) -> int:
    """How many times lenggen.main resumed this workdir (its metrics.jsonl 'resumed' events)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as handle:
        return sum('"resumed"' in line for line in handle)


def portable(config: dict, workdir: str) -> dict:
    """`config` with the workdir in its provenance command relative to the repository root:
    records are committed, and an absolute path names only this machine's checkout."""
    command = (config.get("provenance") or {}).get("command")
    if not command:
        return config
    relative = os.path.relpath(os.path.abspath(workdir), REPO)
    provenance = dict(
        config["provenance"], command=command.replace(os.path.abspath(workdir), relative)
    )
    return dict(config, provenance=provenance)


def make_record(name: str, workdir: str, overrides: dict[str, Any]) -> dict:
    """The study's record of a finished run, from its workdir."""
    with open(os.path.join(workdir, "config.json")) as handle:
        config = portable(json.load(handle), workdir)
    with open(os.path.join(workdir, "results.json")) as handle:
        results = json.load(handle)
    cpu, wall, attempts = attempts_cpu(workdir)
    task = tasks.get(config["task"]["name"], **config["task"]["options"])
    vocab_size = tokenizer.Tokenizer.from_task(task).vocab_size
    model = config["model"]
    splits = results["splits"]
    return {
        "name": name,
        "task": config["task"]["name"],
        "num_symbols": config["task"]["options"].get("num_symbols"),
        "pe": model["pe"]["name"],
        "point": _point_of(name),
        "size": f"{model['num_layers']}x{model['d_model']}",
        "parameters": count_parameters(model, vocab_size),
        "num_steps": config["train"]["num_steps"],
        "learning_rate": config["train"]["learning_rate"],
        "examples_seen": config["train"]["num_steps"] * config["train"]["batch_size"],
        "best_step": results.get("step"),
        "in_distribution": splits["validation"]["overall"],
        "beyond": splits["test"]["overall"],
        "by_length": {
            split: {k: v["exact_match"] for k, v in splits[split]["by_length"].items()}
            for split in ("validation", "test")
        },
        "cpu_seconds": round(cpu, 1),
        "wall_seconds": round(wall, 1),
        # Each attempt after the first resumed the workdir; more resumes than recorded attempts
        # after the first mean an attempt ended unseen (the runner was killed): time lost.
        "timing_complete": attempts >= 1 and _resumes(workdir) <= attempts - 1,
        "overrides": overrides,
        "config": config,
    }


def run_one(argv: list[str], workdir: str, env: dict[str, str]) -> int:
    """Runs `argv` to its end, appending its rusage to WORKDIR/ATTEMPTS_FILE; its exit status."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, LOG_FILE), "a") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n")
        log.flush()
        started = time.monotonic()
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        # wait4 reaps the child and returns its own rusage (its threads included), not the
        # sum over all children that RUSAGE_CHILDREN would give.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    attempt = {
        "ended": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "exit": process.returncode,
        "user_seconds": usage.ru_utime,
        "system_seconds": usage.ru_stime,
        "wall_seconds": time.monotonic() - started,
        "max_rss_kib": usage.ru_maxrss,
    }
    with open(os.path.join(workdir, ATTEMPTS_FILE), "a") as handle:
        handle.write(json.dumps(attempt) + "\n")
    return process.returncode


def command_run(args: argparse.Namespace) -> int:
    try:
        _, runs = load_grid(args.grid_arg)
        runs = grid.select(runs, args.only)
    except ValueError as error:
        raise StudyError(f"configs/grids/scale_study.py: {error}") from None
    env = dict(os.environ)
    env.setdefault(
        "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.abspath(args.runs_dir), ".jax_cache")
    )
    failed = []
    for index, run in enumerate(runs, 1):
        path = record_path(args.out, run.name)
        if os.path.exists(path):
            continue
        workdir = os.path.abspath(os.path.join(args.runs_dir, run.name))
        argv = [sys.executable, "-m", "lenggen.main", *run.flags(workdir)]
        print(f"[{time.strftime('%H:%M:%S')}] {index}/{len(runs)} {run.name}", flush=True)
        if not os.path.exists(os.path.join(workdir, "results.json")):
            code = run_one(argv, workdir, env)
            if code != 0:
                print(f"  FAILED (exit {code}); see {workdir}/{LOG_FILE}", flush=True)
                failed.append(run.name)
                continue
        record = make_record(run.name, workdir, dict(run.overrides))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            json.dump(record, handle, indent=1, sort_keys=True)
            handle.write("\n")
        print(
            f"  in distribution {record['in_distribution']:.3f}, beyond "
            f"{record['beyond']:.3f}, CPU {record['cpu_seconds']:.0f} s, wall "
            f"{record['wall_seconds']:.0f} s",
            flush=True,
        )
    own = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"Done: {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; the "
        f"runner itself used {own.ru_utime + own.ru_stime:.1f} CPU s.",
        flush=True,
    )
    return 1 if failed else 0


def load_records(out: str) -> list[dict]:
    """Every record under OUT/runs, in file-name order."""
    folder = os.path.join(out, "runs")
    if not os.path.isdir(folder):
        raise StudyError(f"No records in {folder}: run `experiments/scale_study.py run` first.")
    records = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as handle:
                record = json.load(handle)
            # Records of runners older than the task and symbols fields: read from the config.
            record.setdefault("task", record["config"]["task"]["name"])
            record.setdefault("num_symbols", record["config"]["task"]["options"].get("num_symbols"))
            records.append(record)
    if not records:
        raise StudyError(f"No records in {folder}: run `experiments/scale_study.py run` first.")
    return records


def write_summary(records: list[dict], out: str) -> None:
    """OUT/summary.csv and OUT/summary.md (one row per record), and one plot per (task, number
    of symbols), named by `plot_name`."""
    rows = sorted(
        records,
        key=lambda r: (
            r["task"],
            r["num_symbols"] or 0,
            r["parameters"],
            r["num_steps"],
            r["learning_rate"],
            r["pe"],
        ),
    )
    with open(os.path.join(out, "summary.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| task | symbols | size | params | steps | lr | PE | in distribution (2-20) | "
        "beyond (21-40) | CPU min | wall min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        timing = "" if r["timing_complete"] else " (partial)"
        lines.append(
            f"| {r['task']} | {r['num_symbols']} | {r['size']} | {r['parameters']} | "
            f"{r['num_steps']} | "
            f"{r['learning_rate']:g} | {r['pe']} | {r['in_distribution']:.3f} | "
            f"{r['beyond']:.3f} | {r['cpu_seconds'] / 60:.1f}{timing} | "
            f"{r['wall_seconds'] / 60:.1f} |"
        )
    with open(os.path.join(out, "summary.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    for task in sorted({r["task"] for r in rows}):
        for symbols in sorted({r["num_symbols"] for r in rows if r["task"] == task}):
            mine = [r for r in rows if r["task"] == task and r["num_symbols"] == symbols]
            plot(
                mine,
                os.path.join(out, plot_name(task, symbols)),
                f"{task}, {symbols} symbols",
                paper.HEADLINE.get(task, {}),
            )


def plot_name(task: str, symbols: int) -> str:
    """`scale_study.png` for Copy-Repeat with the grid's 512 symbols, else named by both."""
    if (task, symbols) == ("copy_repeat", 512):
        return "scale_study.png"
    return f"scale_study_{task}_v{symbols}.png"


def plot(rows: list[dict], path: str, title: str, reference: dict[str, float]) -> None:
    """Left: exact match beyond the training lengths vs parameters (each size at its fewest
    steps and that size's most common learning rate); right: vs training steps, one line per
    (PE, size). One colour per PE; `reference` (PE -> the paper's number) dotted, with a star
    at the paper's size (PAPER_PARAMETERS) and steps (PAPER_STEPS)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "nope": "tab:blue",
        "t5": "tab:orange",
        "alibi": "tab:green",
        "rotary": "tab:red",
        "ape": "tab:purple",
        "fire": "tab:brown",
    }
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    by_size: dict[str, list[dict]] = {}
    for r in rows:
        by_size.setdefault(r["size"], []).append(r)
    for pe in sorted({r["pe"] for r in rows}):
        colour = colours.get(pe, "black")
        if pe in reference:
            for axis, at in ((left, PAPER_PARAMETERS), (right, PAPER_STEPS)):
                axis.axhline(
                    reference[pe],
                    color=colour,
                    linestyle=":",
                    linewidth=1,
                    label=f"{pe}, paper (12x768, 40k steps)",
                )
                axis.plot([at], [reference[pe]], "*", color=colour, markersize=10)
        points = []
        for entries in by_size.values():
            mine = [r for r in entries if r["pe"] == pe]
            if not mine:
                continue
            rates = [r["learning_rate"] for r in entries]
            rate = max(set(rates), key=rates.count)
            fewest = min(r["num_steps"] for r in mine)
            chosen = [r for r in mine if r["num_steps"] == fewest and r["learning_rate"] == rate]
            if chosen and chosen[0]["parameters"]:
                points.append((chosen[0]["parameters"], chosen[0]["beyond"]))
        if points:
            points.sort()
            left.plot(*zip(*points), "o-", color=colour, label=pe)
        for marker, (size, entries) in zip("osD^v", sorted(by_size.items())):
            mine = sorted((r["num_steps"], r["beyond"]) for r in entries if r["pe"] == pe)
            if mine:
                right.plot(
                    *zip(*mine),
                    marker=marker,
                    color=colour,
                    label=f"{pe} {size}",
                    linestyle="-" if pe == "nope" else "--",
                )
    left.set_xscale("log")
    left.set_xlabel("parameters (PE table excluded)")
    left.set_ylabel("exact match, lengths 21-40 (trained on 2-20)")
    left.set_title(f"{title}: vs model size")
    right.set_xscale("log", base=2)
    right.set_xlabel("training steps (batch 64)")
    right.set_title("vs training steps (lines: PE x size)")
    for axis in (left, right):
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train the pending runs, recording each")
    run.add_argument("--runs_dir", default=os.path.join(REPO, "runs", "scale_study"))
    run.add_argument("--grid_arg", default=None, help="the grid's argument, e.g. points=4")
    run.add_argument("--out", default=OUT)
    run.add_argument(
        "--only", default=None, help="','-joined run-name globs (as lenggen.sweep's --only)"
    )
    summary = sub.add_parser("summarize", help="summary table and plot from the records")
    summary.add_argument("--out", default=OUT)
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return command_run(args)
        write_summary(load_records(args.out), args.out)
        print(f"Wrote {args.out}/summary.csv, summary.md, scale_study.png")
        return 0
    except StudyError as error:
        print(f"scale_study: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
