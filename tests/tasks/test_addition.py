"""Tests of lenggen/tasks/addition.py: format, sums by Python ints, splits, scoring, errors."""

import collections
import re

import pytest

from lenggen import tasks
from lenggen.tasks import TaskOptionError
from lenggen.tasks.addition import Addition

PROMPT = re.compile(r"Compute ((?:[0-9] )+)\+ ((?:[0-9] )+)\?")


def _operands(example):
    """(a, b) read back from the source with an independent regex."""
    match = PROMPT.fullmatch(example.source)
    assert match, example.source
    return tuple(int(group.replace(" ", "")) for group in match.groups())


def _digits(number):
    return len(str(number))


@pytest.fixture(scope="module")
def default_splits():
    task = tasks.get("addition")
    return task, {split: list(task.examples(split)) for split in tasks.SPLITS}


def one_digit_pairs(**format_options) -> set[tuple[str, str]]:
    """Every 1-digit problem's (source, target): operands 0..9 make 100 problems, all drawn
    when 100 are asked for."""
    task = tasks.get(
        "addition",
        **format_options,
        num_train=100,
        num_validation=0,
        max_train_digits=1,
        max_test_digits=2,
        num_test_per_digit_pair=1,
    )
    return {(e.source, e.target) for e in task.examples("train")}


def test_format_on_all_one_digit_problems():
    pairs = one_digit_pairs()
    assert ("Compute 7 + 8 ?", "The answer is 1 5 .") in pairs
    assert ("Compute 0 + 0 ?", "The answer is 0 .") in pairs
    assert pairs == {
        (f"Compute {a} + {b} ?", "The answer is " + " ".join(str(a + b)) + " .")
        for a in range(10)
        for b in range(10)
    }


def test_default_sizes_and_buckets(default_splits):
    task, splits = default_splits
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    assert (len(train), len(validation), len(test)) == (100_000, 7_472, 9_984)
    pair_counts = collections.Counter(tuple(map(_digits, _operands(e))) for e in train)
    # 100,000 = 64 * 1,562 + 32: the first 32 pairs in (a, b) order get one more.
    assert pair_counts == {
        (a, b): 1_562 + ((a - 1) * 8 + b - 1 < 32) for a in range(1, 9) for b in range(1, 9)
    }
    test_counts = collections.Counter(tuple(map(_digits, _operands(e))) for e in test)
    expected = {(a, b) for a in range(1, 17) for b in range(1, 17) if max(a, b) >= 9}
    assert len(expected) == 192 and test_counts == {pair: 52 for pair in expected}
    assert task.lengths("train") == tuple(range(1, 9))
    assert task.lengths("test") == tuple(range(9, 17))
    # (1, 1), (1, 2) and (2, 1) hold too few problems for validation apart from training.
    valid_pairs = {tuple(map(_digits, _operands(e))) for e in validation}
    assert valid_pairs == {(a, b) for a in range(1, 9) for b in range(1, 9)} - {
        (1, 1),
        (1, 2),
        (2, 1),
    }
    assert task.lengths("validation") == tuple(range(2, 9))


def test_lengths_are_max_digit_counts(default_splits):
    _, splits = default_splits
    for examples in splits.values():
        for example in examples:
            assert example.length == max(map(_digits, _operands(example)))


def test_answers_are_python_int_sums(default_splits):
    task, splits = default_splits
    for examples in splits.values():
        for example in examples:
            a, b = _operands(example)
            assert example.target == "The answer is " + " ".join(str(a + b)) + " ."
            assert task.parse_answer(example.target) == str(a + b)


def test_splits_disjoint(default_splits):
    _, splits = default_splits
    sources = {split: {e.source for e in examples} for split, examples in splits.items()}
    assert not sources["train"] & sources["validation"]
    assert not sources["train"] & sources["test"]
    assert not sources["validation"] & sources["test"]
    assert len(sources["validation"]) == 7_472 and len(sources["test"]) == 9_984


def test_vocabulary(default_splits):
    task, splits = default_splits
    assert task.vocabulary() == (
        "+",
        ".",
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
        "9",
        "?",
        "Compute",
        "The",
        "answer",
        "is",
    )
    words = {
        w
        for examples in splits.values()
        for e in examples
        for w in f"{e.source} {e.target}".split()
    }
    assert words == set(task.vocabulary())


def test_determinism():
    small = dict(
        num_train=300,
        num_validation=40,
        max_train_digits=3,
        max_test_digits=5,
        num_test_per_digit_pair=3,
    )
    for split in tasks.SPLITS:
        first = list(tasks.get("addition", **small).examples(split))
        assert first == list(tasks.get("addition", **small).examples(split))
        assert first != list(tasks.get("addition", seed=7, **small).examples(split))


def test_max_digit_operands_fit():
    task = tasks.get(
        "addition",
        num_train=10,
        num_validation=0,
        min_digits=17,
        max_train_digits=17,
        max_test_digits=18,
        num_test_per_digit_pair=2,
    )
    for example in task.examples("test"):
        a, b = _operands(example)
        assert max(_digits(a), _digits(b)) == 18
        assert task.parse_answer(example.target) == str(a + b)


