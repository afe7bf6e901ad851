r"""Grids of experiments: the runs (task x PE x seed) a grid file lists, and the config each gets.

A grid file (configs/grids/*.py; like a config file, loaded by path, with an optional
`:key=value,...` argument) has `get_grid(arg)` returning a list of `Run`s built with this
module: `product` makes the usual task x PE x seed cross product, `parse_pes`/`grid_pes` read
grid arguments naming PEs (`pes=nope+t5+fire`), and `randomized_product` makes runs with
randomized positions (Ruoss et al. 2023), set up per task from its longest test prompt and
target. Run `name`s are `<task>/<pe>/<seed>` (`<task>/<pe>+<variant>/<seed>` for a variant of
a PE, e.g. `rotary+randomized`); lenggen.sweep runs them, each in RUNS_DIR/<name>.

Config paths in a grid are relative to the repository root.
"""

import dataclasses
import fnmatch
import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from lenggen import config_args
from lenggen import tasks as tasks_lib
from lenggen.model import positional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class GridError(ValueError):
    """A grid or run that cannot work; raised before any run starts."""


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
      GridError: an unknown task or PE name (listing the valid ones), or task_overrides for a
        task not in `tasks`.
    """
    for kind, given, valid in (
        ("task", tasks, tasks_lib.names()),
        ("positional encoding", pes, positional.names()),
    ):
        unknown = [name for name in given if name not in valid]
        if unknown:
            raise GridError(f"Unknown {kind}(s) {unknown} in the grid. Valid: {', '.join(valid)}.")
    extra = sorted(set(task_overrides or {}) - set(tasks))
    if extra:
        raise GridError(f"task_overrides names {extra}, not in the grid's tasks {list(tasks)}.")
    if variant and not variant.isidentifier():
        raise GridError(
            f"variant={variant!r}: expected a word like 'randomized' (it names "
            "runs <task>/<pe>+<variant>/<seed>)."
        )
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
      GridError: an unknown name (listing the valid ones; an empty piece is one), a repeated
        one, or with `randomized` nope (randomized positions keep their order, all nope sees);
        the message names `argument`.
    """
    if not text:
        return ()
    names = tuple(text.split("+"))
    valid = positional.names()
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise GridError(
            f"Grid argument {argument}={text!r}: unknown positional encoding(s) "
            f"{unknown}; expected names from {', '.join(valid)} joined by '+'."
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise GridError(f"Grid argument {argument}={text!r} repeats {repeated}.")
    if randomized and "nope" in names:
        raise GridError(
            f"Grid argument {argument}={text!r}: randomized positions change "
            "nothing for nope (its attention sees only their order); expected "
            "position-based PEs."
        )
    return names


def grid_pes(args: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A grid's `pes=` and `randomized=` arguments (`parse_pes` each): the PEs to run plainly
    and those to run with randomized positions.

    Raises:
      GridError: as `parse_pes`, or both empty (no run).
    """
    pes = parse_pes(args["pes"], "pes")
    randomized = parse_pes(args["randomized"], "randomized", randomized=True)
    if not pes and not randomized:
        raise GridError(
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
    decoded token gets its own position, with room to spare (Ruoss et al. take M at least the
    longest test length).

    Args:
      longest_prompt, longest_target: tokens of the task's longest test prompt and target
        (EOS included).
      max_new_tokens: the grid's decoding budget (the paper's 256); B never exceeds it.
    Returns:
      `{"model.pe.randomized_max_position": M, "eval.max_new_tokens": B}`.
    """
    if min(longest_prompt, longest_target, max_new_tokens) < 1:
        raise GridError(
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
        task: {
            **(task_overrides or {}).get(task, {}),
            **randomized_overrides(*test_lengths[task], max_new_tokens),
        }
        for task in tasks
    }
    return product(
        config_file,
        tasks,
        pes,
        seeds,
        task_overrides=settings,
        variant="randomized",
        **product_args,
    )


def load_grid(spec: str) -> list[Run]:
    """The runs of grid file `spec` (`path/to/grid.py` or `path/to/grid.py:key=value,...`)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise GridError(f"Grid file {path!r} does not exist (from --grid={spec!r}).")
    module = config_args.load_file(path, "lenggen_grid")
    if not hasattr(module, "get_grid"):
        raise GridError(f"Grid file {path!r} has no get_grid(arg) function.")
    try:
        runs = module.get_grid(arg or None)
    except ValueError as error:  # e.g. config_args.ConfigArgumentError for a bad grid argument.
        raise GridError(f"{path}: {error}") from None
    if not isinstance(runs, list) or not runs or not all(isinstance(r, Run) for r in runs):
        raise GridError(
            f"{path}: get_grid() returned {type(runs).__name__} {str(runs)[:80]}; expected a "
            "non-empty list of lenggen.grid.Run (see lenggen.grid.product)."
        )
    names = [run.name for run in runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise GridError(f"{path}: run names must be unique; repeated: {repeated[:5]}.")
    return runs


def select(runs: Sequence[Run], only: str | None) -> list[Run]:
    """The runs whose name matches one of the comma-separated glob patterns in `only`."""
    if not only:
        return list(runs)
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(run.name, pattern) for run in runs):
            raise GridError(
                f"--only pattern {pattern!r} matches no run. Run names are <task>/<pe>/<seed>, "
                f"e.g. {', '.join(run.name for run in runs[:3])}."
            )
    return [r for r in runs if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]


def resolve_config(run: Run) -> ml_collections.ConfigDict:
    """The config `python -m lenggen.main` builds for `run` (same parser, same overrides).

    Raises:
      GridError: the config file is missing (paths are relative to the repository root), or
        its argument or an override is wrong (the config's own message).
    """
    path, colon, arg = run.config.partition(":")
    path = os.path.join(REPO, path)
    if not os.path.isfile(path):
        raise GridError(
            f"Run {run.name}: config file {path!r} does not exist (config paths "
            "in a grid are relative to the repository root)."
        )
    argv = ["lenggen.grid", f"--config={path}{colon}{arg}", *run.override_flags()]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
    try:
        values(argv)
        return values.config
    except (flags.Error, KeyError, AttributeError) as error:
        # absl wraps the config file's own error (e.g. an unknown task) in a traceback.
        cause = error.__context__ if isinstance(error, flags.Error) and error.__context__ else error
        lines = [line for line in str(cause).splitlines() if line.strip()]
        raise GridError(
            f"Run {run.name} ({run.config}): {lines[-1] if lines else cause!r}"
        ) from None
