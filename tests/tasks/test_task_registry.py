"""Tests of lenggen/tasks/__init__.py: names, defaults, `get` and its error messages."""

import re

import pytest

from lenggen import tasks

NAMES = (
    "addition",
    "copy",
    "copy_2x",
    "copy_repeat",
    "copy_repeat_2x",
    "copy_repeat_change",
    "lego",
    "lego_shuffled",
    "long_addition",
    "parity",
    "pcfg",
    "polynomial",
    "reverse",
    "reverse_2x",
    "reverse_copy",
    "scan",
    "sort_multi_digit",
    "sort_single_token",
    "summation",
)


def test_names():
    assert tasks.names() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_get_defaults(name):
    task = tasks.get(name)
    assert task.name == name
    assert isinstance(task, tasks.Task)
    defaults = tasks.default_options(name)
    assert task.options() == defaults
    # Plain values only: the config system copies them into config.task.options.
    assert all(type(v) in (int, float, str, bool) for v in defaults.values())
    # Options round-trip, and fresh defaults cannot be changed through the returned dict.
    assert tasks.get(name, **task.options()) == task
    defaults["seed"] = 0
    assert tasks.default_options(name)["seed"] == 9842497


def test_get_overrides_options():
    task = tasks.get("reverse", num_symbols=12, seed=3)
    assert task.options()["num_symbols"] == 12 and task.options()["seed"] == 3
    assert task.options()["num_train"] == 100_000


def test_unknown_task():
    with pytest.raises(ValueError) as error:
        tasks.get("sort")
    assert str(error.value) == f"Unknown task 'sort'. Valid tasks: {', '.join(NAMES)}"
    with pytest.raises(ValueError, match="Unknown task 'x'. Valid tasks: addition, copy, "):
        tasks.default_options("x")


def test_unknown_option():
    with pytest.raises(ValueError) as error:
        tasks.get("addition", max_train_length=8, seed=1)
    assert str(error.value) == (
        "Unknown option(s) 'max_train_length' for task 'addition'. Valid options: seed, "
        "num_train, num_validation, num_test_per_digit_pair, min_digits, max_train_digits, "
        "max_test_digits, scratchpad, digit_order, zero_pad"
    )


def test_bad_value_is_a_value_error():
    with pytest.raises(ValueError, match=re.escape("option num_train=-1 is too small")):
        tasks.get("copy", num_train=-1)


@pytest.mark.parametrize("split", ["training", "dev", ""])
def test_unknown_split(split):
    task = tasks.get(
        "copy",
        num_train=50,
        num_validation=0,
        max_train_length=4,
        max_test_length=5,
        num_test_per_length=2,
    )
    message = f"Unknown split {split!r}; expected one of train, validation, test."
    with pytest.raises(ValueError, match=re.escape(message)):
        task.examples(split)
    with pytest.raises(ValueError, match=re.escape(message)):
        task.lengths(split)