@pytest.mark.parametrize(
    "prediction, parsed",
    [
        ("The answer is 5 6 5 .", "565"),
        ("The answer is 5 6 5 .  ", "565"),
        ("The answer is 0 5 6 5 .", "565"),  # the official scorer compares int values
        ("The answer is 5 6 5 . 7 7", "565"),  # ... and ignores what follows the "."
        ("Thus, The answer is 5 6 5 .", "565"),
        ("The answer is 1 . The answer is 2 .", "2"),  # the last answer counts
        ("The answer is 5 6 5", None),  # no final "."
        ("The answer is .", None),
        ("The answer is 5 6 x .", None),
        ("answer is 5 6 5 .", None),
        ("", None),
    ],
)
def test_parse_answer(prediction, parsed):
    assert Addition().parse_answer(prediction) == parsed


@pytest.mark.parametrize(
    "prediction, correct",
    [
        ("The answer is 5 6 5 .", True),
        ("The answer is 5 6 6 .", False),  # wrong
        ("The answer is 5 6 .", False),  # truncated
        ("The answer is 5 6 5 5 .", False),  # extra digit
        ("The answer is", False),  # missing answer
        ("", False),
    ],
)
def test_score(prediction, correct):
    assert Addition().score(prediction, "The answer is 5 6 5 .") is correct


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"max_test_digits": 19},
            "Task 'addition': option max_test_digits=19 is too large; expected an int <= 18 "
            "(operands are int64).",
        ),
        (
            {"max_test_digits": 8},
            "option max_test_digits=8 is too small; expected an int >= 9 (max_train_digits + 1).",
        ),
        ({"min_digits": 0}, "option min_digits=0 is too small; expected an int >= 1."),
        (
            {"min_digits": 3, "max_train_digits": 2},
            "option max_train_digits=2 is too small; expected an int >= 3 (min_digits).",
        ),
        ({"num_test_per_digit_pair": -1}, "option num_test_per_digit_pair=-1 is too small"),
        ({"num_train": "100"}, "option num_train='100' has type str; expected int."),
        (
            {"num_train": 10**6, "max_train_digits": 1, "max_test_digits": 2},
            "cannot draw num_validation=7472 validation examples disjoint from "
            "num_train=1000000 training examples",
        ),
    ],
)
def test_bad_values(options, message):
    with pytest.raises(TaskOptionError, match=re.escape(message)):
        tasks.get("addition", **options)


def test_generator_output_is_pinned(default_splits):
    # A regression guard, not a derivation: stored datasets (lenggen.data.dataset) are only
    # valid while the generator's output stays the same. If this fails, the generator changed
    # (or numpy's Generator streams did): bump the task's version, then update.
    _, splits = default_splits
    assert splits["train"][0].source == "Compute 2 8 6 + 4 0 ?"


# -- scratchpad ------------------------------------------------------------------------------

STEP = re.compile(
    r"in ([0-9]) , ([0-9]) comp \1 \+ \2 \+ carry = ([0-9]+) \+ ([01]) = ([0-9]+) "
    r"out ([0-9]) \[ carry: ([01]) \] re (.*)"
)


def test_scratchpad_columns_by_python_ints():
    task = tasks.get(
        "addition",
        scratchpad="full",
        num_train=300,
        num_validation=40,
        max_train_digits=4,
        max_test_digits=6,
        num_test_per_digit_pair=2,
    )
    for split in tasks.SPLITS:
        for example in task.examples(split):
            a, b = _operands(example)
            assert set(example.target.split()) <= set(task.vocabulary())
            pad, answer = example.target.removeprefix("Thinking step by step: ").split(" . Thus , ")
            assert answer == "The answer is " + " ".join(str(a + b)) + " ."
            assert task.parse_answer(example.target) == str(a + b)
            width, carry, digits = max(_digits(a), _digits(b)), 0, []
            steps = pad.split(" # ")
            assert len(steps) == width + (len(str(a + b)) > width)
            for i, step in enumerate(steps):
                match = STEP.fullmatch(step)
                assert match, step
                x, y, pair, carry_in, total, out, carry_out, rest = match.groups()
                column = 10**i
                if i < width:  # A column of the operands, right to left.
                    assert (int(x), int(y)) == (a // column % 10, b // column % 10)
                    # The columns to the left, as numbers (official: int of the digits).
                    left = [" ".join(str(n // (10 * column))) for n in (a, b)]
                    assert rest == (" + ".join(left) if i < width - 1 else "+")
                else:  # The final carry.
                    assert (x, y, rest) == ("0", "0", "+")
                assert int(pair) == int(x) + int(y) and int(carry_in) == carry
                assert int(total) == int(pair) + carry
                assert (int(out), int(carry_out)) == (int(total) % 10, int(total) // 10)
                carry = int(carry_out)
                digits.append(out)
            assert int("".join(reversed(digits))) == a + b


def test_scratchpad_vocabulary_and_default_unchanged():
    task = tasks.get("addition", scratchpad="minimal")
    assert set(task.vocabulary()) == set(Addition().vocabulary()) | {
        "Thinking",
        "step",
        "by",
        "step:",
        "Thus",
        ",",
        "#",
        "[",
        "]",
        "in",
        "comp",
        "out",
        "re",
        "carry",
        "carry:",
        "=",
    } | {str(n) for n in range(20)}
    assert tasks.default_options("addition")["scratchpad"] == "none"
