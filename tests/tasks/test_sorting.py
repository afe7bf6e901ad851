"""Tests of lenggen/tasks/sorting.py: formats, answers by `sorted`, splits, scratchpad, parsing."""

import collections
import itertools
import re
import string

import pytest

from lenggen import tasks
from lenggen.tasks import TaskOptionError

SYMBOLS = list(string.ascii_uppercase + string.ascii_lowercase[:24])
PROMPT = re.compile(r"Sort the following list \[ (.+) \] \.")


def _items(example, multi_digit):
    """The list read back from the source: symbols, or ints from their spaced digits."""
    match = PROMPT.fullmatch(example.source)
    assert match, example.source
    items = match.group(1).split(" , ")
    return [int(i.replace(" ", "")) for i in items] if multi_digit else items


def _words(items, multi_digit):
    return [" ".join(str(i)) for i in items] if multi_digit else list(items)


def _answer(items, multi_digit):
    return f"The sorted list is [ {' , '.join(_words(sorted(items), multi_digit))} ] ."


@pytest.fixture(scope="module", params=["sort_single_token", "sort_multi_digit"])
def default_splits(request):
    task = tasks.get(request.param)
    return task, {split: list(task.examples(split)) for split in tasks.SPLITS}


def test_every_two_symbol_list_exactly_once():
    task = tasks.get(
        "sort_single_token",
        num_train=2_500,
        num_validation=0,
        min_length=2,
        max_train_length=2,
        max_test_length=3,
        num_test_per_length=1,
    )
    pairs = {(e.source, e.target) for e in task.examples("train")}
    expected = {
        (
            f"Sort the following list [ {a} , {b} ] .",
            f"The sorted list is [ {' , '.join(sorted([a, b]))} ] .",
        )
        for a, b in itertools.product(SYMBOLS, repeat=2)
    }
    assert len(expected) == 2_500 and pairs == expected
    assert ("Sort the following list [ d , b ] .", "The sorted list is [ b , d ] .") in pairs


def test_default_sizes_lengths_and_disjointness(default_splits):
    task, splits = default_splits
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    assert (len(train), len(validation), len(test)) == (100_000, 7_500, 10_000)
    assert collections.Counter(e.length for e in train) == {n: 20_000 for n in range(4, 9)}
    assert collections.Counter(e.length for e in test) == {n: 1_250 for n in range(9, 17)}
    sources = {split: {e.source for e in examples} for split, examples in splits.items()}
    assert len(sources["train"]) == 100_000  # 50^4 lists of 4 hold 20,000 distinct ones
    assert not sources["train"] & sources["validation"]
    assert not (sources["train"] | sources["validation"]) & sources["test"]


def test_answers_by_sorted(default_splits):
    task, splits = default_splits
    multi_digit = task.name == "sort_multi_digit"
    # Every validation and test example, every third training example (time).
    for examples in (splits["train"][::3], splits["validation"], splits["test"]):
        for example in examples:
            items = _items(example, multi_digit)
            assert len(items) == example.length
            if multi_digit:
                assert all(10 <= i <= 9999 for i in items)
            else:
                assert set(items) <= set(SYMBOLS)
            assert example.target == _answer(items, multi_digit)
            assert task.parse_answer(example.target) == " , ".join(map(str, sorted(items)))


def test_vocabulary(default_splits):
    task, splits = default_splits
    words = {
        w
        for examples in splits.values()
        for e in examples
        for w in f"{e.source} {e.target}".split()
    }
    format_words = {"Sort", "the", "following", "list", "[", ",", "]", ".", "The", "sorted", "is"}
    items = set("0123456789") if task.name == "sort_multi_digit" else set(SYMBOLS)
    assert words == set(task.vocabulary()) == format_words | items


@pytest.mark.parametrize("name", ["sort_single_token", "sort_multi_digit"])
def test_scratchpad_is_a_selection_sort(name):
    multi_digit = name == "sort_multi_digit"
    task = tasks.get(
        name, scratchpad="full", num_train=100, num_validation=10, num_test_per_length=3
    )
    for split in tasks.SPLITS:
        for example in task.examples(split):
            items = _items(example, multi_digit)
            assert set(example.target.split()) <= set(task.vocabulary())
            pad, answer = example.target.removeprefix("Thinking step by step: ").split(" . Thus , ")
            assert answer == _answer(items, multi_digit)
            steps = pad.split(" # ")
            assert len(steps) == len(items)
            for i, step in enumerate(steps):
                match = re.fullmatch(
                    r"in (.+) comp The minimum of the unsorted portion out (.+) re \[ ?(.*?) ?\]",
                    step,
                )
                assert match, step
                # Step i outputs the i-th smallest; the rest is a permutation of the larger ones.
                out = match.group(2)
                assert out == _words([sorted(items)[i]], multi_digit)[0]
                rest = [r for r in match.group(3).split(" , ") if r]
                assert sorted(rest) == sorted(_words(sorted(items)[i + 1 :], multi_digit))
            assert task.parse_answer(example.target) == " , ".join(map(str, sorted(items)))


