"""Tests of lenggen/tasks/lego.py: format, answers by resolving the chain, splits, scratchpad."""

import collections
import re

import pytest

from lenggen import tasks

PROMPT = re.compile(r"If (.+) \. Then , what is the value of ([a-z]) \?")
CLAUSE = re.compile(r"([a-z]) = (?:([+-]1)|([+-]) ([a-z]))")
NAMES = ("lego", "lego_shuffled")


def _problem(example):
    """(clauses as (variable, value or None, sign, parent), query) read from the source."""
    match = PROMPT.fullmatch(example.source)
    assert match, example.source
    clauses = []
    for text in match.group(1).split(" , "):
        clause = CLAUSE.fullmatch(text)
        assert clause, text
        clauses.append(clause.groups())
    return clauses, match.group(2)


def _resolve(clauses):
    """Every variable's value (+1 / -1 as ints), resolving the clauses in any order."""
    values, pending = {}, list(clauses)
    while pending:
        progress = [c for c in pending if c[1] is not None or c[3] in values]
        assert progress, pending  # the chain must be resolvable
        for variable, value, sign, parent in progress:
            values[variable] = (
                int(value)
                if value is not None
                else (values[parent] if sign == "+" else -values[parent])
            )
        pending = [c for c in pending if c not in progress]
    return values


def _chain(clauses):
    """The variables from the root down the chain."""
    parents = {variable: parent for variable, _, _, parent in clauses}
    order = [next(variable for variable, value, _, _ in clauses if value is not None)]
    children = {parent: variable for variable, parent in parents.items() if parent}
    while order[-1] in children:
        order.append(children[order[-1]])
    return order


@pytest.fixture(scope="module", params=NAMES)
def default_splits(request):
    task = tasks.get(request.param)
    return task, {split: list(task.examples(split)) for split in tasks.SPLITS}


def test_papers_example_resolves():
    clauses, query = _problem(
        tasks.Example("If c = + t , t = - q , q = -1 . Then , what is the value of c ?", "", 3)
    )
    assert _resolve(clauses)[query] == 1 and _chain(clauses) == ["q", "t", "c"]


def test_default_sizes_lengths_and_disjointness(default_splits):
    task, splits = default_splits
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    assert (len(train), len(validation), len(test)) == (100_000, 7_498, 9_984)
    assert collections.Counter(e.length for e in train) == {n: 20_000 for n in range(4, 9)}
    # Whole chains of L // 2 queries per test length, as the script: (1,250 // (L // 2)) * (L // 2).
    assert collections.Counter(e.length for e in test) == {
        9: 1_248,
        10: 1_250,
        11: 1_250,
        12: 1_248,
        13: 1_248,
        14: 1_246,
        15: 1_246,
        16: 1_248,
    }
    assert task.lengths("validation") == tuple(range(4, 9))
    sources = {split: {e.source for e in examples} for split, examples in splits.items()}
    assert not sources["train"] & sources["validation"]
    assert not (sources["train"] | sources["validation"]) & sources["test"]


def test_answers_by_resolving_the_chain(default_splits):
    task, splits = default_splits
    shuffled = task.name == "lego_shuffled"
    orders = collections.Counter()
    # Every validation and test example, every third training example (time).
    for examples in (splits["train"][::3], splits["validation"], splits["test"]):
        for example in examples:
            clauses, query = _problem(example)
            chain = _chain(clauses)
            variables = [c[0] for c in clauses]
            assert len(clauses) == example.length == len(set(variables)) == len(chain)
            # Only the second half of the chain is asked for.
            assert chain.index(query) >= (example.length + 1) // 2
            value = f"{_resolve(clauses)[query]:+d}"
            assert example.target == f"The answer is {value} ."
            assert task.parse_answer(example.target) == value
            orders[variables == chain] += 1
    if shuffled:  # A random order is the chain order 1 / L! of the time.
        assert orders[True] < 0.05 * orders.total()
    else:
        assert orders == {True: orders.total()}


def test_queries_cover_the_second_half(default_splits):
    _, splits = default_splits
    positions = collections.Counter()
    for example in splits["test"]:
        clauses, query = _problem(example)
        positions[example.length, _chain(clauses).index(query)] += 1
    assert {i for n, i in positions if n == 16} == set(range(8, 16))
    assert {i for n, i in positions if n == 9} == set(range(5, 9))


