"""Addition of two integers (docs/paper.md "Tasks"; paper Section 3).

Format, word for word (every word whitespace-separated, digits spaced out):

  source  "Compute 5 3 7 + 2 8 ?"
  target  "The answer is 5 6 5 ."

The official prompt is f"Compute {a} + {b} ? " and target f"The answer is {a + b}." with digits
spaced (src/data/data_instance_processor/addition_instance_processor.py, no separator token:
configs/data/s2s_addition.jsonnet). The final "." is glued to the last digit there; here it is
its own word so that every word is one token of the word-level vocabulary (under t5-base the
"." was a token of its own too).

Data (scripts/dataset_builders/make_addition_dataset.py): an operand with d digits is uniform
over [10^(d-1), 10^d), except d = 1: [0, 10). A bucket is an ordered pair (a, b) of digit
counts and is reported under length max(a, b).
- Train and validation: the 64 pairs in [1, 8]^2. The script drew int(1.15 * num_train / 64)
  examples per pair, took num_train for training and kept the rest as the validation file, of
  which training read half (`validation_portion: 0.5`, configs/t5_dec_base.jsonnet). The
  script's num_train was not found; 100,000 is assumed, as for the copy family, which gives
  int(0.5 * (64 * 1,796 - 100,000)) = 7,472 validation examples.
- Test: every pair with max(a, b) in 9..16 (192 pairs), int(10,000 / 192) = 52 examples each:
  9,984 examples.
The splits are disjoint: test pairs have more digits than any training pair, and validation is
drawn apart from training (lenggen.tasks.bucketed). Pairs too small to hold a validation share
apart from their training share give none: with the defaults, (1, 1) (100 problems) and (1, 2),
(2, 1) (900 each), whose ~1,563 training examples are then drawn with replacement, as the
script drew every example. So validation covers lengths 2-8, training 1-8.

Scratchpad (option `scratchpad`, lenggen.tasks.scratchpad): the official `stripped` steps,
one per column from the right (S2SAdditionDataInstanceProcessor.
create_scratchpad_steps_from_data_instance), the shorter operand padded with zeros:
  input "7 , 8"; computation "7 + 8 + carry = 15 + 0 = 15" (the sums are written unspaced
  there, so "15" is one word); output "5"; intermediate "carry: 1"; remaining: the columns to
  the left, each operand as a number without leading zeros ("5 3 + 2"; "+" when none).
A carry out of the last column adds a step "0 , 0" / "0 + 0 + carry = 0 + 1 = 1" / "1" /
"carry: 0" / "+".

Beyond the paper (docs/methods/addition_formats.md):
- `digit_order="lsb_first"` writes both operands and the answer least-significant digit first
  (McLeish et al. 2024, Cho et al. 2024; Lee et al. 2024 "reversed" format): 537 + 28 = 565 is
  "Compute 7 3 5 + 8 2 ?" -> "The answer is 5 6 5 ." with 565 read back as "5 6 5" reversed.
  The model then writes the answer in the order the carries flow, and a digit's significance is
  its index within its number, counted from the first digit written.
- `long_addition` (class LongAddition): the same format with operands drawn digit by digit, so
  they may hold up to 1,000 digits (McLeish et al. 2024 train on up to 20 and test up to 100);
  its test buckets are the equal-width pairs (d, d), d in max_train_digits + 1 ..
  max_test_digits, as that paper's test grid's diagonal.
- `zero_pad=True` writes both operands as wide as the wider one and the answer one digit wider,
  zero-padded (Cho et al. 2024): 653 + 49 = 702 is "Compute 6 5 3 + 0 4 9 ?" -> "The answer is
  0 7 0 2 ."; reversed, "Compute 3 5 6 + 9 4 0 ?" -> "The answer is 2 0 7 0 .". Every digit
  then has a partner of equal significance in each number.
"""

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import numpy as np

from lenggen.tasks import answers, options, scratchpad
from lenggen.tasks.base import Example
from lenggen.tasks.bucketed import DATA_SEED, Bucket, BucketedTask

# Operands are int64 draws: 10^18 < 2^63 bounds the digit count.
MAX_DIGITS = 18
# LongAddition draws digits one by one; this only bounds a dataset's size (Python ints are exact).
MAX_LONG_DIGITS = 1_000
DIGIT_ORDERS = ("msb_first", "lsb_first")


def spaced(number: int, digit_order: str = "msb_first", width: int = 0) -> str:
    """`565` -> `"5 6 5"`: one word per digit; `digit_order="lsb_first"`: `1230` -> `"0 3 2 1"`;
    `width`: zero-padded to that many digits (`49, width=3` -> `"0 4 9"`)."""
    digits = str(number).zfill(width)
    return " ".join(digits if digit_order == "msb_first" else digits[::-1])


