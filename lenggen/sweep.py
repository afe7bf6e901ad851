r"""Runs a grid of experiments (task x PE x seed), one workdir each, resuming where it stopped.

  python -m lenggen.sweep --grid=configs/grids/paper.py --runs_dir=runs --mode=print
  XLA_FLAGS=--xla_force_host_platform_device_count=2 \
      python -m lenggen.sweep --grid=configs/grids/cpu_mini.py --runs_dir=runs/cpu_mini
  python -m lenggen.sweep --grid=configs/grids/paper.py:tasks=maths --only='addition/*/*'

A grid file (like a config file, loaded by path, with an optional `:key=value,...` argument) has
`get_grid(arg)` returning a list of `Run`s; `product` builds the usual task x PE x seed cross
product. Run `name`s are `<task>/<pe>/<seed>` (`<task>/<pe>+<variant>/<seed>` for a variant of a
PE, e.g. `rotary+randomized`) and each run's workdir is `RUNS_DIR/<name>`. `parse_pes` reads a
grid argument naming PEs (`pes=nope+t5+fire`); `randomized_product` makes runs with randomized
positions (Ruoss et al. 2023), set up per task from its longest test prompt and target.

Modes:
  local  runs the pending runs here, `--parallel` at a time, each as
         `python -m lenggen.main ...` with its output in WORKDIR/sweep.log; prints progress
         (k/N, ETA from the runs finished so far) and the log tail of any run that fails.
  print  prints one launch command per pending run (for a cluster's job array), nothing else.

Config paths in a grid are relative to the repository root; `local` runs its subprocesses there.
A run is complete when its workdir holds results.json and a config.json whose training keys
(`workdir.TRAINING_KEYS`) equal the run's config: complete runs are skipped, so rerunning a sweep
resumes it (an interrupted run resumes from its newest checkpoint). A workdir holding a different
experiment stops the sweep before anything starts.

Exit status: 0 every run succeeded; 1 some run failed (the others still ran); 2 bad input (grid,
flags, a workdir conflict), nothing ran; 75 interrupted (SIGTERM/SIGINT: the runs were sent
SIGTERM, on which lenggen.main checkpoints; a second signal kills them).
"""

import dataclasses
import fnmatch
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from lenggen import config_args
from lenggen import tasks as tasks_lib
from lenggen import workdir as workdir_lib
from lenggen.model import positional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_FILE = "sweep.log"
MODES = ("local", "print")
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 75
# lenggen.main's exit statuses, named in the progress lines.
_MAIN_EXIT_REASONS = {2: "bad input", 3: "diverged", 4: "no restorable checkpoint",
                      75: "preempted", -15: "stopped by SIGTERM", -9: "killed (SIGKILL)"}


class SweepError(ValueError):
    """A grid, run or flag that cannot work; raised before any run starts."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One experiment of a grid.

    Attributes:
      name: `<task>/<pe>/<seed>` (`<task>/<pe>+<variant>/<seed>`); its workdir is
        RUNS_DIR/name.
      config: a config file and its argument, `configs/base.py:task=copy,pe=nope,seed=256788`.
      overrides: (dotted key, value) pairs passed as `--config.<key>=<value>`.
    """

    name: str
    config: str
    overrides: tuple[tuple[str, Any], ...] = ()

    def override_flags(self) -> list[str]:
        return [f"--config.{key}={_flag_value(value)}" for key, value in self.overrides]

    def flags(self, workdir: str) -> list[str]:
        """The `lenggen.main` flags of this run in `workdir`."""
        return [f"--config={self.config}", f"--workdir={workdir}", *self.override_flags()]


