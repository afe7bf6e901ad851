"""LEGO: resolving a chain of sign clauses (docs/paper.md "Tasks"; paper Section 3).

Format, word for word (every word whitespace-separated):

  source  "If c = + t , t = - q , q = -1 . Then , what is the value of c ?"
  target  "The answer is +1 ."

Official prompt f"If {', '.join(clauses)}. Then, what is the value of {query}? " and target
f"The answer is {value}." (src/data/data_instance_processor/lego_instance_processor.py); ",",
"?" and the final "." are their own words here (lenggen.tasks.scratchpad on the mapping).

Data (scripts/dataset_builders/make_lego_dataset.py, after github.com/yizhangzzz/
transformers-lego): a chain of L variables, distinct letters drawn from a-z in random order, with
values uniform in {-1, +1}. The first clause sets the first variable ("q = -1"); clause i sets
variable i to "+" or "-" variable i - 1 ("t = - q"), "+" when their values agree. The clauses are
written in chain order (`lego`) or in a random order drawn per example (`lego_shuffled`, the
script's `--permute_clauses`). Only a variable of the chain's second half is asked for: index
ceil(L / 2) .. L - 1. The script asked every second-half variable of each chain (L // 2 examples
per chain, int(per-length count / (L // 2)) chains) and recorded each example's category as
(L, query index) (`"cat": (num_variables, query_idx)`, which its scorer reports under). So the
buckets here are (L, query index) too, as addition's are digit pairs: each length's share is
split evenly over its L // 2 query indices, each bucket drawn from its own seeded stream, and its
examples reported under length L. Each example has its own chain (the script's examples shared a
chain L // 2 at a time); the counts per (L, query index) are the script's.
Lengths and sizes: lenggen.tasks.per_length (train 4-8 variables, test 9-16), except that a test
length gives the script's whole chains' worth, (1,250 // (L // 2)) * (L // 2) examples: 9,984 in
all (a request smaller than one chain is kept as it is). At most 26 variables (a-z); at least 2
(a chain of 1 has no second half).

Scratchpad steps (official, one per variable from the chain's start to the query): input: the
variable; computation "- q = - -1" (its sign and parent, with the parent's value), empty for the
first variable; output: its value; remaining: the clauses not yet resolved, in prompt order.
LEGO steps have no intermediate variables.
"""

import dataclasses
import functools
import math
import string
from typing import ClassVar

import numpy as np

from lenggen.tasks import answers
from lenggen.tasks.bucketed import Bucket, plan_counts, split_evenly
from lenggen.tasks.per_length import ANSWER_WORDS, PerLengthTask
from lenggen.tasks.scratchpad import Step

VARIABLES = tuple(string.ascii_lowercase)
VALUES = ("-1", "+1")  # value index 0, 1


