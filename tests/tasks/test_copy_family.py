"""Tests of lenggen/tasks/copy_family.py: formats, answers, splits, sizes, scoring, errors."""

import collections
import re

import pytest

from lenggen import tasks
from lenggen.tasks import TaskOptionError

SEQUENCE_TASKS = ("copy", "copy_2x", "reverse", "reverse_2x", "reverse_copy")
REPEAT_TASKS = ("copy_repeat", "copy_repeat_2x")
FAMILY = SEQUENCE_TASKS + REPEAT_TASKS + ("copy_repeat_change",)

# Independent reference: the prompt prefix and the target as a function of the source symbols.
REFERENCE = {
    "copy": ("Copy:", lambda s: s),
    "copy_2x": ("Copy:", lambda s: s + ["[NEXT]"] + s),
    "reverse": ("Reverse:", lambda s: s[::-1]),
    "reverse_2x": ("Reverse:", lambda s: s[::-1] + ["[NEXT]"] + s[::-1]),
    "reverse_copy": ("Reverse:", lambda s: s[::-1] + ["[NEXT]"] + s),
    "copy_repeat": ("Copy:", lambda s: s),
    "copy_repeat_2x": ("Copy:", lambda s: s + s),
}

# Small enough to enumerate: 2 symbols, train length 2 only, test length 3 only.
TINY = dict(
    min_length=2,
    max_train_length=2,
    max_test_length=3,
    num_symbols=2,
    num_validation=0,
    num_test_per_length=1,
)
SMALL = dict(
    min_length=2,
    max_train_length=6,
    max_test_length=9,
    num_symbols=7,
    num_train=700,
    num_validation=140,
    num_test_per_length=30,
)
# The repeat tasks hold only num_symbols (or num_symbols^2 - num_symbols) examples per length:
# enough symbols for 140 training + 35 validation examples per length.
REPEAT_SYMBOLS = {"copy_repeat": 200, "copy_repeat_2x": 200, "copy_repeat_change": 15}


def small(name, **overrides):
    """SMALL options for task `name`, with `overrides`."""
    return SMALL | {"num_symbols": REPEAT_SYMBOLS.get(name, 7)} | overrides


def _pairs(task, split):
    return {(e.source, e.target) for e in task.examples(split)}


# -- formats on hand-written examples -------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "copy",
            {
                ("Copy: s0 s0 [SEP]", "s0 s0"),
                ("Copy: s0 s1 [SEP]", "s0 s1"),
                ("Copy: s1 s0 [SEP]", "s1 s0"),
                ("Copy: s1 s1 [SEP]", "s1 s1"),
            },
        ),
        (
            "copy_2x",
            {
                ("Copy: s0 s0 [SEP]", "s0 s0 [NEXT] s0 s0"),
                ("Copy: s0 s1 [SEP]", "s0 s1 [NEXT] s0 s1"),
                ("Copy: s1 s0 [SEP]", "s1 s0 [NEXT] s1 s0"),
                ("Copy: s1 s1 [SEP]", "s1 s1 [NEXT] s1 s1"),
            },
        ),
        (
            "reverse",
            {
                ("Reverse: s0 s0 [SEP]", "s0 s0"),
                ("Reverse: s0 s1 [SEP]", "s1 s0"),
                ("Reverse: s1 s0 [SEP]", "s0 s1"),
                ("Reverse: s1 s1 [SEP]", "s1 s1"),
            },
        ),
        (
            "reverse_2x",
            {
                ("Reverse: s0 s0 [SEP]", "s0 s0 [NEXT] s0 s0"),
                ("Reverse: s0 s1 [SEP]", "s1 s0 [NEXT] s1 s0"),
                ("Reverse: s1 s0 [SEP]", "s0 s1 [NEXT] s0 s1"),
                ("Reverse: s1 s1 [SEP]", "s1 s1 [NEXT] s1 s1"),
            },
        ),
        (
            "reverse_copy",
            {
                ("Reverse: s0 s0 [SEP]", "s0 s0 [NEXT] s0 s0"),
                ("Reverse: s0 s1 [SEP]", "s1 s0 [NEXT] s0 s1"),
                ("Reverse: s1 s0 [SEP]", "s0 s1 [NEXT] s1 s0"),
                ("Reverse: s1 s1 [SEP]", "s1 s1 [NEXT] s1 s1"),
            },
        ),
    ],
)
def test_sequence_formats_enumerated(name, expected):
    # 2 symbols at length 2: 4 sequences, and 4 training examples must be all of them.
    task = tasks.get(name, num_train=4, **TINY)
    assert _pairs(task, "train") == expected
    assert {e.length for e in task.examples("train")} == {2}


