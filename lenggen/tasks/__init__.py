"""The task registry: names users type in configs, mapped to Task classes.

    task = tasks.get("copy", max_train_length=8, max_test_length=12, num_symbols=10)
    for example in task.examples("train"): ...

Adding a task: write its module (a Task subclass whose options are keyword arguments with the
paper's defaults) and register its name below, one line.
"""

import dataclasses
import inspect

from lenggen.tasks import (
    addition,
    copy_family,
    lego,
    parity,
    pcfg,
    polynomial,
    scan,
    sorting,
    summation,
)
from lenggen.tasks.base import SPLITS, Example, Task
from lenggen.tasks.options import TaskOptionError

__all__ = ["SPLITS", "Example", "Task", "TaskOptionError", "default_options", "get", "names"]

_TASKS: dict[str, type[Task]] = {
    "copy_repeat": copy_family.CopyRepeat,
    "copy_repeat_2x": copy_family.CopyRepeat2x,
    "copy_repeat_change": copy_family.CopyRepeatChange,
    "copy": copy_family.Copy,
    "copy_2x": copy_family.Copy2x,
    "reverse": copy_family.Reverse,
    "reverse_2x": copy_family.Reverse2x,
    "reverse_copy": copy_family.ReverseCopy,
    "addition": addition.Addition,
    "long_addition": addition.LongAddition,
    "polynomial": polynomial.Polynomial,
    "sort_single_token": sorting.SortSingleToken,
    "sort_multi_digit": sorting.SortMultiDigit,
    "summation": summation.Summation,
    "parity": parity.Parity,
    "lego": lego.Lego,
    "lego_shuffled": lego.LegoShuffled,
    "scan": scan.Scan,
    "pcfg": pcfg.Pcfg,
}


def names() -> tuple[str, ...]:
    """Every registered task name, sorted."""
    return tuple(sorted(_TASKS))


def _task_class(name: str) -> type[Task]:
    if name not in _TASKS:
        raise ValueError(f"Unknown task {name!r}. Valid tasks: {', '.join(names())}")
    return _TASKS[name]


def default_options(name: str) -> dict:
    """The options task `name` accepts, with their defaults (the paper's settings)."""
    cls = _task_class(name)
    if dataclasses.is_dataclass(cls):
        return {f.name: f.default for f in dataclasses.fields(cls)}
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return {p.name: p.default for p in parameters}


def get(name: str, /, **options) -> Task:
    """The task `name` with `options` (each defaults to the paper's setting).

    Raises:
      ValueError: for an unknown task or option; TaskOptionError (a ValueError) for an option
        value the task cannot use.
    """
    valid = default_options(name)
    unknown = [option for option in options if option not in valid]
    if unknown:
        raise ValueError(
            f"Unknown option(s) {', '.join(map(repr, unknown))} for task {name!r}. "
            f"Valid options: {', '.join(valid)}"
        )
    return _task_class(name)(**options)