def steps(a: int, b: int) -> list[scratchpad.Step]:
    """The scratchpad steps of `a + b`, column by column from the right (module doc)."""
    width = max(len(str(a)), len(str(b)))
    a_text, b_text = str(a).zfill(width), str(b).zfill(width)

    def rest(digits: str) -> str:  # The digits left of a column, as a number ("" for none).
        return " ".join(digits.lstrip("0") or "0") if digits else ""

    result, carry = [], 0
    for i in reversed(range(width)):
        x, y = int(a_text[i]), int(b_text[i])
        total = x + y + carry
        result.append(
            scratchpad.Step(
                input=f"{x} , {y}",
                computation=f"{x} + {y} + carry = {x + y} + {carry} = {total}",
                output=str(total % 10),
                intermediate=(f"carry: {total // 10}",),
                remaining=f"{rest(a_text[:i])} + {rest(b_text[:i])}".strip(),
            )
        )
        carry = total // 10
    if carry:
        result.append(
            scratchpad.Step(
                input="0 , 0",
                computation=f"0 + 0 + carry = 0 + {carry} = {carry}",
                output=str(carry),
                intermediate=("carry: 0",),
                remaining="+",
            )
        )
    return result


def operand_range(digits: int) -> tuple[int, int]:
    """[low, high) of the operands with `digits` digits (1 digit: 0..9, as in the script)."""
    return (0, 10) if digits == 1 else (10 ** (digits - 1), 10**digits)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Addition(BucketedTask):
    """`Compute a + b ?` -> `The answer is (a + b) .`; defaults are the paper's settings.

    Attributes:
      seed: the data seed (fixed like the paper's; not the model seed).
      num_train: training examples, split evenly over the training digit pairs.
      num_validation: validation examples, from training digit pairs, disjoint from train.
      num_test_per_digit_pair: test examples per (a, b) digit-count pair.
      min_digits: the fewest digits of an operand.
      max_train_digits: the most digits of a training operand.
      max_test_digits: the most digits of a test operand; test pairs have
        max(a, b) in max_train_digits + 1 .. max_test_digits.
      scratchpad: the scratchpad configuration (lenggen.tasks.scratchpad.NAMES).
      digit_order: 'msb_first' (the paper's) or 'lsb_first' (every number reversed; module doc).
      zero_pad: write both operands with the wider one's digit count and the answer with one
        more, zero-padded (Cho et al. 2024's format: 653 + 49 = 702 is 653 + 049 = 0702).
    """

    name = "addition"

    seed: int = DATA_SEED
    num_train: int = 100_000
    num_validation: int = 7_472
    num_test_per_digit_pair: int = 52
    min_digits: int = 1
    max_train_digits: int = 8
    max_test_digits: int = 16
    scratchpad: str = "none"
    digit_order: str = "msb_first"
    zero_pad: bool = False

    # The most digits an operand may have (the draw's limit).
    max_digits: ClassVar[int] = MAX_DIGITS
    max_digits_reason: ClassVar[str] = "operands are int64"

    def __post_init__(self):
        options.check_types(self)
        options.check_at_least(self, "seed", 0, "numpy seeds are non-negative")
        options.check_at_least(self, "num_train", 1)
        options.check_at_least(self, "num_validation", 0)
        options.check_at_least(self, "num_test_per_digit_pair", 1)
        options.check_at_least(self, "min_digits", 1)
        options.check_at_least(self, "max_train_digits", self.min_digits, "min_digits")
        options.check_at_least(
            self, "max_test_digits", self.max_train_digits + 1, "max_train_digits + 1"
        )
        options.check_at_most(self, "max_test_digits", self.max_digits, self.max_digits_reason)
        options.check_one_of(self, "digit_order", DIGIT_ORDERS)
        if self.digit_order != "msb_first" and self.scratchpad != "none":
            raise options.TaskOptionError(
                f"Task {self.name!r}: option digit_order={self.digit_order!r} has no scratchpad "
                f"format (scratchpad={self.scratchpad!r}); expected scratchpad='none' or "
                "digit_order='msb_first'."
            )
        if self.zero_pad and self.scratchpad != "none":
            raise options.TaskOptionError(
                f"Task {self.name!r}: option zero_pad=True has no scratchpad format "
                f"(scratchpad={self.scratchpad!r}); expected scratchpad='none' or zero_pad=False."
            )
        scratchpad.check(self)
        self._check_plan()

    @property
    def num_test_per_bucket(self) -> int:
        return self.num_test_per_digit_pair

    def vocabulary(self) -> tuple[str, ...]:
        words = {"Compute", "+", "?", "The", "answer", "is", "."} | {str(d) for d in range(10)}
        if self.scratchpad != "none":
            # Column sums are written unspaced, up to 9 + 9 + 1 = 19.
            words |= scratchpad.WORDS | {"carry", "carry:", "="} | {str(n) for n in range(20)}
        return tuple(sorted(words))

    def parse_answer(self, text: str) -> str | None:
        """The sum after "The answer is", as a decimal string without leading zeros.

        "... The answer is 0 5 6 5 . x" -> "565" (the official scorer compares int values and
        ignores what follows the "."); None without "The answer is", digits and the ".".
        """
        if self.digit_order == "msb_first":
            return answers.number(text)
        # Reversed: "The answer is 0 0 1 ." is 100; read the digits back in order first.
        reversed_digits = answers.digits(text)
        return None if reversed_digits is None else str(int(reversed_digits[::-1]))

    # -- buckets: one per ordered pair of digit counts ------------------------------------

    def _bucket(self, a_digits: int, b_digits: int) -> Bucket:
        a_low, a_high = operand_range(a_digits)
        b_low, b_high = operand_range(b_digits)

        def draw(rng: np.random.Generator, count: int) -> np.ndarray:
            a = rng.integers(a_low, a_high, size=count, dtype=np.int64)
            b = rng.integers(b_low, b_high, size=count, dtype=np.int64)
            return np.stack([a, b], axis=1)  # -> [count, 2]

        return Bucket(
            key=(a_digits, b_digits),
            length=max(a_digits, b_digits),
            size=(a_high - a_low) * (b_high - b_low),
            draw=draw,
        )

    def _train_buckets(self) -> tuple[Bucket, ...]:
        digits = range(self.min_digits, self.max_train_digits + 1)
        return tuple(self._bucket(a, b) for a in digits for b in digits)

    def _test_buckets(self) -> tuple[Bucket, ...]:
        digits = range(self.min_digits, self.max_test_digits + 1)
        return tuple(
            self._bucket(a, b) for a in digits for b in digits if max(a, b) > self.max_train_digits
        )

    def _example(self, bucket: Bucket, item: np.ndarray) -> Example:
        a, b = self._operands(bucket, item)
        order = self.digit_order
        # Zero-padding: both operands as wide as the wider, the answer one digit wider.
        width = max(len(str(a)), len(str(b))) if self.zero_pad else 0
        answer = f"The answer is {spaced(a + b, order, width + 1 if width else 0)} ."
        if self.scratchpad != "none":
            answer = scratchpad.target(self.scratchpad, steps(a, b), answer)
        return Example(
            source=f"Compute {spaced(a, order, width)} + {spaced(b, order, width)} ?",
            target=answer,
            length=bucket.length,
        )

    def _operands(self, bucket: Bucket, item: np.ndarray) -> tuple[int, int]:
        """(a, b) of one drawn item."""
        del bucket
        a, b = item.tolist()
        return a, b


