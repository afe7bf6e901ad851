r"""Runs a grid of experiments (lenggen.grid), one workdir each, resuming where it stopped.

  python -m lenggen.sweep --grid=configs/grids/paper.py --runs_dir=runs --mode=print
  XLA_FLAGS=--xla_force_host_platform_device_count=2 \
      python -m lenggen.sweep --grid=configs/grids/cpu_mini.py --runs_dir=runs/cpu_mini
  python -m lenggen.sweep --grid=configs/grids/paper.py:tasks=maths --only='addition/*/*'
  python -m lenggen.sweep --grid=configs/grids/paper.py --runs_dir=runs --mode=slurm | sh

Each run's workdir is RUNS_DIR/<name> (`<task>/<pe>/<seed>`). Modes:
  local  runs the pending runs here, `--parallel` at a time, each as
         `python -m lenggen.main ...` with its output in WORKDIR/sweep.log; prints progress
         (k/N, ETA from the runs finished so far) and the log tail of any run that fails.
  print  prints one launch command per pending run, nothing else.
  slurm  prints the `sbatch` command of a SLURM job array over the pending runs
         (launch/slurm_sweep.sbatch; `--parallel`, if given, caps the array tasks running at
         once). Array task i runs the grid's run i with `--task_index=i`.
With `--task_index=I` the sweep runs only the I-th run of the grid (after `--only`), in this
process (it becomes `python -m lenggen.main`, so signals and the exit status are the run's);
a complete run exits 0 at once; `--mode=print` prints its command instead.

Config paths in a grid are relative to the repository root; runs start there. A run is complete
when its workdir holds results.json and a config.json whose training keys
(`workdir.TRAINING_KEYS`) equal the run's config (`run_status`): complete runs are skipped, so
rerunning a sweep resumes it (an interrupted run resumes from its newest checkpoint). A workdir
holding a different experiment stops the sweep before anything starts.

Exit status: 0 every run succeeded; 1 some run failed (the others still ran); 2 bad input (grid,
flags, a workdir conflict), nothing ran; 75 interrupted (SIGTERM/SIGINT: the runs were sent
SIGTERM, on which lenggen.main checkpoints; a second signal kills them). With --task_index,
lenggen.main's own status.
"""

import dataclasses
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

from absl import app, flags

from lenggen import grid, rundir

LOG_FILE = "sweep.log"
MODES = ("local", "print", "slurm")
SLURM_SCRIPT = "launch/slurm_sweep.sbatch"
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 75
PENDING = ("new", "resume")
# lenggen.main's exit statuses, named in the progress lines.
_MAIN_EXIT_REASONS = {
    2: "bad input",
    3: "diverged",
    4: "no restorable checkpoint",
    75: "preempted",
    -15: "stopped by SIGTERM",
    -9: "killed (SIGKILL)",
}


class SweepError(grid.GridError):
    """A grid, run, flag or workdir that cannot work; raised before any run starts."""


@dataclasses.dataclass(frozen=True)
class Planned:
    """A run, its workdir, and what the sweep does with it: status is one of `done` (skip),
    `resume` (its workdir has a matching config but no results), `new` or `conflict`."""

    run: grid.Run
    workdir: str
    status: str
    detail: str = ""


def run_status(workdir: str, config: Mapping[str, Any]) -> tuple[str, str]:
    """What a run's workdir holds: `("new", "")`, `("resume", "")` (the run's config, no
    results yet), `("done", "")` (results.json written: the run is complete) or
    `("conflict", "key, key, ...")` (another experiment's config; training keys differ).

    Args:
      config: the run's config as JSON data (`json.loads(config.to_json())`).
    """
    run_dir = rundir.RunDir(workdir)  # Read through the run-directory module (or gs://).
    saved = run_dir.config()
    if saved is None:
        return "new", ""
    differences = rundir.differing_keys(saved, config)
    if differences:
        return "conflict", ", ".join(differences[:6])
    if run_dir.has(rundir.RESULTS_FILE):
        return "done", ""
    return "resume", ""