def _flag_value(value: Any) -> str:
    """A Python value as config_flags parses it (`true`, `(2, 1)`, `1e-05`)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return repr(tuple(value))
    return str(value)


def _config_arg(values: Mapping[str, Any]) -> str:
    return ",".join(f"{key}={_flag_value(value)}" for key, value in values.items())


def product(
    config_file: str,
    tasks: Sequence[str],
    pes: Sequence[str],
    seeds: Sequence[int],
    *,
    args: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    task_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    variant: str = "",
) -> list[Run]:
    """Runs for every (task, pe, seed), in that nesting order, named `<task>/<pe>/<seed>`.

    Args:
      config_file: path of a config file taking `task`, `pe` and `seed` arguments.
      args: further config arguments, e.g. `{"smoke": True}` -> `...,smoke=true`.
      overrides: `{dotted key: value}` for every run (`{"train.num_steps": 2}`).
      task_overrides: `{task: {dotted key: value}}` on top of `overrides` for one task.
      variant: names the runs `<task>/<pe>+<variant>/<seed>`, for runs whose overrides make
        them a variant of the PE (`randomized`: randomized positions), beside the plain ones.

    Raises:
      SweepError: an unknown task or PE name (listing the valid ones), or task_overrides for a
        task not in `tasks`.
    """
    for kind, given, valid in (("task", tasks, tasks_lib.names()),
                               ("positional encoding", pes, positional.names())):
        unknown = [name for name in given if name not in valid]
        if unknown:
            raise SweepError(f"Unknown {kind}(s) {unknown} in the grid. Valid: {', '.join(valid)}.")
    extra = sorted(set(task_overrides or {}) - set(tasks))
    if extra:
        raise SweepError(f"task_overrides names {extra}, not in the grid's tasks {list(tasks)}.")
    if variant and not variant.isidentifier():
        raise SweepError(f"variant={variant!r}: expected a word like 'randomized' (it names "
                         "runs <task>/<pe>+<variant>/<seed>).")
    label = f"+{variant}" if variant else ""
    runs = []
    for task, pe, seed in itertools.product(tasks, pes, seeds):
        merged = {**(overrides or {}), **(task_overrides or {}).get(task, {})}
        arg = _config_arg({"task": task, "pe": pe, "seed": seed, **(args or {})})
        runs.append(
            Run(f"{task}/{pe}{label}/{seed}", f"{config_file}:{arg}", tuple(merged.items()))
        )
    return runs


def parse_pes(text: str, argument: str, *, randomized: bool = False) -> tuple[str, ...]:
    """The PEs of a grid argument: `"nope+t5+fire"` -> `("nope", "t5", "fire")`, `""` -> `()`.

    Raises:
      SweepError: an unknown name (listing the valid ones; an empty piece is one), a repeated
        one, or with `randomized` nope (randomized positions keep their order, all nope sees);
        the message names `argument`.
    """
    if not text:
        return ()
    names = tuple(text.split("+"))
    valid = positional.names()
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise SweepError(f"Grid argument {argument}={text!r}: unknown positional encoding(s) "
                         f"{unknown}; expected names from {', '.join(valid)} joined by '+'.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SweepError(f"Grid argument {argument}={text!r} repeats {repeated}.")
    if randomized and "nope" in names:
        raise SweepError(f"Grid argument {argument}={text!r}: randomized positions change "
                         "nothing for nope (its attention sees only their order); expected "
                         "position-based PEs.")
    return names


def grid_pes(args: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A grid's `pes=` and `randomized=` arguments (`parse_pes` each): the PEs to run plainly
    and those to run with randomized positions.

    Raises:
      SweepError: as `parse_pes`, or both empty (no run).
    """
    pes = parse_pes(args["pes"], "pes")
    randomized = parse_pes(args["randomized"], "randomized", randomized=True)
    if not pes and not randomized:
        raise SweepError(
            "Grid arguments pes= and randomized= are both empty: expected some PE to run."
        )
    return pes, randomized