def test_scratchpad_by_hand():
    # Official selection sort on [g, K]: K (before g in the symbol order) is swapped to the front.
    task = tasks.get(
        "sort_single_token",
        scratchpad="no_computation",
        num_train=2_500,
        num_validation=0,
        min_length=2,
        max_train_length=2,
        max_test_length=3,
        num_test_per_length=1,
    )
    targets = {e.source: e.target for e in task.examples("train")}
    assert targets["Sort the following list [ g , K ] ."] == (
        "Thinking step by step: in g out K re [ g ] # in g out g re [ ] . Thus , "
        "The sorted list is [ K , g ] ."
    )


@pytest.mark.parametrize(
    "prediction, parsed",
    [
        ("The sorted list is [ b , d ] .", "b , d"),
        ("The sorted list is [ b , d ] . x", "b , d"),
        (
            "Thinking step by step: in b out b re [ d ] . Thus , The sorted list is [ b , d ] .",
            "b , d",
        ),
        ("The sorted list is [ ] .", ""),
        ("The sorted list is [ b d ] .", None),  # two words in one item
        ("The sorted list is [ b , , d ] .", None),
        # The official scorer's final "." is optional (`\]\s*\.?`): a missing one still reads.
        ("The sorted list is [ b , d ]", "b , d"),
        ("The sorted list is [ b , d ] x", "b , d"),
        ("The sorted list is [ b , d", None),
        ("The sorted list is b , d .", None),
        ("", None),
    ],
)
def test_parse_single_token(prediction, parsed):
    assert tasks.get("sort_single_token").parse_answer(prediction) == parsed


@pytest.mark.parametrize(
    "prediction, parsed",
    [
        ("The sorted list is [ 1 7 , 4 2 ] .", "17 , 42"),
        ("The sorted list is [ 0 1 7 , 4 2 ] .", "17 , 42"),
        ("The sorted list is [ 1 7 , x ] .", None),
        ("The sorted list is [ 1 7 , ] .", None),
        ("The sorted list is [ 1 7 , 4 2 ]", "17 , 42"),
    ],
)
def test_parse_multi_digit(prediction, parsed):
    assert tasks.get("sort_multi_digit").parse_answer(prediction) == parsed


@pytest.mark.parametrize(
    "prediction, correct",
    [
        ("The sorted list is [ 1 7 , 4 2 ] .", True),
        ("The sorted list is [ 4 2 , 1 7 ] .", False),
        ("The sorted list is [ 1 7 ] .", False),
        ("The sorted list is [ 1 7 , 4 2 , 4 2 ] .", False),
        ("", False),
    ],
)
def test_score(prediction, correct):
    target = "The sorted list is [ 1 7 , 4 2 ] ."
    assert tasks.get("sort_multi_digit").score(prediction, target) is correct


def test_determinism():
    small = dict(num_train=300, num_validation=40, num_test_per_length=5)
    for name in ("sort_single_token", "sort_multi_digit"):
        for split in tasks.SPLITS:
            first = list(tasks.get(name, **small).examples(split))
            assert first == list(tasks.get(name, **small).examples(split))
            assert first != list(tasks.get(name, seed=1, **small).examples(split))


def test_no_intermediate_is_refused():
    with pytest.raises(TaskOptionError, match="sort_multi_digit steps have no intermediate"):
        tasks.get("sort_multi_digit", scratchpad="no_intermediate")


def test_generator_output_is_pinned(default_splits):
    # A regression guard, not a derivation: stored datasets are only valid while the generator's
    # output stays the same. If this fails, bump the task's version, then update.
    task, splits = default_splits
    assert (
        splits["train"][0].source
        == {
            "sort_single_token": "Sort the following list [ c , H , p , R , T ] .",
            "sort_multi_digit": "Sort the following list [ 5 6 1 2 , 1 5 7 5 , 8 3 6 4 , 3 4 4 7 , "
            "3 8 1 2 ] .",
        }[task.name]
    )