def plan(runs: Iterable[grid.Run], runs_dir: str) -> list[Planned]:
    """Decides, per run, whether it is complete, resumable, new, or in a conflicting workdir.

    Raises:
      SweepError: some workdir holds a different experiment (naming up to five).
    """
    planned = []
    for run in runs:
        workdir = os.path.join(runs_dir, run.name)
        current = json.loads(grid.resolve_config(run).to_json())
        planned.append(Planned(run, workdir, *run_status(workdir, current)))
    conflicts = [p for p in planned if p.status == "conflict"]
    if conflicts:
        shown = "; ".join(f"{p.workdir} (differs in {p.detail})" for p in conflicts[:5])
        raise SweepError(
            f"{len(conflicts)} workdir(s) hold a different experiment: {shown}"
            f"{' ...' if len(conflicts) > 5 else ''}. Move them away or use another --runs_dir."
        )
    return planned


def command(run: grid.Run, workdir: str, python: str = "python") -> list[str]:
    """The command line that trains and evaluates `run` in `workdir`."""
    return [python, "-m", "lenggen.main", *run.flags(workdir)]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _tail(path: str, lines: int = 15) -> str:
    with open(path, errors="replace") as handle:
        return "".join(handle.readlines()[-lines:])


@dataclasses.dataclass
class _Running:
    item: Planned
    process: subprocess.Popen
    log: TextIO
    started: float


def main_command(item: Planned) -> list[str]:
    """`python -m lenggen.main ...` for `item`, with this interpreter and an absolute workdir."""
    return command(item.run, os.path.abspath(item.workdir), sys.executable)


