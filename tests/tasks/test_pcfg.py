"""Tests of lenggen/tasks/pcfg.py with source="generated": targets by a separate evaluator, sizes,
buckets, determinism (test_pcfg_real.py tests the default, source="real").

The evaluator here reads the prefix-order source right to left with a stack (a string argument
is pushed when complete, a function pops its arguments), a different algorithm from the
generator's recursive descent, with the functions written out again from Hupkes et al. (2020).
"""

import collections
import itertools
import re
import string

import pytest

from lenggen import tasks
from lenggen.tasks import TaskOptionError, pcfg_grammar

UNARY = {
    "copy": lambda x: list(x),
    "reverse": lambda x: list(reversed(x)),
    "shift": lambda x: x[1:] + [x[0]],
    "echo": lambda x: x + [x[-1]],
    "swap_first_last": lambda x: [x[-1]] + x[1:-1] + [x[0]],
    "repeat": lambda x: x * 2,
}
BINARY = {
    "append": lambda x, y: x + y,
    "prepend": lambda x, y: y + x,
    "remove_first": lambda x, y: y,
    "remove_second": lambda x, y: x,
}
SYMBOLS = {f"{a}{n}" for a, n in itertools.product(string.ascii_uppercase, range(1, 21))}


def stack_evaluate(source: str) -> tuple[list[str], list[int]]:
    """(target, lengths of the string arguments) of a source, right to left with a stack."""
    stack, run, strings = [], [], []

    def flush():
        if run:
            stack.append(run[::-1])
            strings.append(len(run))
            run.clear()

    for word in reversed(source.split()):
        if word in SYMBOLS:
            run.append(word)
        elif word == ",":
            flush()
        elif word in UNARY:
            flush()
            stack.append(UNARY[word](stack.pop()))
        else:
            flush()
            first, second = stack.pop(), stack.pop()  # the first argument was pushed last
            stack.append(BINARY[word](first, second))
    flush()
    assert len(stack) == 1, source  # a well-formed expression leaves exactly one value
    return stack[0], strings


def _expression(example):
    match = re.fullmatch(r"Solve: (.+) \[SEP\]", example.source)
    assert match, example.source
    return match.group(1)


@pytest.fixture(scope="module")
def default_splits():
    task = tasks.get("pcfg", source="generated")
    return task, {split: list(task.examples(split)) for split in tasks.SPLITS}


@pytest.mark.parametrize(
    "source, target",
    [
        # The official processor's example (pcfg_instance_processor.py) and PCFG SET's own.
        (
            "echo append copy Q10 E4 S15 P7 , shift remove_second K15 D8 M9 W5 , H12 Q5 G10 J6 J10",
            "Q10 E4 S15 P7 D8 M9 W5 K15 K15",
        ),
        ("repeat A1 B1 C1", "A1 B1 C1 A1 B1 C1"),
        ("echo remove_first D1 K1 , E1 F1", "E1 F1 F1"),
        ("append swap_first_last F1 G1 H1 , repeat I1 J1", "H1 G1 F1 I1 J1 I1 J1"),
        ("append remove_first A1 A2 , B1 B2 , C1 C2", "B1 B2 C1 C2"),
        ("prepend shift A1 A2 A3 , reverse B1 B2", "B2 B1 A2 A3 A1"),
    ],
)
def test_hand_worked_targets(source, target):
    assert " ".join(pcfg_grammar.evaluate(source.split())) == target
    assert " ".join(stack_evaluate(source)[0]) == target


def test_default_sizes_and_buckets(default_splits):
    task, splits = default_splits
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    assert (len(train), len(validation), len(test)) == (72_909, 4_050, 11_333)
    # 72,909 = 8 * 9,113 + 5; 11,333 = 27 * 419 + 20; 4,050 = 8 * 506 + 2.
    assert collections.Counter(e.length for e in train) == {
        n: 9_113 + (n <= 5) for n in range(1, 9)
    }
    assert collections.Counter(e.length for e in test) == {n: 419 + (n <= 28) for n in range(9, 36)}
    assert collections.Counter(e.length for e in validation) == {
        n: 506 + (n <= 2) for n in range(1, 9)
    }
    assert task.lengths("test") == tuple(range(9, 36))
    sources = {split: {e.source for e in examples} for split, examples in splits.items()}
    assert len(sources["train"]) == 72_909
    assert not sources["train"] & sources["validation"]
    assert not (sources["train"] | sources["validation"]) & sources["test"]


def test_targets_by_the_stack_evaluator(default_splits):
    task, splits = default_splits
    for examples in splits.values():
        for example in examples:
            expression = _expression(example)
            target, strings = stack_evaluate(expression)
            assert example.target == " ".join(target)
            assert task.parse_answer(example.target) == example.target
            words = expression.split()
            assert example.length == sum(w in UNARY or w in BINARY for w in words)
            assert all(2 <= n <= 5 for n in strings)
            assert 1 <= len(target) <= 256


def test_function_mix(default_splits):
    # Unary with probability 0.75: about 3 unary per binary function.
    _, splits = default_splits
    counts = collections.Counter(
        "unary" if w in UNARY else "binary"
        for e in splits["test"]
        for w in _expression(e).split()
        if w in UNARY or w in BINARY
    )
    assert 2.8 < counts["unary"] / counts["binary"] < 3.2
    used = {w for e in splits["train"] for w in _expression(e).split()}
    assert used == set(UNARY) | set(BINARY) | {","} | SYMBOLS


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
        == ({"Solve:", "[SEP]", ","} | set(UNARY) | set(BINARY) | SYMBOLS)
    )
    assert len(task.vocabulary()) == 3 + 10 + 520


def test_max_target_length_is_enforced():
    task = tasks.get(
        "pcfg",
        source="generated",
        num_train=40,
        num_validation=0,
        num_test=60,
        max_test_functions=12,
        max_target_length=17,
    )
    for split in ("train", "test"):
        for example in task.examples(split):
            target, _ = stack_evaluate(_expression(example))
            assert example.target == " ".join(target) and len(target) <= 17


def test_determinism():
    small = dict(
        source="generated", num_train=300, num_validation=40, num_test=60, max_test_functions=12
    )
    for split in tasks.SPLITS:
        first = list(tasks.get("pcfg", **small).examples(split))
        assert first == list(tasks.get("pcfg", **small).examples(split))
        assert first != list(tasks.get("pcfg", seed=1, **small).examples(split))


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"max_target_length": 39},
            "Task 'pcfg': option max_target_length=39 is too small; expected an int >= 40 "
            "(a string "
            "argument plus one symbol per function).",
        ),
        (
            {"max_test_functions": 8},
            "option max_test_functions=8 is too small; expected an int >= 9 "
            "(max_train_functions + 1)",
        ),
        ({"min_functions": 0}, "option min_functions=0 is too small; expected an int >= 1."),
        ({"num_test": 0}, "option num_test=0 is too small"),
    ],
)
def test_bad_values(options, message):
    with pytest.raises(TaskOptionError, match=re.escape(message)):
        tasks.get("pcfg", **options)


def test_unknown_function():
    message = (
        "Unknown PCFG SET function 'swap'; expected one of copy, reverse, shift, echo, "
        "swap_first_last, repeat, append, prepend, remove_first, remove_second."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        pcfg_grammar.apply("swap", ["A1"])


def test_generator_output_is_pinned(default_splits):
    # A regression guard, not a derivation: stored datasets are only valid while the generator's
    # output stays the same. If this fails, bump the task's version, then update.
    _, splits = default_splits
    assert splits["train"][0].source == "Solve: append E9 F19 , B1 F7 [SEP]"
