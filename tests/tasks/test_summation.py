"""Tests of lenggen/tasks/summation.py: format, sums by Python ints, splits, scratchpad."""

import collections
import itertools
import re

import pytest

from lenggen import tasks

PROMPT = re.compile(r"Compute: ([1-9](?: \+ [1-9])*) \. \[SEP\]")


def _values(example):
    match = PROMPT.fullmatch(example.source)
    assert match, example.source
    return [int(v) for v in match.group(1).split(" + ")]


@pytest.fixture(scope="module")
def default_splits():
    task = tasks.get("summation")
    return task, {split: list(task.examples(split)) for split in tasks.SPLITS}


def test_every_three_value_problem_exactly_once():
    task = tasks.get(
        "summation",
        num_train=729,
        num_validation=0,
        min_length=3,
        max_train_length=3,
        max_test_length=4,
        num_test_per_length=1,
    )
    pairs = {(e.source, e.target) for e in task.examples("train")}
    expected = {
        (f"Compute: {a} + {b} + {c} . [SEP]", f"The answer is {(a + b + c) % 10} .")
        for a, b, c in itertools.product(range(1, 10), repeat=3)
    }
    assert len(expected) == 729 and pairs == expected
    assert ("Compute: 7 + 5 + 9 . [SEP]", "The answer is 1 .") in pairs  # the paper's example


def test_default_sizes_lengths_and_disjointness(default_splits):
    task, splits = default_splits
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    assert (len(train), len(validation), len(test)) == (100_000, 7_500, 10_000)
    assert collections.Counter(e.length for e in train) == {n: 20_000 for n in range(4, 9)}
    assert collections.Counter(e.length for e in test) == {n: 1_250 for n in range(9, 17)}
    # 9^4 = 6,561 four-value problems cannot hold 20,000 distinct training examples plus a
    # validation share: length 4 repeats (as in the paper) and validation comes from 5-8.
    assert collections.Counter(e.length for e in validation) == {n: 1_875 for n in range(5, 9)}
    assert len({e.source for e in train if e.length == 4}) <= 6_561
    sources = {split: {e.source for e in examples} for split, examples in splits.items()}
    assert not sources["train"] & sources["validation"]
    assert not (sources["train"] | sources["validation"]) & sources["test"]


def test_sums_by_python_ints(default_splits):
    task, splits = default_splits
    for examples in splits.values():
        for example in examples:
            values = _values(example)
            assert len(values) == example.length
            assert example.target == f"The answer is {sum(values) % 10} ."
            assert task.parse_answer(example.target) == str(sum(values) % 10)


def test_vocabulary(default_splits):
    task, splits = default_splits
    words = {
        w
        for examples in splits.values()
        for e in examples
        for w in f"{e.source} {e.target}".split()
    }
    assert (
        words
        == set(task.vocabulary())
        == {"Compute:", "+", ".", "[SEP]", "The", "answer", "is", *"0123456789"}
    )


def test_scratchpad_by_hand():
    task = tasks.get(
        "summation",
        scratchpad="full",
        num_train=729,
        num_validation=0,
        min_length=3,
        max_train_length=3,
        max_test_length=4,
        num_test_per_length=1,
    )
    targets = {e.source: e.target for e in task.examples("train")}
    # Official stripped steps: "v + sum = v + s =", the unreduced sum, then "sum: x = x mod 10".
    assert targets["Compute: 7 + 5 + 9 . [SEP]"] == (
        "Thinking step by step: in 7 comp 7 + sum = 7 + 0 = out 7 [ sum: 7 = 7 ] re 5 + 9 # "
        "in 5 comp 5 + sum = 5 + 7 = out 1 2 [ sum: 1 2 = 2 ] re 9 # "
        "in 9 comp 9 + sum = 9 + 2 = out 1 1 [ sum: 1 1 = 1 ] re . Thus , The answer is 1 ."
    )


def test_scratchpad_running_sums_by_python_ints():
    task = tasks.get(
        "summation", scratchpad="no_input", num_train=200, num_validation=20, num_test_per_length=5
    )
    for split in tasks.SPLITS:
        for example in task.examples(split):
            values = _values(example)
            assert set(example.target.split()) <= set(task.vocabulary())
            steps = re.findall(r"\[ sum: ([0-9 ]+) = ([0-9]) \]", example.target)
            assert len(steps) == len(values)
            for i, (unreduced, reduced) in enumerate(steps):
                running = sum(values[: i + 1]) % 10
                assert int(reduced) == running
                assert int(unreduced.replace(" ", "")) == values[i] + sum(values[:i]) % 10
            assert task.parse_answer(example.target) == str(sum(values) % 10)


def test_determinism():
    small = dict(num_train=300, num_validation=40, num_test_per_length=5)
    for split in tasks.SPLITS:
        first = list(tasks.get("summation", **small).examples(split))
        assert first == list(tasks.get("summation", **small).examples(split))
        assert first != list(tasks.get("summation", seed=1, **small).examples(split))


def test_generator_output_is_pinned(default_splits):
    # A regression guard, not a derivation: stored datasets are only valid while the generator's
    # output stays the same. If this fails, bump the task's version, then update.
    _, splits = default_splits
    assert splits["train"][0].source == "Compute: 8 + 3 + 9 + 1 + 6 . [SEP]"
