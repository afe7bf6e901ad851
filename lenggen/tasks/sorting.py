"""Sorting, two variants (docs/paper.md "Tasks"; paper Section 3).

Format, word for word (every word whitespace-separated):

  sort_single_token  "Sort the following list [ d , b ] ."
                     -> "The sorted list is [ b , d ] ."
  sort_multi_digit   "Sort the following list [ 4 2 , 1 7 ] ."
                     -> "The sorted list is [ 1 7 , 4 2 ] ."

Official prompt f"Sort the following list [ {', '.join(items)} ]. " and target
f"The sorted list is [ {', '.join(sorted)} ]." (src/data/data_instance_processor/
sort_instance_processor.py; multi-digit numbers spaced out by `number_to_string`); "," and the
final "." are their own words here (lenggen.tasks.scratchpad on the whitespace mapping).

Data (scripts/dataset_builders/make_sort_dataset.py): a list of length L holds L items drawn
uniformly with replacement:
- sort_single_token: from 50 symbols. The paper took the first 50 t5-base pieces that stay one
  token when repeated (its `get_unique_tokens()`) and sorted by their index in that list; here
  they are the 50 words A-Z, a-x, whose index order is Python's string order, so `sorted` sorts.
- sort_multi_digit: integers uniform in [10, 9999].
Sizes and lengths: lenggen.tasks.per_length (train 4-8 items, test 9-16, 1,250 per test length).

Scratchpad steps (the official selection sort, one step per position i): input: the item at
position i; computation "The minimum of the unsorted portion"; output: the smallest item from
position i on (the first such); that item is swapped into position i, and the remaining input is
the list after position i, "[ ... ]". Sorting steps have no intermediate variables.
"""

import dataclasses
import re
import string
from typing import ClassVar

import numpy as np

from lenggen.tasks import answers
from lenggen.tasks.per_length import DIGITS, PerLengthTask, bracketed, spaced
from lenggen.tasks.scratchpad import Step

# A-Z then a-x: 50 one-character words in Python's sort order.
SYMBOLS = tuple(string.ascii_uppercase + string.ascii_lowercase[:24])
NUMBERS = (10, 9999)  # inclusive
COMPUTATION = "The minimum of the unsorted portion"

_PROMPT_WORDS = frozenset({"Sort", "the", "following", "list", "[", ",", "]", "."})
_ANSWER_WORDS = frozenset({"The", "sorted", "list", "is", "[", ",", "]", "."})
# The list after the last "The sorted list is", its items between "[" and "]"; the final "."
# is optional, as in the official scorer's `.*The sorted list is\s*\[\s*(.*)\s*\]\s*\.?`.
_ANSWER = re.compile(r"(?:.* |^)The sorted list is \[((?: [^ \[\]]+)*) \](?: \.)?(?: .*)?$")


def read_list(text: str) -> list[list[str]] | None:
    """The items (each a list of words) of the list after the last "The sorted list is".

    None unless the list is "[", items separated by "," words, and "]" (a "." after it is
    optional, as in the official scorer: "The sorted list is [ b , d ]" reads ["b", "d"]); an
    empty item (", ,") makes it malformed too.
    """
    match = _ANSWER.match(answers.normalized(text))
    if not match:
        return None
    words = match.group(1).split()
    if not words:
        return []
    items = [item.split() for item in " ".join(words).split(",")]
    return None if any(not item for item in items) else items


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Sorting(PerLengthTask):
    """`Sort the following list [ ... ] .` -> `The sorted list is [ ... ] .`"""

    has_intermediate: ClassVar[bool] = False

    def _words(self, values: list[int]) -> list[str]:
        """Each item's words (a symbol, or a number's spaced digits)."""
        raise NotImplementedError

    def _prompt_and_answer(self, length: int, item: list[int]) -> tuple[str, str]:
        # Items are symbol indices or numbers: their int order is the sort order.
        return (
            f"Sort the following list {bracketed(self._words(item))} .",
            f"The sorted list is {bracketed(self._words(sorted(item)))} .",
        )

    def _steps(self, length: int, item: list[int]) -> list[Step]:
        values, words, steps = list(item), self._words(item), []
        for i in range(len(values)):
            front = words[i]
            smallest = min(range(i, len(values)), key=values.__getitem__)  # First minimum.
            values[i], values[smallest] = values[smallest], values[i]
            words[i], words[smallest] = words[smallest], words[i]
            steps.append(
                Step(
                    input=front,
                    computation=COMPUTATION,
                    output=words[i],
                    remaining=bracketed(words[i + 1 :]),
                )
            )
        return steps

    def _step_words(self) -> frozenset[str]:
        return frozenset(COMPUTATION.split())


@dataclasses.dataclass(frozen=True, kw_only=True)
class SortSingleToken(_Sorting):
    """Lists of single-token symbols (A-Z, a-x)."""

    name = "sort_single_token"

    def parse_answer(self, text: str) -> str | None:
        """The sorted list's symbols, "b , d" (None when malformed or an item is not one word)."""
        items = read_list(text)
        if items is None or any(len(item) != 1 for item in items):
            return None
        return " , ".join(item[0] for item in items)

    def _space_size(self, length: int) -> int:
        return len(SYMBOLS) ** length

    def _draw(self, length: int, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.integers(0, len(SYMBOLS), (count, length))

    def _words(self, values: list[int]) -> list[str]:
        return [SYMBOLS[v] for v in values]

    def _format_words(self) -> frozenset[str]:
        return _PROMPT_WORDS | _ANSWER_WORDS | set(SYMBOLS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SortMultiDigit(_Sorting):
    """Lists of integers in [10, 9999], digits spaced out."""

    name = "sort_multi_digit"

    def parse_answer(self, text: str) -> str | None:
        """The sorted list's numbers, "17 , 42" (None when malformed or an item is not digits).

        The official scorer compares int values, so leading zeros do not matter.
        """
        items = read_list(text)
        if items is None or any(not all(w in DIGITS for w in item) for item in items):
            return None
        return " , ".join(str(int("".join(item))) for item in items)

    def _space_size(self, length: int) -> int:
        return (NUMBERS[1] - NUMBERS[0] + 1) ** length

    def _draw(self, length: int, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.integers(NUMBERS[0], NUMBERS[1] + 1, (count, length))

    def _words(self, values: list[int]) -> list[str]:
        return [spaced(v) for v in values]

    def _format_words(self) -> frozenset[str]:
        return _PROMPT_WORDS | _ANSWER_WORDS | DIGITS
