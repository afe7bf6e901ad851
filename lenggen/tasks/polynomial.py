"""Polynomial evaluation modulo 10 (docs/paper.md "Tasks"; paper Section 3).

Format, word for word (every word whitespace-separated, digits spaced out, a negative number led
by a "-" word):

  source  "Evaluate at x = - 2 in 2 * x ** 3 + - 1 * x ** 0 ?"
  target  "The answer is 3 ."

Official prompt f"Evaluate at x = {x} in {terms} ? " with terms f"{c} * x ** {d}" joined by
" + ", target f"The answer is {answer}." (src/data/data_instance_processor/
poly_instance_processor.py, `modulo_factor: 10` in configs/data/s2s_poly.jsonnet); the final
"." is its own word here (lenggen.tasks.scratchpad on the whitespace mapping).

Data (scripts/dataset_builders/make_poly_dataset.py): a problem of length L has L terms, each
with a coefficient uniform in [-3, 3] and a degree uniform in 0..3, and x uniform in [-2, 2]; the
answer is the sum of c * x ** d modulo 10 (Python's %, so 0..9; 0 ** 0 = 1). Sizes and lengths:
lenggen.tasks.per_length (train 4-8 terms, test 9-16, 1,250 per test length).

Scratchpad steps (the official `stripped` steps, one per term, left to right):
  input "2 * x ** 3"; computation "2 * - 2 ** 3 = 2 * - 8"; output "- 1 6";
  intermediate "sum: 0 + - 1 6 = 4" (the running sum modulo 10); remaining: the terms after it.
"""

import dataclasses

import numpy as np

from lenggen.tasks import answers
from lenggen.tasks.per_length import ANSWER_WORDS, DIGITS, PerLengthTask, spaced
from lenggen.tasks.scratchpad import Step

MODULUS = 10
COEFFICIENTS = (-3, 3)  # inclusive
DEGREES = (0, 3)
XS = (-2, 2)


def term(coefficient: int, degree: int) -> str:
    """`-1, 0` -> "- 1 * x ** 0"."""
    return f"{spaced(coefficient)} * x ** {spaced(degree)}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Polynomial(PerLengthTask):
    """`Evaluate at x = X in c * x ** d + ... ?` -> `The answer is (value mod 10) .`"""

    name = "polynomial"

    def parse_answer(self, text: str) -> str | None:
        """The number after the last "The answer is" ("... The answer is 3 ." -> "3")."""
        return answers.number(text)

    # Items: [x, c_1 .. c_L, d_1 .. d_L].

    def _space_size(self, length: int) -> int:
        coefficients = COEFFICIENTS[1] - COEFFICIENTS[0] + 1
        degrees = DEGREES[1] - DEGREES[0] + 1
        return (coefficients * degrees) ** length * (XS[1] - XS[0] + 1)

    def _draw(self, length: int, rng: np.random.Generator, count: int) -> np.ndarray:
        coefficients = rng.integers(COEFFICIENTS[0], COEFFICIENTS[1] + 1, (count, length))
        degrees = rng.integers(DEGREES[0], DEGREES[1] + 1, (count, length))
        x = rng.integers(XS[0], XS[1] + 1, (count, 1))
        return np.concatenate([x, coefficients, degrees], axis=1)  # -> [count, 2L + 1]

    def _prompt_and_answer(self, length: int, item: list[int]) -> tuple[str, str]:
        x, coefficients, degrees = item[0], item[1 : length + 1], item[length + 1 :]
        value = sum(c * x**d for c, d in zip(coefficients, degrees)) % MODULUS
        terms = " + ".join(map(term, coefficients, degrees))
        return f"Evaluate at x = {spaced(x)} in {terms} ?", f"The answer is {spaced(value)} ."

    def _steps(self, length: int, item: list[int]) -> list[Step]:
        x, coefficients, degrees = item[0], item[1 : length + 1], item[length + 1 :]
        terms = list(map(term, coefficients, degrees))
        steps, total = [], 0
        for i, (c, d) in enumerate(zip(coefficients, degrees)):
            output = spaced(c * x**d)
            new_total = (total + c * x**d) % MODULUS
            steps.append(
                Step(
                    input=terms[i],
                    computation=f"{spaced(c)} * {spaced(x)} ** {spaced(d)} = "
                    f"{spaced(c)} * {spaced(x**d)}",
                    output=output,
                    intermediate=(f"sum: {spaced(total)} + {output} = {spaced(new_total)}",),
                    remaining=" + ".join(terms[i + 1 :]),
                )
            )
            total = new_total
        return steps

    def _format_words(self) -> frozenset[str]:
        return ANSWER_WORDS | DIGITS | {"Evaluate", "at", "x", "=", "-", "in", "*", "**", "+", "?"}

    def _step_words(self) -> frozenset[str]:
        return frozenset({"sum:"})
