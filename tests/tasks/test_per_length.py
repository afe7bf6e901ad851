"""Tests of lenggen/tasks/per_length.py: number and list words, shared options and their errors."""

import collections
import re

import pytest

from lenggen import tasks
from lenggen.tasks import TaskOptionError
from lenggen.tasks.per_length import bracketed, spaced

PER_LENGTH = (
    "polynomial",
    "sort_single_token",
    "sort_multi_digit",
    "summation",
    "parity",
    "lego",
    "lego_shuffled",
)


@pytest.mark.parametrize("number, words", [(0, "0"), (7, "7"), (565, "5 6 5"), (-12, "- 1 2")])
def test_spaced(number, words):
    assert spaced(number) == words


def test_bracketed():
    assert bracketed(["b", "d"]) == "[ b , d ]"
    assert bracketed(["4 2"]) == "[ 4 2 ]"
    assert bracketed([]) == "[ ]"


@pytest.mark.parametrize("name", PER_LENGTH)
def test_defaults_are_the_scripts(name):
    options = tasks.default_options(name)
    assert options["seed"] == 9842497
    assert (options["num_train"], options["max_train_length"], options["max_test_length"]) == (
        100_000,
        8,
        16,
    )
    assert options["num_test_per_length"] == 1_250 and options["scratchpad"] == "none"
    # The scripts' --train_min defaults: 3 for parity, 4 otherwise; half the validation file.
    assert options["min_length"] == (3 if name == "parity" else 4)
    assert options["num_validation"] == (
        7_500
        if name in ("polynomial", "sort_single_token", "sort_multi_digit", "summation")
        else 7_498
    )


@pytest.mark.parametrize("name", PER_LENGTH)
def test_small_splits_follow_the_options(name):
    task = tasks.get(
        name,
        num_train=60,
        num_validation=12,
        num_test_per_length=8,
        min_length=4,
        max_train_length=6,
        max_test_length=9,
    )
    train, validation, test = (list(task.examples(split)) for split in tasks.SPLITS)
    assert collections.Counter(e.length for e in train) == {4: 20, 5: 20, 6: 20}
    assert len(validation) == 12 and {e.length for e in validation} <= {4, 5, 6}
    lego = name.startswith("lego")
    # LEGO counts whole chains of L // 2 queries per test length (8 // 3 * 3 = 6 at L = 7).
    assert collections.Counter(e.length for e in test) == (
        {7: 6, 8: 8, 9: 8} if lego else {7: 8, 8: 8, 9: 8}
    )
    assert task.lengths("train") == (4, 5, 6) and task.lengths("test") == (7, 8, 9)


@pytest.mark.parametrize("name", PER_LENGTH)
def test_smoke_run_sizes_work(name):
    # config_schema.shrink_for_smoke_run's sizes: every test length still gets its 2 examples
    # (LEGO's whole-chain rounding would give none below one chain).
    task = tasks.get(name, num_train=256, num_validation=32, num_test_per_length=2)
    assert len(list(task.examples("train"))) == 256
    assert len(list(task.examples("validation"))) == 32
    test = collections.Counter(e.length for e in task.examples("test"))
    assert test == {n: 2 for n in range(9, 17)}


@pytest.mark.parametrize(
    "name, options, message",
    [
        (
            "polynomial",
            {"min_length": 0},
            "Task 'polynomial': option min_length=0 is too small; expected an int >= 1 (the "
            "polynomial format).",
        ),
        (
            "lego",
            {"min_length": 1},
            "Task 'lego': option min_length=1 is too small; expected an int >= 2 "
            "(the lego format).",
        ),
        (
            "lego_shuffled",
            {"max_test_length": 27},
            "Task 'lego_shuffled': option max_test_length=27 is too large; expected an int <= 26 "
            "(26 variables a-z).",
        ),
        (
            "summation",
            {"max_test_length": 8},
            "option max_test_length=8 is too small; expected an int >= 9 (max_train_length + 1).",
        ),
        (
            "parity",
            {"min_length": 5, "max_train_length": 4},
            "option max_train_length=4 is too small; expected an int >= 5 (min_length).",
        ),
        ("sort_multi_digit", {"num_test_per_length": 0}, "option num_test_per_length=0 is too"),
        (
            "sort_single_token",
            {"num_train": 1.5},
            "option num_train=1.5 has type float; expected int.",
        ),
        ("summation", {"seed": -3}, "option seed=-3 is too small; expected an int >= 0"),
        (
            "summation",
            {"max_train_length": 1, "min_length": 1, "num_train": 100},
            "cannot draw num_validation=7500 validation examples disjoint from num_train=100",
        ),
    ],
)
def test_bad_values(name, options, message):
    with pytest.raises(TaskOptionError, match=re.escape(message)):
        tasks.get(name, **options)