@pytest.mark.parametrize(
    "name, expected",
    [
        ("copy_repeat", {("Copy: s0 s0 [SEP]", "s0 s0"), ("Copy: s1 s1 [SEP]", "s1 s1")}),
        (
            "copy_repeat_2x",
            {("Copy: s0 s0 [SEP]", "s0 s0 s0 s0"), ("Copy: s1 s1 [SEP]", "s1 s1 s1 s1")},
        ),
        (
            "copy_repeat_change",
            {
                ("Replace s0 with s1 in s0 s0 [SEP]", "s1 s1"),
                ("Replace s1 with s0 in s1 s1 [SEP]", "s0 s0"),
            },
        ),
    ],
)
def test_repeat_formats_enumerated(name, expected):
    task = tasks.get(name, num_train=2, **TINY)
    assert _pairs(task, "train") == expected


def test_test_split_format_at_test_length():
    task = tasks.get("reverse_copy", num_train=4, **(TINY | {"num_test_per_length": 8}))
    sources = sorted(e.source for e in task.examples("test"))
    assert sources[0] == "Reverse: s0 s0 s0 [SEP]" and sources[-1] == "Reverse: s1 s1 s1 [SEP]"
    assert ("Reverse: s0 s0 s1 [SEP]", "s1 s0 s0 [NEXT] s0 s0 s1") in _pairs(task, "test")


# -- answers by independent computation -----------------------------------------------------


@pytest.mark.parametrize("name", SEQUENCE_TASKS + REPEAT_TASKS)
def test_targets_follow_from_sources(name):
    prefix, target_of = REFERENCE[name]
    task = tasks.get(name, **small(name))
    for split in tasks.SPLITS:
        for example in task.examples(split):
            words = example.source.split()
            assert words[0] == prefix and words[-1] == "[SEP]"
            symbols = words[1:-1]
            assert len(symbols) == example.length
            if name in REPEAT_TASKS:
                assert len(set(symbols)) == 1
            assert example.target == " ".join(target_of(symbols))
            assert task.score(example.target, example.target)


def test_copy_repeat_change_targets_follow_from_sources():
    task = tasks.get("copy_repeat_change", **small("copy_repeat_change"))
    for split in tasks.SPLITS:
        for example in task.examples(split):
            replace, old, with_, new, in_, *rest = example.source.split()
            assert (replace, with_, in_, rest[-1]) == ("Replace", "with", "in", "[SEP]")
            assert old != new and rest[:-1] == [old] * example.length
            assert example.target == " ".join([new] * example.length)


# -- determinism and disjointness ------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILY)
def test_same_options_same_examples_and_other_seed_differs(name):
    for split in tasks.SPLITS:
        first = list(tasks.get(name, **small(name)).examples(split))
        assert first == list(tasks.get(name, **small(name)).examples(split))
        assert first != list(tasks.get(name, **small(name, seed=1)).examples(split))


@pytest.mark.parametrize("name", FAMILY)
def test_small_splits_lengths_and_disjointness(name):
    task = tasks.get(name, **small(name))
    train, validation, test = (list(task.examples(s)) for s in tasks.SPLITS)
    assert len(train) == 700 and len(validation) == 140 and len(test) == 30 * 3
    assert collections.Counter(e.length for e in train) == {n: 140 for n in range(2, 7)}
    assert collections.Counter(e.length for e in test) == {n: 30 for n in range(7, 10)}
    for split, examples in zip(tasks.SPLITS, (train, validation, test)):
        assert task.lengths(split) == tuple(sorted({e.length for e in examples}))
    assert not _pairs(task, "train") & _pairs(task, "validation")
    assert not _pairs(task, "train") & _pairs(task, "test")


