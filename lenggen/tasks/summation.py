"""Summation modulo 10 (docs/paper.md "Tasks"; paper Section 3).

Format, word for word (every word whitespace-separated):

  source  "Compute: 7 + 5 + 9 . [SEP]"
  target  "The answer is 1 ."

Official prompt f"Compute: {' + '.join(values)} ." then the separator "[SEP] "
(`decoder_only_input_output_sep_token` in configs/data/s2s_sum.jsonnet, `modulo_factor: 10`),
target f"The answer is {answer} ." (src/data/data_instance_processor/sum_instance_processor.py,
S2SSumDataInstanceProcessor). The official text glues the separator to the "." (".[SEP]"); here
it is its own word.

Data (scripts/dataset_builders/make_sum_dataset.py): a problem of length L adds L values uniform
in 1..9; the answer is their sum modulo 10. Sizes and lengths: lenggen.tasks.per_length (train
4-8 values, test 9-16, 1,250 per test length). Length 4 holds only 9^4 = 6,561 problems, fewer
than its 20,000 training examples: they repeat there (as in the paper) and validation comes from
lengths 5-8.

Scratchpad steps (the official `stripped` steps, one per value, left to right):
  input "9"; computation "9 + sum = 9 + 2 ="; output "1 1" (value + running sum, spaced);
  intermediate "sum: 1 1 = 1" (the running sum modulo 10); remaining: the values after it.
"""

import dataclasses

import numpy as np

from lenggen.tasks import answers
from lenggen.tasks.per_length import ANSWER_WORDS, DIGITS, PerLengthTask, spaced
from lenggen.tasks.scratchpad import Step

MODULUS = 10
VALUES = (1, 9)  # inclusive
SEPARATOR = "[SEP]"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Summation(PerLengthTask):
    """`Compute: a + b + ... . [SEP]` -> `The answer is (sum mod 10) .`"""

    name = "summation"

    def parse_answer(self, text: str) -> str | None:
        """The number after the last "The answer is" ("... The answer is 1 ." -> "1")."""
        return answers.number(text)

    def _space_size(self, length: int) -> int:
        return (VALUES[1] - VALUES[0] + 1) ** length

    def _draw(self, length: int, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.integers(VALUES[0], VALUES[1] + 1, (count, length))

    def _prompt_and_answer(self, length: int, item: list[int]) -> tuple[str, str]:
        values = " + ".join(map(spaced, item))
        answer = spaced(sum(item) % MODULUS)
        return f"Compute: {values} . {SEPARATOR}", f"The answer is {answer} ."

    def _steps(self, length: int, item: list[int]) -> list[Step]:
        texts = list(map(spaced, item))
        steps, total = [], 0
        for i, value in enumerate(item):
            output = spaced(value + total)
            steps.append(
                Step(
                    input=texts[i],
                    computation=f"{spaced(value)} + sum = {spaced(value)} + {spaced(total)} =",
                    output=output,
                    intermediate=(f"sum: {output} = {(value + total) % MODULUS}",),
                    remaining=" + ".join(texts[i + 1 :]),
                )
            )
            total = (value + total) % MODULUS
        return steps

    def _format_words(self) -> frozenset[str]:
        return ANSWER_WORDS | DIGITS | {"Compute:", "+", SEPARATOR}

    def _step_words(self) -> frozenset[str]:
        return frozenset({"sum", "=", "sum:"})