def _start(
    item: Planned, env: Mapping[str, str], argv_for: Callable[[Planned], list[str]]
) -> _Running:
    """Starts `item` in its own session, so a Ctrl-C reaches the sweep only (which then stops
    its runs with SIGTERM: lenggen.main checkpoints on SIGTERM, not on SIGINT)."""
    os.makedirs(item.workdir, exist_ok=True)
    argv = argv_for(item)
    log = open(os.path.join(item.workdir, LOG_FILE), "a")
    log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n")
    log.flush()
    process = subprocess.Popen(
        argv,
        cwd=grid.REPO,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return _Running(item, process, log, time.monotonic())


def run_local(
    planned: Sequence[Planned],
    *,
    parallel: int = 1,
    env: Mapping[str, str] | None = None,
    out: TextIO = sys.stdout,
    argv_for: Callable[[Planned], list[str]] = main_command,
) -> int:
    """Runs the pending runs as subprocesses, `parallel` at a time; returns the exit status.

    Each run's stdout and stderr are appended to WORKDIR/sweep.log. The ETA is the mean wall
    time of the runs finished in this invocation times the runs left, divided by `parallel`.
    `argv_for` gives a run's command line (tests stand in a short one).
    """
    if parallel < 1:
        raise SweepError(f"--parallel={parallel}: expected a positive number of runs at a time.")
    env = os.environ if env is None else env
    pending = [p for p in planned if p.status in ("new", "resume")]
    total = len(pending)

    def say(message: str) -> None:
        print(message, file=out, flush=True)

    say(
        f"Sweep: {len(planned)} runs, {len(planned) - total} complete (skipped), {total} to "
        f"run, {parallel} at a time."
    )
    queue, running, durations, failed = list(pending), [], [], []
    stop, forwarded = [], 0  # signals received; how many of them the runs were sent
    previous = {
        s: signal.signal(s, lambda number, _: stop.append(number))
        for s in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        while queue or running:
            while queue and len(running) < parallel and not stop:
                running.append(_start(queue.pop(0), env, argv_for))
                say(
                    f"[start {total - len(queue)}/{total}] {running[-1].item.run.name} "
                    f"({running[-1].item.status})"
                )
            if len(stop) > forwarded:
                # First signal: SIGTERM (lenggen.main checkpoints and exits); a second: SIGKILL.
                forwarded = len(stop)
                for entry in running:
                    entry.process.send_signal(signal.SIGTERM if forwarded == 1 else signal.SIGKILL)
            for entry in [e for e in running if e.process.poll() is not None]:
                running.remove(entry)
                entry.log.close()
                seconds, code = time.monotonic() - entry.started, entry.process.returncode
                if code == 0:
                    durations.append(seconds)
                else:
                    failed.append(entry.item.run.name)
                left = len(queue) + len(running)
                eta = (
                    _duration(sum(durations) / len(durations) * left / parallel)
                    if durations
                    else "unknown"
                )
                status = (
                    "ok"
                    if code == 0
                    else (f"FAILED (exit {code}: {_MAIN_EXIT_REASONS.get(code, 'error')})")
                )
                say(
                    f"[{total - left}/{total}] {entry.item.run.name}: {status} in "
                    f"{_duration(seconds)}; {left} left" + (f", ETA {eta}" if left else "")
                )
                if code != 0:
                    log_path = os.path.join(entry.item.workdir, LOG_FILE)
                    say(f"---- last lines of {log_path}\n{_tail(log_path).rstrip()}\n----")
            if stop and not running:
                break
            time.sleep(0.2)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if stop:
        say(
            f"Interrupted after {len(durations)} successful run(s); {len(queue)} not started. "
            "Rerun the same command to resume."
        )
        return EXIT_INTERRUPTED
    say(
        f"Sweep finished: {len(durations)} succeeded, {len(failed)} failed"
        f"{': ' + ', '.join(failed) if failed else ''}."
    )
    return EXIT_FAILED if failed else 0


def child_environment(runs_dir: str, jax_cache: bool) -> dict[str, str]:
    """This process's environment, plus JAX's persistent compilation cache in
    RUNS_DIR/.jax_cache (unless disabled or already set): seeds of one (task, PE) compile the
    same programs, so all but the first load them from disk."""
    env = dict(os.environ)
    if jax_cache:
        env.setdefault(
            "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.abspath(runs_dir), ".jax_cache")
        )
    return env


def print_commands(planned: Sequence[Planned], out: TextIO = sys.stdout) -> None:
    """One shell command per pending run (complete runs are left out; a count goes to stderr)."""
    pending = [p for p in planned if p.status in ("new", "resume")]
    print(
        f"# {len(pending)} of {len(planned)} runs to launch ({len(planned) - len(pending)} "
        "complete). Run from the repository root.",
        file=sys.stderr,
    )
    for item in pending:
        print(shlex.join(command(item.run, item.workdir)), file=out)


# ---------------------------------------------------------------- SLURM job arrays


def array_spec(indices: Sequence[int]) -> str:
    """SLURM's `--array` list of `indices`, consecutive ones as ranges: [0, 1, 2, 5, 7, 8] ->
    `0-2,5,7-8`."""
    parts, start = [], None
    for position, index in enumerate(indices):
        if start is None:
            start = index
        if position + 1 == len(indices) or indices[position + 1] != index + 1:
            parts.append(str(index) if index == start else f"{start}-{index}")
            start = None
    return ",".join(parts)


def grid_digest(runs: Sequence[grid.Run]) -> str:
    """12 hex digits naming the runs in order (names, configs, overrides): an array task checks
    that the grid it expands is the one the array was submitted for."""
    text = json.dumps([[run.name, run.config, run.override_flags()] for run in runs])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def slurm_command(
    planned: Sequence[Planned], grid_flags: Sequence[str], max_running: int | None = None
) -> list[str] | None:
    """The `sbatch` command of a job array with one task per pending run (array index = the
    run's index in `planned`), or None when no run is pending.

    Args:
      grid_flags: the sweep flags that select the runs (`--grid`, `--runs_dir`, `--only`),
        passed on to every task with the grid's digest.
      max_running: array tasks running at once (`%N`), or None for the cluster's limit.
    """
    indices = [i for i, item in enumerate(planned) if item.status in PENDING]
    if not indices:
        return None
    array = array_spec(indices) + (f"%{max_running}" if max_running else "")
    return [
        "sbatch",
        f"--array={array}",
        SLURM_SCRIPT,
        *grid_flags,
        f"--expect_grid={grid_digest([item.run for item in planned])}",
    ]


def run_task(
    runs: Sequence[grid.Run],
    index: int,
    runs_dir: str,
    *,
    expect_grid: str | None,
    print_only: bool,
    jax_cache: bool,
) -> int:
    """Runs `runs[index]` in this process (exec), prints its command, or returns 0 if complete.

    Raises:
      SweepError: `index` out of range, a grid that changed since the array was submitted
        (`expect_grid`), or a workdir holding another experiment.
    """
    if expect_grid and grid_digest(runs) != expect_grid:
        raise SweepError(
            f"the grid's runs changed since this array was submitted (digest "
            f"{grid_digest(runs)}, expected {expect_grid}): submit it again."
        )
    if not 0 <= index < len(runs):
        raise SweepError(
            f"--task_index={index}: expected 0 <= index < {len(runs)} (the "
            "grid's runs after --only)."
        )
    (item,) = plan([runs[index]], runs_dir)
    if item.status == "done":
        print(
            f"{item.run.name}: complete ({item.workdir}/{rundir.RESULTS_FILE}); nothing to run.",
            flush=True,
        )
        return 0
    if print_only:
        print(shlex.join(command(item.run, item.workdir)), flush=True)
        return 0
    argv = main_command(item)
    os.makedirs(item.workdir, exist_ok=True)
    env = child_environment(runs_dir, jax_cache)
    print(f"{item.run.name} ({item.status}): {shlex.join(argv)}", flush=True)
    os.chdir(grid.REPO)
    os.execve(argv[0], argv, env)  # Signals and the exit status are lenggen.main's own.
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- command line


def define_flags() -> None:
    """The command line's flags (defined when run as a program, so that `--help` lists them as
    this program's and importing the module defines none)."""
    flags.DEFINE_string(
        "grid", None, "Grid file, optionally with an argument: configs/grids/paper.py:tasks=maths."
    )
    flags.DEFINE_string("runs_dir", "runs", "Each run's workdir is RUNS_DIR/<name>.")
    flags.DEFINE_enum(
        "mode",
        "local",
        MODES,
        "local: run here; print: print the commands; "
        "slurm: print the sbatch command of a job array over the pending runs.",
    )
    flags.DEFINE_string(
        "only",
        None,
        "Comma-separated glob patterns on run names "
        "(<task>/<pe>/<seed>), e.g. 'copy/*/*,reverse_2x/t5/*'.",
    )
    flags.DEFINE_integer(
        "parallel",
        None,
        "local mode: runs at a time (default 1); slurm "
        "mode: array tasks running at once (default: no cap).",
    )
    flags.DEFINE_bool(
        "jax_cache",
        True,
        "Share JAX's persistent compilation cache (RUNS_DIR/.jax_cache) between runs.",
    )
    flags.DEFINE_integer(
        "task_index",
        None,
        "Run only the grid's run of this index (a SLURM "
        "array task: --task_index=$SLURM_ARRAY_TASK_ID).",
    )
    flags.DEFINE_string(
        "expect_grid",
        None,
        "With --task_index: the grid's digest when the "
        "array was submitted; a different grid is refused (exit 2).",
    )


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    values = flags.FLAGS
    try:
        if not values.grid:
            raise SweepError("--grid is required, e.g. --grid=configs/grids/cpu_mini.py.")
        runs = grid.select(grid.load_grid(values.grid), values.only)
        if values.task_index is not None:
            if values.mode == "slurm":
                raise SweepError("--task_index runs one run: use --mode=local or --mode=print.")
            return run_task(
                runs,
                values.task_index,
                values.runs_dir,
                expect_grid=values.expect_grid,
                print_only=values.mode == "print",
                jax_cache=values.jax_cache,
            )
        planned = plan(runs, values.runs_dir)
        if values.mode == "print":
            print_commands(planned)
            return 0
        if values.mode == "slurm":
            selection = [f"--grid={values.grid}", f"--runs_dir={values.runs_dir}"]
            if values.only:
                selection.append(f"--only={values.only}")
            if values.parallel is not None and values.parallel < 1:
                raise SweepError(
                    f"--parallel={values.parallel}: expected a positive number "
                    "of array tasks at a time."
                )
            sbatch = slurm_command(planned, selection, values.parallel)
            pending = sum(item.status in PENDING for item in planned)
            print(
                f"# {pending} of {len(planned)} runs to submit ({len(planned) - pending} "
                "complete). Submit from the repository root.",
                file=sys.stderr,
            )
            if sbatch:
                print(shlex.join(sbatch))
            return 0
        env = child_environment(values.runs_dir, values.jax_cache)
        parallel = 1 if values.parallel is None else values.parallel
        return run_local(planned, parallel=parallel, env=env)
    except grid.GridError as error:
        print(f"lenggen.sweep: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    # Grid files import lenggen.grid, never this module: running it as __main__ leaves one copy
    # of every class, and the flags below belong to this program.
    define_flags()
    app.run(main)
