"""Finds and checks the results files of a runs directory (what `lenggen.sweep` leaves behind),
local or gs:// (read through lenggen.rundir).

Every `results.json` under RUNS_DIR is one run (lenggen/results.py describes the file). Folders
named `replaced-*` (old runs moved aside by `--overwrite`), hidden folders (the sweep's
`.jax_cache`) and checkpoint folders are not searched. A run trained with randomized positions
(its config.json sets `model.pe.randomized_max_position` > 0) is reported as its own PE,
`<pe>+randomized`, as the sweep names it.
"""

import dataclasses
import json
import os
import posixpath
from typing import Any

from lenggen import rundir as workdir_lib
from lenggen.rundir import storage

_NOT_SEARCHED = ("checkpoints", "best")
RANDOMIZED = "+randomized"


class ReportError(ValueError):
    """Results that cannot be aggregated (missing, malformed, duplicated or inconsistent)."""


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One run's results.

    Attributes:
      path: the results.json it came from.
      splits: `{"validation": S, "test": S}`, S = `{"overall", "by_length": {"<length>":
        {"exact_match", "n"}}}`.
    """

    path: str
    task: str
    pe: str
    seed: int
    train_max_length: int
    metric: str | None
    splits: dict[str, Any]


def _load(path: str) -> Any:
    try:
        return json.loads(storage.read_text(path))
    except ValueError as error:
        raise ReportError(f"{path} is not valid JSON ({error}).") from None


def _identity(results: dict, path: str) -> tuple[str, str, int]:
    """(task, pe, seed) from results.json, else from the config.json beside it (results files
    written before these fields existed); pe gets RANDOMIZED appended when config.json says
    the run trained on randomized positions."""
    config_path = posixpath.join(posixpath.dirname(path), workdir_lib.CONFIG_FILE)
    config = _load(config_path) if storage.exists(config_path) else None
    if all(key in results for key in ("task", "pe", "seed")):
        task, pe, seed = results["task"], results["pe"], int(results["seed"])
    elif config is None:
        raise ReportError(
            f"{path} names no task, pe and seed, and there is no {workdir_lib.CONFIG_FILE} "
            "beside it to read them from."
        )
    else:
        task, pe, seed = config["task"]["name"], config["model"]["pe"]["name"], config["seed"]
    randomized = (config or {}).get("model", {}).get("pe", {}).get("randomized_max_position", 0)
    if randomized and not pe.endswith(RANDOMIZED):
        pe += RANDOMIZED
    return task, pe, int(seed)


def _check_splits(results: dict, path: str) -> None:
    splits = results.get("splits")
    if not isinstance(splits, dict) or "test" not in splits:
        raise ReportError(f"{path}: expected 'splits' with a 'test' split; got {splits!r:.80}.")
    for name, split in splits.items():
        if not isinstance(split, dict) or "overall" not in split or "by_length" not in split:
            raise ReportError(
                f"{path}: split {name!r} needs 'overall' and 'by_length'; got {split!r:.80}."
            )
    if not isinstance(results.get("train_max_length"), int):
        raise ReportError(
            f"{path}: expected an integer train_max_length, got "
            f"{results.get('train_max_length')!r}."
        )


def find_results(runs_dir: str) -> list[str]:
    """Paths of every results.json under `runs_dir` (local or gs://), sorted."""
    root = storage.resolve(runs_dir)
    if not root.is_dir():
        raise ReportError(f"Runs directory {runs_dir!r} does not exist.")
    found = []
    pending = [root]
    while pending:  # epath's walk loses the gs:// prefix; iterdir keeps it.
        directory = pending.pop()
        for entry in directory.iterdir():
            if entry.name == workdir_lib.RESULTS_FILE:
                found.append(os.fspath(entry))
            elif (
                not entry.name.startswith((".", "replaced-"))
                and entry.name not in _NOT_SEARCHED
                and entry.is_dir()
            ):
                pending.append(entry)
    return sorted(found)


def collect(runs_dir: str) -> list[RunResult]:
    """Every run under `runs_dir`, checked.

    Raises:
      ReportError: no results at all; a file without the fields the report needs; two runs
        of one (task, pe, seed); runs of one task trained on different lengths.
    """
    runs = []
    for path in find_results(runs_dir):
        results = _load(path)
        _check_splits(results, path)
        task, pe, seed = _identity(results, path)
        runs.append(
            RunResult(
                path,
                task,
                pe,
                seed,
                results["train_max_length"],
                results.get("metric"),
                results["splits"],
            )
        )
    if not runs:
        raise ReportError(
            f"No {workdir_lib.RESULTS_FILE} under {runs_dir!r}: run the sweep first "
            "(python -m lenggen.sweep)."
        )
    seen: dict[tuple, str] = {}
    train_lengths: dict[str, tuple[int, str]] = {}
    for run in runs:
        key = (run.task, run.pe, run.seed)
        if key in seen:
            raise ReportError(
                f"Two results for task {run.task}, pe {run.pe}, seed {run.seed}: "
                f"{seen[key]} and {run.path}. Move one away."
            )
        seen[key] = run.path
        length, first = train_lengths.setdefault(run.task, (run.train_max_length, run.path))
        if length != run.train_max_length:
            raise ReportError(
                f"Task {run.task} was trained up to length {length} in {first} but up to "
                f"{run.train_max_length} in {run.path}; report such runs from separate directories."
            )
    return runs
