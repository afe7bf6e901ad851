"""Tests of lenggen/tasks/parity.py: format, answers by counting, splits, scratchpad."""

import collections
import itertools
import re

import pytest

from lenggen import tasks

PROMPT = re.compile(r"Is the number of 1's even in the sequence \[ ([01](?: , [01])*) \] \?")


def _bits(example):
    match = PROMPT.fullmatch(example.source)
    assert match, example.source
    return [int(b) for b in match.group(1).split(" , ")]


def _answer(bits):
    return "Yes" if bits.count(1) % 2 == 0 else "No"


@pytest.fixture(scope="module")
def default_splits():
    task = tasks.get("parity")
    return task, {split: list(task.examples(split)) for split in tasks.SPLITS}


def test_every_three_bit_sequence_exactly_once():
    task = tasks.get(
        "parity",
        num_train=8,
        num_validation=0,
        max_train_length=3,
        max_test_length=4,
        num_test_per_length=1,
    )
    pairs = {(e.source, e.target) for e in task.examples("train")}
    expected = {
        (
            f"Is the number of 1's even in the sequence [ {a} , {b} , {c} ] ?",
            f"The answer is {'Yes' if (a + b + c) % 2 == 0 else 'No'} .",
        )
        for a, b, c in itertools.product((0, 1), repeat=3)
    }
    assert len(pairs) == 8 and pairs == expected
    # The paper's example: two 1s, an even number.
    assert (
        "Is the number of 1's even in the sequence [ 1 , 0 , 1 ] ?",
        "The answer is Yes .",
    ) in pairs


def test_default_sizes_and_lengths(default_splits):
    task, splits = default_splits
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    assert (len(train), len(validation), len(test)) == (100_000, 7_498, 10_000)
    # 100,000 = 6 * 16,666 + 4: lengths 3-6 get one more.
    assert collections.Counter(e.length for e in train) == {
        n: 16_666 + (n < 7) for n in range(3, 9)
    }
    assert collections.Counter(e.length for e in validation) == {
        n: 1_249 + (n < 7) for n in range(3, 9)
    }
    assert collections.Counter(e.length for e in test) == {n: 1_250 for n in range(9, 17)}
    # Training lengths hold 2^L <= 256 sequences: every one of them is drawn, and validation
    # repeats training sequences, as in the paper (no disjoint validation set exists).
    assert len({e.source for e in train}) == sum(2**n for n in range(3, 9))
    assert {e.source for e in validation} <= {e.source for e in train}
    assert not {e.source for e in train} & {e.source for e in test}


def test_answers_by_counting(default_splits):
    task, splits = default_splits
    for examples in splits.values():
        for example in examples:
            bits = _bits(example)
            assert len(bits) == example.length
            assert example.target == f"The answer is {_answer(bits)} ."
            assert task.parse_answer(example.target) == _answer(bits)


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
            "Is",
            "the",
            "number",
            "of",
            "1's",
            "even",
            "in",
            "sequence",
            "[",
            "0",
            ",",
            "1",
            "]",
            "?",
            "The",
            "answer",
            "is",
            "Yes",
            "No",
            ".",
        }
    )


def test_scratchpad_by_hand():
    task = tasks.get(
        "parity",
        scratchpad="full",
        num_train=8,
        num_validation=0,
        max_train_length=3,
        max_test_length=4,
        num_test_per_length=1,
    )
    targets = {e.source: e.target for e in task.examples("train")}
    assert targets["Is the number of 1's even in the sequence [ 1 , 0 , 1 ] ?"] == (
        "Thinking step by step: in 1 comp 1 ** par = 1 ** 0 out 1 [ par: 1 ] re [ 0 , 1 ] # "
        "in 0 comp 0 ** par = 0 ** 1 out 1 [ par: 1 ] re [ 1 ] # "
        "in 1 comp 1 ** par = 1 ** 1 out 0 [ par: 0 ] re [ ] . Thus , The answer is Yes ."
    )


def test_scratchpad_running_parity():
    task = tasks.get(
        "parity", scratchpad="no_remaining", num_train=120, num_validation=12, num_test_per_length=4
    )
    for split in tasks.SPLITS:
        for example in task.examples(split):
            bits = _bits(example)
            assert set(example.target.split()) <= set(task.vocabulary())
            outputs = [int(o) for o in re.findall(r"out ([01])", example.target)]
            assert outputs == [sum(bits[: i + 1]) % 2 for i in range(len(bits))]
            assert task.parse_answer(example.target) == _answer(bits)


@pytest.mark.parametrize(
    "prediction, correct",
    [
        ("The answer is Yes .", True),
        ("The answer is No .", False),
        ("The answer is yes .", False),
        ("The answer is Yes", False),
        ("", False),
    ],
)
def test_score(prediction, correct):
    assert tasks.get("parity").score(prediction, "The answer is Yes .") is correct


def test_determinism():
    small = dict(num_train=300, num_validation=40, num_test_per_length=5)
    for split in tasks.SPLITS:
        first = list(tasks.get("parity", **small).examples(split))
        assert first == list(tasks.get("parity", **small).examples(split))
        assert first != list(tasks.get("parity", seed=1, **small).examples(split))


def test_generator_output_is_pinned(default_splits):
    # A regression guard, not a derivation: stored datasets are only valid while the generator's
    # output stays the same. If this fails, bump the task's version, then update.
    _, splits = default_splits
    assert splits["train"][0].source == (
        "Is the number of 1's even in the sequence [ 0 , 0 , 1 , 1 ] ?"
    )
