"""The shared shape of the maths / reasoning tasks whose length bucket is one input length.

Polynomial evaluation, sorting, summation, parity and LEGO (docs/paper.md "Tasks") all come from
scripts of the same template (McGill-NLP/length-generalization, scripts/dataset_builders/
make_{poly,sort,sum,parity,lego}_dataset.py): `set_seed(9842497)`; for each training length,
int(1.15 * num_train / #lengths) examples drawn with replacement; shuffled; the first num_train
for training and the rest as the validation file; test lengths max_train + 1 .. 2 * max_train
with int(num_test / #lengths) examples each. The split names of the paper's runs are
`*_tr8_ts16` (scripts/scratchpad_stats.json): train lengths up to 8, test lengths 9-16.

What the scripts leave open, and the choices here:
- The shortest training length is a command-line flag whose value for the paper's runs was not
  found; the scripts' defaults are kept (`--train_min` 4, parity 3), so training covers 4-8
  (parity 3-8). Shorter lengths hold very few distinct problems (9 sums of one value).
- num_train and num_test were flags too; 100,000 and 10,000 are assumed, as for the copy family
  and addition. The validation file then held int(1.15 * 100,000 / #lengths) * #lengths -
  100,000 examples, of which training read half (`validation_portion: 0.5`,
  configs/t5_dec_base.jsonnet): 7,500 with 5 training lengths; 7,498 for parity (6 lengths)
  and LEGO (whole chains of L // 2 queries: 114,996 drawn).
- Validation is drawn apart from training where a length holds enough distinct problems
  (lenggen.tasks.bucketed); the scripts drew everything with replacement.

The scratchpad (lenggen.tasks.scratchpad) is the option `scratchpad` (default "none"); a task
gives the steps of one problem and the scratchpad module formats them.
"""

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from lenggen.tasks import options, scratchpad
from lenggen.tasks.base import Example
from lenggen.tasks.bucketed import Bucket, PerLengthBuckets
from lenggen.tasks.scratchpad import Step

# The words of every maths answer sentence, "The answer is ... ." (sorting has its own).
ANSWER_WORDS = frozenset({"The", "answer", "is", "."})
DIGITS = frozenset(str(d) for d in range(10))


def spaced(number: int) -> str:
    """One word per digit, led by "-" when negative: -12 -> "- 1 2" (`number_to_string`)."""
    return f"- {spaced(-number)}" if number < 0 else " ".join(str(number))


def bracketed(items: list[str]) -> str:
    """A list as the official prompts write it: `["b", "d"]` -> "[ b , d ]" ([] -> "[ ]")."""
    return " ".join(["[", " , ".join(items), "]"]) if items else "[ ]"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PerLengthTask(PerLengthBuckets):
    """A task with one bucket per input length: PerLengthBuckets' options with the maths tasks'
    defaults (the paper's settings; module doc), and the scratchpad.

    Attributes:
      scratchpad: the scratchpad configuration (lenggen.tasks.scratchpad.NAMES).
    """

    num_validation: int = 7_500
    num_test_per_length: int = 1_250
    min_length: int = 4
    max_train_length: int = 8
    max_test_length: int = 16
    scratchpad: str = "none"

    # Whether the task's steps carry intermediate variables (not sorting, not LEGO).
    has_intermediate: ClassVar[bool] = True
    # The shortest length the format allows, and the longest, with why.
    lowest_length: ClassVar[int] = 1
    highest_length: ClassVar[tuple[int, str] | None] = None

    def __post_init__(self):
        self._check_length_options(self.lowest_length, f"the {self.name} format")
        if self.highest_length is not None:
            options.check_at_most(self, "max_test_length", *self.highest_length)
        scratchpad.check(self, self.has_intermediate)
        self._check_plan()

    # -- to implement ---------------------------------------------------------------------

    def _space_size(self, length: int) -> int:
        """How many distinct problems of this length exist."""
        raise NotImplementedError

    def _draw(self, length: int, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` problems of this length drawn uniformly: [count, width] ints."""
        raise NotImplementedError

    def _prompt_and_answer(self, length: int, item: list[int]) -> tuple[str, str]:
        """(source, answer sentence) of one problem, words separated by spaces."""
        raise NotImplementedError

    def _steps(self, length: int, item: list[int]) -> Sequence[Step]:
        """The scratchpad steps of one problem."""
        raise NotImplementedError

    def _format_words(self) -> frozenset[str]:
        """Every word a source or answer sentence can hold."""
        raise NotImplementedError

    def _step_words(self) -> frozenset[str]:
        """Every word the steps' parts can hold (the scratchpad adds its markers)."""
        raise NotImplementedError

    # -- Task interface -------------------------------------------------------------------

    def vocabulary(self) -> tuple[str, ...]:
        words = set(self._format_words())
        if self.scratchpad != "none":
            words |= scratchpad.WORDS | self._step_words()
        return tuple(sorted(words))

    def _example(self, bucket: Bucket, item: np.ndarray) -> Example:
        values = item.tolist()
        source, answer = self._prompt_and_answer(bucket.length, values)
        if self.scratchpad != "none":
            steps = self._steps(bucket.length, values)
            answer = scratchpad.target(self.scratchpad, steps, answer)
        return Example(source=source, target=answer, length=bucket.length)