def test_buckets_are_length_and_query_index_with_the_scripts_counts(default_splits):
    # The official script's category is (L, query index), each chain asked at every one of its
    # L // 2 second-half indices: so each length's examples are split evenly over them.
    task, splits = default_splits
    counts = {split: collections.Counter() for split in tasks.SPLITS}
    for split, examples in splits.items():
        for example in examples:
            clauses, query = _problem(example)
            counts[split][example.length, _chain(clauses).index(query)] += 1
    # Training: 20,000 per length over its queries (L = 6: 6,667 + 6,667 + 6,666).
    assert counts["train"][4, 2] == counts["train"][4, 3] == 10_000
    assert sorted(counts["train"][6, q] for q in (3, 4, 5)) == [6_666, 6_667, 6_667]
    assert {counts["train"][8, q] for q in range(4, 8)} == {5_000}
    # Test: whole chains, one chain's worth per index: 1,248 at L = 16 is 156 per index.
    assert {counts["test"][16, q] for q in range(8, 16)} == {156}
    assert {counts["test"][9, q] for q in range(5, 9)} == {312}
    assert sum(counts["validation"].values()) == 7_498
    for length in range(4, 9):
        shares = [counts["validation"][length, q] for q in task.queries(length)]
        assert max(shares) - min(shares) <= 1


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
            "If",
            ",",
            ".",
            "Then",
            "what",
            "is",
            "the",
            "value",
            "of",
            "?",
            "=",
            "+",
            "-",
            "+1",
            "-1",
            "The",
            "answer",
            *"abcdefghijklmnopqrstuvwxyz",
        }
    )


@pytest.mark.parametrize("name", NAMES)
def test_scratchpad_walks_the_chain(name):
    task = tasks.get(
        name, scratchpad="full", num_train=100, num_validation=10, num_test_per_length=8
    )
    for split in tasks.SPLITS:
        for example in task.examples(split):
            clauses, query = _problem(example)
            values, chain = _resolve(clauses), _chain(clauses)
            written = re.fullmatch(PROMPT, example.source).group(1).split(" , ")
            assert set(example.target.split()) <= set(task.vocabulary())
            pad, answer = example.target.removeprefix("Thinking step by step: ").split(" . Thus , ")
            assert answer == f"The answer is {values[query]:+d} ."
            steps = pad.split(" # ")
            assert len(steps) == chain.index(query) + 1
            for i, step in enumerate(steps):
                variable = chain[i]
                if i == 0:
                    computation = ""
                else:
                    sign = "+" if values[variable] == values[chain[i - 1]] else "-"
                    computation = f" {sign} {chain[i - 1]} = {sign} {values[chain[i - 1]]:+d}"
                remaining = [c for c in written if c.split(" = ")[0] not in chain[: i + 1]]
                assert (
                    step
                    == (
                        f"in {variable} comp{computation} out {values[variable]:+d} re "
                        f"{' , '.join(remaining)}"
                    ).strip()
                )


def test_scratchpad_by_hand():
    task = tasks.get(
        "lego",
        scratchpad="no_remaining",
        num_train=1,
        num_validation=0,
        min_length=2,
        max_train_length=2,
        max_test_length=3,
        num_test_per_length=1,
    )
    [example] = task.examples("train")
    clauses, query = _problem(example)
    (root, root_value, _, _), (child, _, sign, _) = clauses
    child_value = int(root_value) * (1 if sign == "+" else -1)
    assert example.target == (
        f"Thinking step by step: in {root} comp out {root_value} # "
        f"in {child} comp {sign} {root} = {sign} {root_value} out {child_value:+d} . Thus , "
        f"The answer is {child_value:+d} ."
    )


def test_determinism():
    small = dict(num_train=300, num_validation=40, num_test_per_length=8)
    for name in NAMES:
        for split in tasks.SPLITS:
            first = list(tasks.get(name, **small).examples(split))
            assert first == list(tasks.get(name, **small).examples(split))
            assert first != list(tasks.get(name, seed=1, **small).examples(split))


def test_generator_output_is_pinned(default_splits):
    # A regression guard, not a derivation: stored datasets are only valid while the generator's
    # output stays the same. If this fails, bump the task's version, then update.
    task, splits = default_splits
    assert (
        splits["train"][0].source
        == {
            "lego": "If q = -1 , m = + q , e = + m , r = - e , z = - r . Then , what is the value "
            "of r ?",
            "lego_shuffled": "If w = + y , y = + k , g = + w , k = + v , v = +1 . Then , what is "
            "the value of w ?",
        }[task.name]
    )
