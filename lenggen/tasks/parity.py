"""Parity (docs/paper.md "Tasks"; paper Section 3).

Format, word for word (every word whitespace-separated):

  source  "Is the number of 1's even in the sequence [ 1 , 0 , 1 ] ?"
  target  "The answer is Yes ."

Official prompt f"Is the number of 1's even in the sequence [ {', '.join(bits)} ] ? " and target
f"The answer is {answer}." with answer "Yes" when the number of 1s is even, else "No"
(src/data/data_instance_processor/parity_instance_processor.py); "," and the final "." are their
own words here (lenggen.tasks.scratchpad on the whitespace mapping).

Data (scripts/dataset_builders/make_parity_dataset.py): L bits uniform in {0, 1}. Lengths and
sizes: lenggen.tasks.per_length, with the script's own shortest length, 3 (`--train_min` default):
train 3-8 bits, so int(1.15 * 100,000 / 6) * 6 - 100,000 = 14,996 in the validation file and
7,498 read; test 9-16 bits, 1,250 each. A training length L holds only 2^L sequences (at most
256), far fewer than its ~16,667 examples, so training repeats sequences and validation cannot
avoid them: it is drawn like training, with replacement (`validation_repeats_training`), as the
paper's script did. Test lengths 9 and 10 (512 and 1,024 sequences) repeat too.

Scratchpad steps (official, one per bit, left to right):
  input "1"; computation "1 ** par = 1 ** 0" (XOR with the running parity); output "1";
  intermediate "par: 1"; remaining: the bits after it, "[ 0 , 1 ]" ("[ ]" at the end).
"""

import dataclasses

import numpy as np

from lenggen.tasks import answers
from lenggen.tasks.per_length import ANSWER_WORDS, PerLengthTask, bracketed
from lenggen.tasks.scratchpad import Step

EVEN, ODD = "Yes", "No"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Parity(PerLengthTask):
    """`Is the number of 1's even in the sequence [ bits ] ?` -> `The answer is Yes|No .`"""

    name = "parity"
    validation_repeats_training = True

    num_validation: int = 7_498
    min_length: int = 3

    def parse_answer(self, text: str) -> str | None:
        """The word after the last "The answer is" ("... The answer is Yes ." -> "Yes")."""
        return answers.word(text)

    def _space_size(self, length: int) -> int:
        return 2**length

    def _draw(self, length: int, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.integers(0, 2, (count, length))

    def _prompt_and_answer(self, length: int, item: list[int]) -> tuple[str, str]:
        bits = bracketed(list(map(str, item)))
        answer = EVEN if sum(item) % 2 == 0 else ODD
        return (
            f"Is the number of 1's even in the sequence {bits} ?",
            f"The answer is {answer} .",
        )

    def _steps(self, length: int, item: list[int]) -> list[Step]:
        bits, steps, parity = list(map(str, item)), [], 0
        for i, bit in enumerate(item):
            steps.append(
                Step(
                    input=str(bit),
                    computation=f"{bit} ** par = {bit} ** {parity}",
                    output=str(bit ^ parity),
                    intermediate=(f"par: {bit ^ parity}",),
                    remaining=bracketed(bits[i + 1 :]),
                )
            )
            parity ^= bit
        return steps

    def _format_words(self) -> frozenset[str]:
        prompt = {"Is", "the", "number", "of", "1's", "even", "in", "sequence", "[", ",", "]", "?"}
        return ANSWER_WORDS | prompt | {"0", "1", EVEN, ODD}

    def _step_words(self) -> frozenset[str]:
        return frozenset({"**", "par", "=", "par:"})
