"""Tests of the addition formats beyond the paper (lenggen/tasks/addition.py): the reversed
(least-significant digit first) format and the long-addition task."""

import re

import numpy as np
import pytest

from lenggen import tasks
from lenggen.tasks import Example, TaskOptionError
from lenggen.tasks.addition import Addition, LongAddition, spaced
from tests.tasks.test_addition import one_digit_pairs

PROMPT = re.compile(r"Compute ((?:[0-9] )+)\+ ((?:[0-9] )+)\?")
ANSWER = re.compile(r"The answer is ((?:[0-9] )+)\.")


def _reversed_number(words: str) -> int:
    """ "0 3 2 1 " -> 1230: digits written least-significant first, read back."""
    return int(words.replace(" ", "")[::-1])


def _check_reversed(example) -> tuple[int, int]:
    """Reads (a, b) and the sum back with an independent regex; asserts the sum is a + b."""
    a, b = map(_reversed_number, PROMPT.fullmatch(example.source).groups())
    (total,) = map(_reversed_number, ANSWER.fullmatch(example.target).groups())
    assert total == a + b, example
    return a, b


def test_spaced_hand_worked():
    assert spaced(565) == "5 6 5"
    assert spaced(1230, "lsb_first") == "0 3 2 1"
    assert spaced(7, "lsb_first") == "7"


def test_reversed_format_on_all_one_digit_problems():
    pairs = one_digit_pairs(digit_order="lsb_first")
    # 7 + 8 = 15, written "5 1"; 9 + 1 = 10, written "0 1".
    assert ("Compute 7 + 8 ?", "The answer is 5 1 .") in pairs
    assert ("Compute 9 + 1 ?", "The answer is 0 1 .") in pairs
    assert len(pairs) == 100


def test_reversed_format_hand_worked_and_parsed():
    # 12 + 345 = 357 and 537 + 28 = 565, least-significant digit first.
    task = Addition(digit_order="lsb_first")
    assert task.parse_answer("The answer is 7 5 3 .") == "357"
    assert task.parse_answer("The answer is 0 0 1 .") == "100"  # trailing zeros are leading
    assert task.parse_answer("The answer is 5 6 5 0 0 .") == "565"
    assert task.parse_answer("The answer is - 1 .") is None
    assert task.parse_answer("The answer is 7 5") is None
    assert task.score("The answer is 7 5 3 .", "The answer is 7 5 3 .")
    assert not task.score("The answer is 3 5 7 .", "The answer is 7 5 3 .")


def test_reversed_examples_are_the_defaults_reversed():
    """Same seed, same draws: each reversed example is the paper-format example with every
    number's digits reversed."""
    small = dict(num_train=200, num_validation=20, max_train_digits=3, max_test_digits=5)
    paper, reversed_ = (
        tasks.get("addition", **small),
        tasks.get("addition", digit_order="lsb_first", **small),
    )

    def flip(text: str) -> str:
        return re.sub(r"[0-9](?: [0-9])*", lambda m: m.group(0)[::-1], text)

    for split in tasks.SPLITS:
        for p, r in zip(paper.examples(split), reversed_.examples(split), strict=True):
            assert (flip(p.source), flip(p.target), p.length) == (r.source, r.target, r.length)
            _check_reversed(r)


def test_default_is_the_papers_format():
    assert Addition().digit_order == "msb_first"
    assert tasks.default_options("addition")["digit_order"] == "msb_first"


LONG_SMALL = dict(
    num_train=400,
    num_validation=40,
    max_train_digits=20,
    max_test_digits=60,
    num_test_per_digit_pair=2,
)


@pytest.fixture(scope="module")
def long_task():
    return tasks.get("long_addition", **LONG_SMALL)


def test_long_addition_defaults():
    task = LongAddition()
    assert (task.max_train_digits, task.max_test_digits, task.digit_order) == (
        20,
        100,
        "lsb_first",
    )
    assert task.vocabulary() == Addition().vocabulary()


