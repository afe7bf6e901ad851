"""Tests of lenggen/tasks/polynomial.py: format, values by Python ints, splits, scratchpad."""

import collections
import itertools
import re

import pytest

from lenggen import tasks

TERM = r"(-? ?[0-9]) \* x \*\* ([0-9])"
PROMPT = re.compile(rf"Evaluate at x = (-? ?[0-9]) in ({TERM}(?: \+ {TERM})*) \?")


def _number(words):
    return int(words.replace(" ", ""))


def _problem(example):
    """(x, [(coefficient, degree), ...]) read back from the source with an independent regex."""
    match = PROMPT.fullmatch(example.source)
    assert match, example.source
    terms = [(_number(c), _number(d)) for c, d in re.findall(TERM, match.group(2))]
    return _number(match.group(1)), terms


def _value(x, terms):
    return sum(c * x**d for c, d in terms) % 10


def _spaced(n):
    return " ".join(str(n)) if n >= 0 else "- " + " ".join(str(-n))


@pytest.fixture(scope="module")
def default_splits():
    task = tasks.get("polynomial")
    return task, {split: list(task.examples(split)) for split in tasks.SPLITS}


def test_every_one_term_problem_exactly_once():
    # 7 coefficients x 4 degrees x 5 values of x = 140 problems: 140 draws must be all of them.
    task = tasks.get(
        "polynomial",
        num_train=140,
        num_validation=0,
        min_length=1,
        max_train_length=1,
        max_test_length=2,
        num_test_per_length=1,
    )
    pairs = {(e.source, e.target) for e in task.examples("train")}
    expected = {
        (
            f"Evaluate at x = {_spaced(x)} in {_spaced(c)} * x ** {d} ?",
            f"The answer is {(c * x**d) % 10} .",
        )
        for x, c, d in itertools.product(range(-2, 3), range(-3, 4), range(4))
    }
    assert len(expected) == 140 and pairs == expected


def test_papers_example_is_generated():
    # All 3,920 two-term problems, among them the paper's: 2 * (-2)^3 - 1 * (-2)^0 = -17 = 3 mod 10.
    task = tasks.get(
        "polynomial",
        num_train=3_920,
        num_validation=0,
        min_length=2,
        max_train_length=2,
        max_test_length=3,
        num_test_per_length=1,
    )
    pairs = {(e.source, e.target) for e in task.examples("train")}
    assert len(pairs) == 3_920
    assert ("Evaluate at x = - 2 in 2 * x ** 3 + - 1 * x ** 0 ?", "The answer is 3 .") in pairs


def test_default_sizes_lengths_and_disjointness(default_splits):
    task, splits = default_splits
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    assert (len(train), len(validation), len(test)) == (100_000, 7_500, 10_000)
    assert collections.Counter(e.length for e in train) == {n: 20_000 for n in range(4, 9)}
    assert collections.Counter(e.length for e in test) == {n: 1_250 for n in range(9, 17)}
    assert task.lengths("validation") == tuple(range(4, 9))
    sources = {split: {e.source for e in examples} for split, examples in splits.items()}
    assert not sources["train"] & sources["validation"]
    assert not (sources["train"] | sources["validation"]) & sources["test"]


def test_values_by_python_ints(default_splits):
    task, splits = default_splits
    # Every validation and test example, every third training example (time).
    for examples in (splits["train"][::3], splits["validation"], splits["test"]):
        for example in examples:
            x, terms = _problem(example)
            assert len(terms) == example.length
            assert all(-3 <= c <= 3 and 0 <= d <= 3 for c, d in terms) and -2 <= x <= 2
            assert example.target == f"The answer is {_value(x, terms)} ."
            assert task.parse_answer(example.target) == str(_value(x, terms))


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
        == {
            "Evaluate",
            "at",
            "x",
            "=",
            "-",
            "in",
            "*",
            "**",
            "+",
            "?",
            "The",
            "answer",
            "is",
            ".",
            *"0123456789",
        }
    )


def test_scratchpad_steps_by_python_ints():
    task = tasks.get(
        "polynomial", scratchpad="full", num_train=200, num_validation=20, num_test_per_length=5
    )
    for split in tasks.SPLITS:
        for example in task.examples(split):
            x, terms = _problem(example)
            assert set(example.target.split()) <= set(task.vocabulary())
            steps = example.target.removeprefix("Thinking step by step: ").split(" . Thus , ")
            assert steps[1] == f"The answer is {_value(x, terms)} ."
            total = 0
            for i, (step, (c, d)) in enumerate(zip(steps[0].split(" # "), terms, strict=True)):
                new_total = (total + c * x**d) % 10
                rest = " + ".join(f"{_spaced(c2)} * x ** {d2}" for c2, d2 in terms[i + 1 :])
                assert step == (
                    f"in {_spaced(c)} * x ** {d} comp {_spaced(c)} * {_spaced(x)} ** {d} = "
                    f"{_spaced(c)} * {_spaced(x**d)} out {_spaced(c * x**d)} "
                    f"[ sum: {total} + {_spaced(c * x**d)} = {new_total} ] re {rest}".strip()
                )
                total = new_total
            assert task.parse_answer(example.target) == str(total)


def test_determinism():
    small = dict(num_train=300, num_validation=40, num_test_per_length=5)
    for split in tasks.SPLITS:
        first = list(tasks.get("polynomial", **small).examples(split))
        assert first == list(tasks.get("polynomial", **small).examples(split))
        assert first != list(tasks.get("polynomial", seed=1, **small).examples(split))


@pytest.mark.parametrize(
    "prediction, correct",
    [
        ("The answer is 3 .", True),
        ("The answer is 0 3 .", True),
        ("The answer is 4 .", False),
        ("The answer is 3", False),
        ("The answer is - 3 .", False),
        ("", False),
    ],
)
def test_score(prediction, correct):
    assert tasks.get("polynomial").score(prediction, "The answer is 3 .") is correct


def test_generator_output_is_pinned(default_splits):
    # A regression guard, not a derivation: stored datasets are only valid while the generator's
    # output stays the same. If this fails, bump the task's version, then update.
    _, splits = default_splits
    assert splits["train"][0].source == (
        "Evaluate at x = 2 in 2 * x ** 0 + - 3 * x ** 2 + 2 * x ** 3 + 2 * x ** 2 + - 2 * x ** 2 ?"
    )
