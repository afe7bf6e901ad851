"""evaluate_split's bookkeeping on a hand-made task whose verdicts are known per record.

The teacher-forced verdict is "the prompt starts with a" and greedy decoding echoes the prompt,
so under metric="exact" a failed example is rescued iff its target (the reversed words) equals
its prompt: a palindrome. Every expected value below comes from the records alone.
"""

import itertools
import random

import jax
import numpy as np
import pytest

from lenggen.data import dataset
from lenggen.data.tokenizer import Tokenizer
from lenggen.evaluate import exact_match
from lenggen.tasks.base import Example, Task


class Reverse(Task):
    """`"b c [SEP]"` -> `"c b"`: every word sequence of a, b, c of lengths 1 to 3."""

    name = "reverse_for_tests"

    def lengths(self, split: str) -> tuple[int, ...]:
        return (1, 2, 3)

    def examples(self, split: str):
        words = [w for n in self.lengths(split) for w in itertools.product("abc", repeat=n)]
        random.Random(0).shuffle(words)  # record order differs from the size order
        for w in words:
            yield Example(
                source=" ".join(w) + " [SEP]", target=" ".join(reversed(w)), length=len(w)
            )

    def vocabulary(self) -> tuple[str, ...]:
        return ("[SEP]", "a", "b", "c")

    def parse_answer(self, text: str) -> str | None:
        return text.replace("[SEP]", "").strip() or None


TASK = Reverse()
TOKENIZER = Tokenizer.from_task(TASK)
EXAMPLES = list(TASK.examples("test"))  # 3 + 9 + 27 = 39
SOURCE = [dataset.encode_example(e, TOKENIZER) for e in EXAMPLES]
A = TOKENIZER.encode("a")[0]


def _teacher_forced(params, batch):
    return batch["tokens"][:, 0] == params  # -> [batch] bool


def _greedy(params, prompt_tokens, prompt_valid):
    del params, prompt_valid
    return prompt_tokens  # -> [batch, prompt_len]: the prompt, echoed


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((4, 1), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _evaluate(mesh, metric, source=SOURCE, **kwargs):
    """(SplitEvaluation, the prompt shape of each greedy_fn call)."""
    calls = []

    def greedy(*args):
        calls.append(args[1].shape)
        return jax.jit(_greedy)(*args)

    arguments = (
        dict(
            task=TASK,
            tokenizer=TOKENIZER,
            mesh=mesh,
            batch_size=8,
            metric=metric,
            teacher_forced_fn=jax.jit(_teacher_forced),
            greedy_fn=greedy,
            num_samples=5,
        )
        | kwargs
    )
    return exact_match.evaluate_split(A, source, **arguments), calls


def _words(example):
    return example.source.replace(" [SEP]", "").split()


def _expected(rescue: bool):
    starts_with_a = np.array([_words(e)[0] == "a" for e in EXAMPLES])
    palindrome = np.array([_words(e) == _words(e)[::-1] for e in EXAMPLES])
    return starts_with_a | (palindrome & rescue)


def test_exact_metric_rescues_failures_the_parser_accepts(mesh):
    evaluation, calls = _evaluate(mesh, "exact")
    correct = _expected(rescue=True)
    np.testing.assert_array_equal(evaluation.correct, correct)
    # Length 1: all 3 are palindromes; 2: 3 start with a + bb, cc; 3: 9 + b?b, c?c (6).
    assert evaluation.summary == {
        "overall": 23 / 39,
        "by_length": {
            "1": {"exact_match": 1.0, "n": 3},
            "2": {"exact_match": 5 / 9, "n": 9},
            "3": {"exact_match": 15 / 27, "n": 27},
        },
    }
    assert correct.sum() == 23
    # Batches follow the token count (stable): lengths 1, 2, 3 in record order. The samples are
    # the first 5 failures in that order; the prediction is the echoed prompt.
    order = sorted(range(39), key=lambda i: EXAMPLES[i].length)
    failures = [i for i in order if not correct[i]][:5]
    assert evaluation.samples == [
        dict(
            length=EXAMPLES[i].length,
            source=EXAMPLES[i].source,
            target=EXAMPLES[i].target,
            prediction=EXAMPLES[i].source,
        )
        for i in failures
    ]
    # Greedy decoding ran once per batch holding a teacher-forcing failure (all 5 batches of 8
    # here), at one width: the longest prompt (4 tokens) rounded up to 16.
    failing = {order.index(i) // 8 for i in range(39) if not _expected(rescue=False)[i]}
    assert len(calls) == len(failing) == 5
    assert set(calls) == {(8, 16)}


def test_teacher_forced_metric_decodes_nothing(mesh):
    evaluation, calls = _evaluate(mesh, "teacher_forced")
    np.testing.assert_array_equal(evaluation.correct, _expected(rescue=False))
    assert evaluation.summary["overall"] == 13 / 39  # 1 + 3 + 9 start with a
    assert evaluation.samples == [] and calls == []


def test_batches_without_a_failure_are_not_decoded(mesh):
    # Only the 13 records starting with "a" (all right by teacher forcing): nothing to decode.
    source = [r for r, e in zip(SOURCE, EXAMPLES, strict=True) if _words(e)[0] == "a"]
    evaluation, calls = _evaluate(mesh, "exact", source=source, batch_size=4)
    assert evaluation.correct.tolist() == [True] * 13 and calls == []


def test_an_empty_split_scores_nothing(mesh):
    evaluation = exact_match.evaluate_split(
        A,
        [],
        task=TASK,
        tokenizer=TOKENIZER,
        mesh=mesh,
        batch_size=8,
        metric="exact",
        teacher_forced_fn=jax.jit(_teacher_forced),
        greedy_fn=jax.jit(_greedy),
    )
    assert evaluation.summary == {"overall": 0.0, "by_length": {}}
    assert evaluation.correct.shape == (0,) and evaluation.samples == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"batch_size": 6},
            r"batch_size=6; expected a positive multiple of the mesh's data "
            r"axis \(4\) and of the process count \(1\)",
        ),
        ({"metric": "greedy"}, "metric='greedy'; expected one of exact, teacher_forced"),
        ({"greedy_fn": None}, "metric='exact' without a greedy_fn"),
    ],
)
def test_bad_arguments_are_refused(mesh, kwargs, message):
    arguments = (
        dict(
            task=TASK,
            tokenizer=TOKENIZER,
            mesh=mesh,
            batch_size=8,
            metric="exact",
            teacher_forced_fn=jax.jit(_teacher_forced),
            greedy_fn=jax.jit(_greedy),
        )
        | kwargs
    )
    with pytest.raises(exact_match.EvaluationError, match=message):
        exact_match.evaluate_split(A, SOURCE, **arguments)