def randomized_overrides(
    longest_prompt: int, longest_target: int, max_new_tokens: int
) -> dict[str, int]:
    """The overrides of a randomized-positions run of a task (Ruoss et al. 2023).

    Evaluation gives each example the smallest p + B of positions drawn from [0, M), p its
    prompt's tokens, B the decoding budget (lenggen/model/positional/randomized.py): so B is
    cut to the longest test target (EOS included) rounded up to 16, as tight as the answers
    allow, which keeps evaluation's positions about as spread as training's; and M is the
    smallest power of two >= 2 (longest test prompt + B), so every test sequence and every
    decoded token gets its own position, with room to spare (docs/paper.md: M >= the longest test
    length).

    Args:
      longest_prompt, longest_target: tokens of the task's longest test prompt and target
        (EOS included).
      max_new_tokens: the grid's decoding budget (the paper's 256); B never exceeds it.
    Returns:
      `{"model.pe.randomized_max_position": M, "eval.max_new_tokens": B}`.
    """
    if min(longest_prompt, longest_target, max_new_tokens) < 1:
        raise SweepError(
            f"randomized_overrides({longest_prompt}, {longest_target}, {max_new_tokens}): "
            "expected positive token counts."
        )
    budget = min(max_new_tokens, -(-longest_target // 16) * 16)
    max_position = 1 << (2 * (longest_prompt + budget) - 1).bit_length()
    return {"model.pe.randomized_max_position": max_position, "eval.max_new_tokens": budget}


def randomized_product(
    config_file: str,
    tasks: Sequence[str],
    pes: Sequence[str],
    seeds: Sequence[int],
    test_lengths: Mapping[str, tuple[int, int]],
    max_new_tokens: int,
    *,
    task_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    **product_args: Any,
) -> list[Run]:
    """`product`'s runs with randomized positions, named `<task>/<pe>+randomized/<seed>`: each
    task's `task_overrides` plus its `randomized_overrides`.

    Args:
      test_lengths: `{task: (longest test prompt, longest test target)}` in tokens.
      max_new_tokens: the grid's decoding budget (`randomized_overrides`).
      product_args: `args` and `overrides`, as `product`.
    """
    settings = {
        task: {**(task_overrides or {}).get(task, {}),
               **randomized_overrides(*test_lengths[task], max_new_tokens)}
        for task in tasks
    }  # fmt: skip
    return product(config_file, tasks, pes, seeds, task_overrides=settings,
                   variant="randomized", **product_args)  # fmt: skip


def load_grid(spec: str) -> list[Run]:
    """The runs of grid file `spec` (`path/to/grid.py` or `path/to/grid.py:key=value,...`)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise SweepError(f"Grid file {path!r} does not exist (from --grid={spec!r}).")
    module = config_args.load_file(path, "lenggen_grid")
    if not hasattr(module, "get_grid"):
        raise SweepError(f"Grid file {path!r} has no get_grid(arg) function.")
    try:
        runs = module.get_grid(arg or None)
    except ValueError as error:  # e.g. config_args.ConfigArgumentError for a bad grid argument.
        raise SweepError(f"{path}: {error}") from None
    if not isinstance(runs, list) or not runs or not all(isinstance(r, Run) for r in runs):
        raise SweepError(
            f"{path}: get_grid() returned {type(runs).__name__} {str(runs)[:80]}; expected a "
            "non-empty list of lenggen.sweep.Run (see lenggen.sweep.product)."
        )
    names = [run.name for run in runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SweepError(f"{path}: run names must be unique; repeated: {repeated[:5]}.")
    return runs


def select(runs: Sequence[Run], only: str | None) -> list[Run]:
    """The runs whose name matches one of the comma-separated glob patterns in `only`."""
    if not only:
        return list(runs)
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(run.name, pattern) for run in runs):
            raise SweepError(
                f"--only pattern {pattern!r} matches no run. Run names are <task>/<pe>/<seed>, "
                f"e.g. {', '.join(run.name for run in runs[:3])}."
            )
    return [r for r in runs if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]


def resolve_config(run: Run) -> ml_collections.ConfigDict:
    """The config `python -m lenggen.main` builds for `run` (same parser, same overrides).

    Raises:
      SweepError: the config file is missing (paths are relative to the repository root), or
        its argument or an override is wrong (the config's own message).
    """
    path, colon, arg = run.config.partition(":")
    path = os.path.join(REPO, path)
    if not os.path.isfile(path):
        raise SweepError(f"Run {run.name}: config file {path!r} does not exist (config paths "
                         "in a grid are relative to the repository root).")
    argv = ["lenggen.sweep", f"--config={path}{colon}{arg}", *run.override_flags()]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
    try:
        values(argv)
        return values.config
    except (flags.Error, KeyError, AttributeError) as error:
        # absl wraps the config file's own error (e.g. an unknown task) in a traceback.
        cause = error.__context__ if isinstance(error, flags.Error) and error.__context__ else error
        lines = [line for line in str(cause).splitlines() if line.strip()]
        raise SweepError(f"Run {run.name} ({run.config}): {lines[-1] if lines else cause!r}") \
            from None


@dataclasses.dataclass(frozen=True)
class Planned:
    """A run, its workdir, and what the sweep does with it: status is one of `done` (skip),
    `resume` (its workdir has a matching config but no results), `new` or `conflict`."""

    run: Run
    workdir: str
    status: str
    detail: str = ""


def plan(runs: Iterable[Run], runs_dir: str) -> list[Planned]:
    """Decides, per run, whether it is complete, resumable, new, or in a conflicting workdir."""
    planned = []
    for run in runs:
        workdir = os.path.join(runs_dir, run.name)
        config_path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
        current = json.loads(resolve_config(run).to_json())
        if not os.path.exists(config_path):
            planned.append(Planned(run, workdir, "new"))
            continue
        with open(config_path) as handle:
            differences = workdir_lib.differing_keys(json.load(handle), current)
        if differences:
            planned.append(Planned(run, workdir, "conflict", ", ".join(differences[:6])))
        elif os.path.exists(os.path.join(workdir, workdir_lib.RESULTS_FILE)):
            planned.append(Planned(run, workdir, "done"))
        else:
            planned.append(Planned(run, workdir, "resume"))
    conflicts = [p for p in planned if p.status == "conflict"]
    if conflicts:
        shown = "; ".join(f"{p.workdir} (differs in {p.detail})" for p in conflicts[:5])
        raise SweepError(
            f"{len(conflicts)} workdir(s) hold a different experiment: {shown}"
            f"{' ...' if len(conflicts) > 5 else ''}. Move them away or use another --runs_dir."
        )
    return planned


def command(run: Run, workdir: str, python: str = "python") -> list[str]:
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


def _start(item: Planned, env: Mapping[str, str],
           argv_for: Callable[[Planned], list[str]]) -> _Running:
    """Starts `item` in its own session, so a Ctrl-C reaches the sweep only (which then stops
    its runs with SIGTERM: lenggen.main checkpoints on SIGTERM, not on SIGINT)."""
    os.makedirs(item.workdir, exist_ok=True)
    argv = argv_for(item)
    log = open(os.path.join(item.workdir, LOG_FILE), "a")
    log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n")
    log.flush()
    process = subprocess.Popen(argv, cwd=REPO, env=dict(env), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    return _Running(item, process, log, time.monotonic())


def run_local(
    planned: Sequence[Planned], *, parallel: int = 1, env: Mapping[str, str] | None = None,
    out: TextIO = sys.stdout, argv_for: Callable[[Planned], list[str]] = main_command,
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

    say(f"Sweep: {len(planned)} runs, {len(planned) - total} complete (skipped), {total} to "
        f"run, {parallel} at a time.")
    queue, running, durations, failed = list(pending), [], [], []
    stop, forwarded = [], 0  # signals received; how many of them the runs were sent
    previous = {s: signal.signal(s, lambda number, _: stop.append(number))
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while queue or running:
            while queue and len(running) < parallel and not stop:
                running.append(_start(queue.pop(0), env, argv_for))
                say(f"[start {total - len(queue)}/{total}] {running[-1].item.run.name} "
                    f"({running[-1].item.status})")
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
                eta = (_duration(sum(durations) / len(durations) * left / parallel)
                       if durations else "unknown")
                status = "ok" if code == 0 else (
                    f"FAILED (exit {code}: {_MAIN_EXIT_REASONS.get(code, 'error')})")
                say(f"[{total - left}/{total}] {entry.item.run.name}: {status} in "
                    f"{_duration(seconds)}; {left} left" + (f", ETA {eta}" if left else ""))
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
        say(f"Interrupted after {len(durations)} successful run(s); {len(queue)} not started. "
            "Rerun the same command to resume.")
        return EXIT_INTERRUPTED
    say(f"Sweep finished: {len(durations)} succeeded, {len(failed)} failed"
        f"{': ' + ', '.join(failed) if failed else ''}.")
    return EXIT_FAILED if failed else 0


def child_environment(runs_dir: str, jax_cache: bool) -> dict[str, str]:
    """This process's environment, plus JAX's persistent compilation cache in
    RUNS_DIR/.jax_cache (unless disabled or already set): seeds of one (task, PE) compile the
    same programs, so all but the first load them from disk."""
    env = dict(os.environ)
    if jax_cache:
        env.setdefault("JAX_COMPILATION_CACHE_DIR",
                       os.path.join(os.path.abspath(runs_dir), ".jax_cache"))
    return env


def print_commands(planned: Sequence[Planned], out: TextIO = sys.stdout) -> None:
    """One shell command per pending run (complete runs are left out; a count goes to stderr)."""
    pending = [p for p in planned if p.status in ("new", "resume")]
    print(f"# {len(pending)} of {len(planned)} runs to launch ({len(planned) - len(pending)} "
          "complete). Run from the repository root.", file=sys.stderr)
    for item in pending:
        print(shlex.join(command(item.run, item.workdir)), file=out)


def define_flags() -> None:
    """The command line's flags (defined on demand: grid files import this module)."""
    flags.DEFINE_string("grid", None, "Grid file, optionally with an argument: "
                        "configs/grids/paper.py:tasks=maths.")
    flags.DEFINE_string("runs_dir", "runs", "Each run's workdir is RUNS_DIR/<name>.")
    flags.DEFINE_enum("mode", "local", MODES, "local: run here; print: print the commands.")
    flags.DEFINE_string("only", None, "Comma-separated glob patterns on run names "
                        "(<task>/<pe>/<seed>), e.g. 'copy/*/*,reverse_2x/t5/*'.")
    flags.DEFINE_integer("parallel", 1, "local mode: runs at a time.")
    flags.DEFINE_bool("jax_cache", True, "local mode: share JAX's persistent compilation "
                      "cache (RUNS_DIR/.jax_cache) between runs.")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    values = flags.FLAGS
    try:
        if not values.grid:
            raise SweepError("--grid is required, e.g. --grid=configs/grids/cpu_mini.py.")
        runs = select(load_grid(values.grid), values.only)
        planned = plan(runs, values.runs_dir)
        if values.mode == "print":
            print_commands(planned)
            return 0
        env = child_environment(values.runs_dir, values.jax_cache)
        return run_local(planned, parallel=values.parallel, env=env)
    except SweepError as error:
        print(f"lenggen.sweep: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    # Grid files import `lenggen.sweep`; run that module's main, not this __main__ copy, so
    # there is one `Run` class and one set of flags.
    from lenggen import sweep as _sweep

    _sweep.define_flags()
    app.run(_sweep.main)