def test_validation_skips_lengths_too_small_to_hold_it():
    # 7 symbols at length 2: 49 sequences < 140 training + 28 validation; length 3: 343 holds
    # 140 + 35 once validation is spread over lengths 3..6.
    task = tasks.get("copy", **SMALL)
    assert task.lengths("validation") == (3, 4, 5, 6)
    counts = collections.Counter(e.length for e in task.examples("validation"))
    assert counts == {3: 35, 4: 35, 5: 35, 6: 35}
    # Length 2 then repeats training sequences: 140 draws from 49 sequences.
    train_2 = [e.source for e in task.examples("train") if e.length == 2]
    assert len(train_2) == 140 and len(set(train_2)) <= 49


def test_quickstart_shrink_works():
    task = tasks.get("copy", max_train_length=8, max_test_length=12, num_symbols=10, num_train=2000)
    assert task.lengths("train") == tuple(range(2, 9))
    assert task.lengths("test") == tuple(range(9, 13))
    assert len(list(task.examples("train"))) == 2000
    assert not _pairs(task, "train") & _pairs(task, "validation")


def test_small_test_space_repeats_examples():
    # copy_repeat with 3 symbols has 3 examples per length; 10 per test length must repeat.
    task = tasks.get(
        "copy_repeat",
        num_symbols=3,
        num_train=30,
        num_validation=0,
        max_train_length=4,
        max_test_length=5,
        num_test_per_length=10,
    )
    test = list(task.examples("test"))
    assert len(test) == 10 and len({e.source for e in test}) <= 3


# -- full default sizes (the paper's) --------------------------------------------------------


@pytest.fixture(scope="module")
def copy_default():
    task = tasks.get("copy")
    return task, [list(task.examples(s)) for s in tasks.SPLITS]


def test_copy_default_sizes_and_lengths(copy_default):
    task, (train, validation, test) = copy_default
    assert (len(train), len(validation), len(test)) == (100_000, 7_494, 10_000)
    # 100,000 = 19 * 5,263 + 3: the 3 shortest lengths get one more.
    counts = collections.Counter(e.length for e in train)
    assert counts == {n: 5_263 + (n < 5) for n in range(2, 21)}
    assert collections.Counter(e.length for e in test) == {n: 500 for n in range(21, 41)}
    assert task.lengths("validation") == tuple(range(2, 21))
    assert len({e.source for e in train}) == 100_000  # No repeats, even at length 2.
    assert not {e.source for e in train} & {e.source for e in validation}
    words = {
        w
        for split in (train, validation, test)
        for e in split
        for w in (e.source + " " + e.target).split()
    }
    assert words == set(task.vocabulary())  # All 100 symbols appear.
    assert len(task.vocabulary()) == 102


def test_copy_repeat_default_uses_each_length_symbol_pair_at_most_once():
    task = tasks.get("copy_repeat")
    train, validation = list(task.examples("train")), list(task.examples("validation"))
    assert (len(train), len(validation)) == (100_000, 7_494)
    assert len({e.source for e in train + validation}) == 107_494
    assert len(task.vocabulary()) == 6_052 + 2


def test_defaults_are_the_papers():
    assert tasks.default_options("copy") == {
        "seed": 9842497,
        "num_train": 100_000,
        "num_validation": 7_494,
        "num_test_per_length": 500,
        "min_length": 2,
        "max_train_length": 20,
        "max_test_length": 40,
        "num_symbols": 100,
    }
    assert tasks.default_options("copy_repeat")["num_symbols"] == 6_052
    assert tasks.default_options("copy_repeat_change")["num_symbols"] == 78
    assert tasks.default_options("copy_repeat_change")["num_validation"] == 7_057


# -- vocabulary and scoring ------------------------------------------------------------------


def test_vocabulary_sorted_and_exact():
    assert tasks.get("copy_2x", **SMALL).vocabulary() == (
        "Copy:",
        "[NEXT]",
        "[SEP]",
        "s0",
        "s1",
        "s2",
        "s3",
        "s4",
        "s5",
        "s6",
    )
    change = tasks.get(
        "copy_repeat_change", **small("copy_repeat_change", num_symbols=7, num_validation=0)
    )
    assert change.vocabulary() == (
        "Replace",
        "[SEP]",
        "in",
        "s0",
        "s1",
        "s2",
        "s3",
        "s4",
        "s5",
        "s6",
        "with",
    )