def clauses(variables: list[str], values: list[int]) -> list[str]:
    """The chain's clauses in chain order: ["q = -1", "t = - q", "c = + t"]."""
    first = f"{variables[0]} = {VALUES[values[0]]}"
    return [first] + [
        f"{variables[i]} = {'+' if values[i] == values[i - 1] else '-'} {variables[i - 1]}"
        for i in range(1, len(variables))
    ]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lego(PerLengthTask):
    """`If <clauses> . Then , what is the value of v ?` -> `The answer is +1|-1 .`"""

    name = "lego"
    # 1.1.0: buckets by (length, query index); the examples differ from 1.0.0's.
    version = "1.1.0"
    has_intermediate: ClassVar[bool] = False
    lowest_length: ClassVar[int] = 2
    highest_length: ClassVar[tuple[int, str]] = (len(VARIABLES), "26 variables a-z")
    # Whether the clauses are written in a random order.
    shuffled: ClassVar[bool] = False

    num_validation: int = 7_498

    def parse_answer(self, text: str) -> str | None:
        """The value after the last "The answer is" ("... The answer is +1 ." -> "+1")."""
        return answers.word(text)

    # -- buckets: one per (length, query index) -------------------------------------------

    @staticmethod
    def queries(length: int) -> range:
        """The query indices a chain of `length` variables is asked at: its second half."""
        return range((length + 1) // 2, length)

    def _bucket_size(self, length: int) -> int:
        """Distinct problems of one (length, query index): chains (x clause orders)."""
        chains = 2**length * math.perm(len(VARIABLES), length)
        return chains * (math.factorial(length) if self.shuffled else 1)

    def _space_size(self, length: int) -> int:
        return self._bucket_size(length) * len(self.queries(length))

    def _buckets(self, lengths: range) -> tuple[Bucket, ...]:
        return tuple(
            Bucket(
                key=(length, query),
                length=length,
                size=self._bucket_size(length),
                draw=functools.partial(self._draw_query, length, query),
            )
            for length in lengths
            for query in self.queries(length)
        )

    @functools.cached_property
    def _plan(self) -> tuple[list[int], list[int]]:
        """Per-bucket (train, validation) counts: each length's share as the other per-length
        tasks get (validation where a length can hold it apart), split evenly over its query
        indices, as the script's equal bins of whole chains."""
        lengths = range(self.min_length, self.max_train_length + 1)
        train, validation = plan_counts(
            [self._space_size(n) for n in lengths], self.num_train, self.num_validation
        )
        per_bucket: tuple[list[int], list[int]] = ([], [])
        for length, n_train, n_valid in zip(lengths, train, validation):
            per_bucket[0].extend(split_evenly(n_train, len(self.queries(length))))
            per_bucket[1].extend(split_evenly(n_valid, len(self.queries(length))))
        return per_bucket

    def _test_counts(self) -> list[int]:
        # Whole chains of L // 2 queries each, as the script counted (module doc), one chain's
        # worth per query index; a count below one chain is kept as it is rather than rounded
        # to nothing (tiny smoke-run splits).
        requested, counts = self.num_test_per_length, []
        for length in range(self.max_train_length + 1, self.max_test_length + 1):
            queries = len(self.queries(length))
            counts += split_evenly(requested // queries * queries or requested, queries)
        return counts

    # Items: [values (L), variable indices (L), query index, clause order (L, shuffled only)].

    def _draw_query(
        self, length: int, query: int, rng: np.random.Generator, count: int
    ) -> np.ndarray:
        values = rng.integers(0, 2, (count, length))
        letters = np.tile(np.arange(len(VARIABLES)), (count, 1))
        variables = rng.permuted(letters, axis=1)[:, :length]
        columns = [values, variables, np.full((count, 1), query)]
        if self.shuffled:
            columns.append(rng.permuted(np.tile(np.arange(length), (count, 1)), axis=1))
        return np.concatenate(columns, axis=1)  # -> [count, 2L + 1 (+ L)]

    def _parse_item(self, length: int, item: list[int]) -> tuple[list, list, int, list[str]]:
        """(values, variables, query index, clauses as written) of one item."""
        values = item[:length]
        variables = [VARIABLES[i] for i in item[length : 2 * length]]
        query = item[2 * length]
        chain = clauses(variables, values)
        order = item[2 * length + 1 :] if self.shuffled else range(length)
        return values, variables, query, [chain[i] for i in order]

    def _prompt_and_answer(self, length: int, item: list[int]) -> tuple[str, str]:
        values, variables, query, written = self._parse_item(length, item)
        return (
            f"If {' , '.join(written)} . Then , what is the value of {variables[query]} ?",
            f"The answer is {VALUES[values[query]]} .",
        )

    def _steps(self, length: int, item: list[int]) -> list[Step]:
        values, variables, query, written = self._parse_item(length, item)
        steps, remaining = [], list(written)
        for i in range(query + 1):
            computation = ""
            if i:
                sign = "+" if values[i] == values[i - 1] else "-"
                computation = f"{sign} {variables[i - 1]} = {sign} {VALUES[values[i - 1]]}"
            remaining = [c for c in remaining if c.split(" = ")[0] != variables[i]]
            steps.append(
                Step(
                    input=variables[i],
                    computation=computation,
                    output=VALUES[values[i]],
                    remaining=" , ".join(remaining),
                )
            )
        return steps

    def _format_words(self) -> frozenset[str]:
        prompt = {"If", ",", ".", "Then", "what", "is", "the", "value", "of", "?", "=", "+", "-"}
        return ANSWER_WORDS | prompt | set(VARIABLES) | set(VALUES)

    def _step_words(self) -> frozenset[str]:
        return frozenset()


class LegoShuffled(Lego):
    """LEGO with the clauses in a random order (the script's `--permute_clauses`)."""

    name = "lego_shuffled"
    shuffled = True
