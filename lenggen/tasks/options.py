"""Checks of task option values, with errors that name the task, the option and what was expected.

Task options are dataclass fields whose defaults are plain ints (the config system copies them
into `config.task.options`), so the expected type of an option is the type of its default.
"""

import dataclasses


class TaskOptionError(ValueError):
    """A task option with a value the task cannot use."""


def check_types(task) -> None:
    """Raises unless every option of the dataclass `task` has the type of its default.

    A bool is refused where an int is expected (True is an int to Python, never a size here).
    """
    for field in dataclasses.fields(task):
        value = getattr(task, field.name)
        expected = type(field.default)
        if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
            raise TaskOptionError(
                f"Task {task.name!r}: option {field.name}={value!r} has type "
                f"{type(value).__name__}; expected {expected.__name__}."
            )


def check_at_least(task, option: str, minimum: int, reason: str = "") -> None:
    """Raises unless `task.<option> >= minimum`; `reason` says where the minimum comes from."""
    value = getattr(task, option)
    if value < minimum:
        because = f" ({reason})" if reason else ""
        raise TaskOptionError(
            f"Task {task.name!r}: option {option}={value!r} is too small; expected an int "
            f">= {minimum}{because}."
        )


def check_at_most(task, option: str, maximum: int, reason: str = "") -> None:
    """Raises unless `task.<option> <= maximum`; `reason` says where the maximum comes from."""
    value = getattr(task, option)
    if value > maximum:
        because = f" ({reason})" if reason else ""
        raise TaskOptionError(
            f"Task {task.name!r}: option {option}={value!r} is too large; expected an int "
            f"<= {maximum}{because}."
        )


def check_one_of(task, option: str, allowed: tuple[str, ...]) -> None:
    """Raises unless `task.<option>` is one of `allowed`."""
    value = getattr(task, option)
    if value not in allowed:
        raise TaskOptionError(
            f"Task {task.name!r}: option {option}={value!r} is unknown; expected one of "
            f"{', '.join(map(repr, allowed))}."
        )