def _digit_draw(digits: int) -> Callable[[np.random.Generator, int], np.ndarray]:
    """Draws `[count, digits]` digit rows (most significant first) of operands uniform over
    `operand_range(digits)`: a leading digit uniform in 1..9 (0..9 for one digit), the others
    in 0..9."""

    def draw(rng: np.random.Generator, count: int) -> np.ndarray:
        rows = rng.integers(0, 10, size=(count, digits), dtype=np.int64)
        if digits > 1:
            rows[:, 0] = rng.integers(1, 10, size=count, dtype=np.int64)
        return rows  # -> [count, digits]

    return draw


def _number(digits: np.ndarray) -> int:
    """`[3, 0, 7]` -> 307 (a Python int of any size)."""
    return int("".join(map(str, digits.tolist())))


@dataclasses.dataclass(frozen=True, kw_only=True)
class LongAddition(Addition):
    """Addition of long operands in the reversed-digit format (McLeish et al. 2024's setting).

    Defaults: operands of 1-20 digits for training (all 400 digit pairs), equal-width pairs of
    21-100 digits for testing, written least-significant digit first. Operands are drawn digit
    by digit (uniform over [10^(d-1), 10^d) as in Addition), so any width up to MAX_LONG_DIGITS
    works; an item is the row of a's digits then b's. Options as Addition's.
    """

    name = "long_addition"

    max_train_digits: int = 20
    max_test_digits: int = 100
    num_test_per_digit_pair: int = 100
    digit_order: str = "lsb_first"

    max_digits: ClassVar[int] = MAX_LONG_DIGITS
    max_digits_reason: ClassVar[str] = "the long-addition limit"

    def _bucket(self, a_digits: int, b_digits: int) -> Bucket:
        draw_a, draw_b = _digit_draw(a_digits), _digit_draw(b_digits)
        a_low, a_high = operand_range(a_digits)
        b_low, b_high = operand_range(b_digits)
        return Bucket(
            key=(a_digits, b_digits),
            length=max(a_digits, b_digits),
            size=(a_high - a_low) * (b_high - b_low),
            draw=lambda rng, count: np.concatenate([draw_a(rng, count), draw_b(rng, count)], 1),
        )

    def _test_buckets(self) -> tuple[Bucket, ...]:
        digits = range(self.max_train_digits + 1, self.max_test_digits + 1)
        return tuple(self._bucket(d, d) for d in digits)

    def _operands(self, bucket: Bucket, item: np.ndarray) -> tuple[int, int]:
        a_digits = bucket.key[0]
        return _number(item[:a_digits]), _number(item[a_digits:])