def test_long_addition_buckets_and_sums(long_task):
    train = list(long_task.examples("train"))
    test = list(long_task.examples("test"))
    assert len(train) == 400 and len(test) == 40 * 2
    # Training: every (a, b) digit pair in [1, 20]^2, one example each.
    widths = {tuple(len(str(n)) for n in _check_reversed(e)) for e in train}
    assert widths == {(a, b) for a in range(1, 21) for b in range(1, 21)}
    # Test: equal widths 21..60, beyond int64; sums checked by Python ints.
    test_widths = sorted(len(str(_check_reversed(e)[0])) for e in test)
    assert test_widths == sorted(list(range(21, 61)) * 2)
    for e in test:
        a, b = _check_reversed(e)
        assert len(str(a)) == len(str(b)) == e.length
        assert long_task.parse_answer(e.target) == str(a + b)
    assert long_task.lengths("test") == tuple(range(21, 61))


def test_long_addition_determinism():
    for split in tasks.SPLITS:
        first = list(tasks.get("long_addition", **LONG_SMALL).examples(split))
        assert first == list(tasks.get("long_addition", **LONG_SMALL).examples(split))
        assert first != list(tasks.get("long_addition", seed=7, **LONG_SMALL).examples(split))


def test_long_addition_msb_first():
    task = tasks.get("long_addition", digit_order="msb_first", **LONG_SMALL)
    example = next(iter(task.examples("test")))
    a, b = (int(g.replace(" ", "")) for g in PROMPT.fullmatch(example.source).groups())
    assert example.target == f"The answer is {spaced(a + b)} ."


@pytest.mark.parametrize(
    "name, options, message",
    [
        (
            "addition",
            {"digit_order": "reversed"},
            "Task 'addition': option digit_order='reversed' is unknown; expected one of "
            "'msb_first', 'lsb_first'.",
        ),
        (
            "addition",
            {"digit_order": "lsb_first", "scratchpad": "full"},
            "option digit_order='lsb_first' has no scratchpad format",
        ),
        (
            "long_addition",
            {"max_test_digits": 1001},
            "Task 'long_addition': option max_test_digits=1001 is too large; expected an int "
            "<= 1000 (the long-addition limit).",
        ),
        (
            "long_addition",
            {"max_train_digits": 20, "max_test_digits": 20},
            "option max_test_digits=20 is too small; expected an int >= 21",
        ),
    ],
)
def test_bad_values(name, options, message):
    with pytest.raises(TaskOptionError, match=re.escape(message)):
        tasks.get(name, **options)


def test_zero_pad_hand_worked():
    # Cho et al. 2024's format: 653 + 49 = 702 is 653 + 049 = 0702.
    paper = Addition(zero_pad=True)
    reversed_ = Addition(zero_pad=True, digit_order="lsb_first")
    item = np.array([653, 49])
    bucket = paper._bucket(3, 2)
    assert paper._example(bucket, item) == Example(
        "Compute 6 5 3 + 0 4 9 ?", "The answer is 0 7 0 2 .", 3
    )
    assert reversed_._example(bucket, item) == Example(
        "Compute 3 5 6 + 9 4 0 ?", "The answer is 2 0 7 0 .", 3
    )
    assert reversed_.parse_answer("The answer is 2 0 7 0 .") == "702"
    assert paper.parse_answer("The answer is 0 7 0 2 .") == "702"


def test_zero_pad_widths_on_long_addition():
    task = tasks.get("long_addition", zero_pad=True, **LONG_SMALL)
    for example in task.examples("train"):
        a_words, b_words = PROMPT.fullmatch(example.source).groups()
        (answer_words,) = ANSWER.fullmatch(example.target).groups()
        width = len(a_words.split())
        assert len(b_words.split()) == width == example.length
        assert len(answer_words.split()) == width + 1
        _check_reversed(example)


def test_zero_pad_refuses_a_scratchpad():
    with pytest.raises(TaskOptionError, match="option zero_pad=True has no scratchpad format"):
        tasks.get("addition", zero_pad=True, scratchpad="full")