@pytest.mark.parametrize(
    "prediction, correct",
    [
        ("s3 s1 [NEXT] s3 s1", True),
        ("s3 s1 [NEXT] s3 s1 ", True),  # trailing whitespace
        ("s3 s1 [NEXT] s1 s3", False),  # wrong order
        ("s3 s1 [NEXT] s3", False),  # truncated
        ("s3 s1 [NEXT] s3 s1 s1", False),  # extra token
        ("s3 s1", False),  # half the answer
        ("", False),  # nothing written
    ],
)
def test_score(prediction, correct):
    task = tasks.get("copy_2x", **SMALL)
    assert task.score(prediction, "s3 s1 [NEXT] s3 s1") is correct


def test_parse_answer():
    task = tasks.get("reverse", **SMALL)
    assert task.parse_answer("  s1   s2 ") == "s1 s2"
    assert task.parse_answer(" ") is None
    assert not task.score("s1", "")  # A target without an answer scores nothing.


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options, message",
    [
        (
            "copy",
            {"num_train": -5},
            "Task 'copy': option num_train=-5 is too small; expected an int >= 1.",
        ),
        (
            "copy",
            {"num_train": 2.5},
            "Task 'copy': option num_train=2.5 has type float; expected int.",
        ),
        (
            "copy",
            {"num_symbols": True},
            "Task 'copy': option num_symbols=True has type bool; expected int.",
        ),
        (
            "copy",
            {"min_length": "2"},
            "Task 'copy': option min_length='2' has type str; expected int.",
        ),
        (
            "reverse",
            {"min_length": 0},
            "Task 'reverse': option min_length=0 is too small; expected an int >= 1.",
        ),
        (
            "reverse",
            {"min_length": 5, "max_train_length": 4},
            "option max_train_length=4 is too small; expected an int >= 5 (min_length).",
        ),
        (
            "copy_2x",
            {"max_test_length": 20},
            "option max_test_length=20 is too small; expected an int >= 21 (max_train_length + 1)",
        ),
        (
            "copy_repeat_change",
            {"num_symbols": 1},
            "option num_symbols=1 is too small; expected an int >= 2 "
            "(the copy_repeat_change format)",
        ),
        ("copy", {"seed": -1}, "option seed=-1 is too small; expected an int >= 0"),
        ("copy", {"num_validation": -1}, "option num_validation=-1 is too small"),
        ("copy", {"num_test_per_length": 0}, "option num_test_per_length=0 is too small"),
    ],
)
def test_bad_values(name, options, message):
    with pytest.raises(TaskOptionError, match=re.escape(message)):
        tasks.get(name, **options)


def test_impossible_validation_is_refused():
    # 100 symbols: each length holds 100 repeats, fewer than its 5,263 training examples.
    with pytest.raises(TaskOptionError) as error:
        tasks.get("copy_repeat", num_symbols=100)
    assert str(error.value) == (
        "Task 'copy_repeat': cannot draw num_validation=7494 validation examples disjoint from "
        "num_train=100000 training examples: each of the 19 training buckets gets about 5263 "
        "training examples, and the largest holds only 100 distinct examples. Expected fewer "
        "training or validation examples, or a larger example space (more symbols, longer "
        "lengths)."
    )
    # Without validation the same space is allowed, and training repeats its examples.
    task = tasks.get(
        "copy_repeat", num_symbols=100, num_validation=0, num_train=3_800, num_test_per_length=5
    )
    train = [e.source for e in task.examples("train")]
    assert len(train) == 3_800 and len(set(train)) <= 19 * 100


def test_generator_output_is_pinned(copy_default):
    # A regression guard, not a derivation: stored datasets (lenggen.data.dataset) are only
    # valid while the generator's output stays the same. If this fails, the generator changed
    # (or numpy's Generator streams did): bump the task's version, then update.
    _, (train, validation, test) = copy_default
    assert train[0].source == "Copy: s21 s59 s41 s45 s26 s98 s59 [SEP]"
    assert test[0].target.split()[:4] == ["s14", "s8", "s69", "s1"]
