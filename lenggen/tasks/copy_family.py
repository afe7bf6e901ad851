"""The copy / reverse family (docs/paper.md "Tasks"; paper Section 3, Appendix tasks).

Formats, as the official code builds them (scripts/dataset_builders/make_copy_dataset.py and
make_reverse_dataset.py write `src_seq`/`tgt_seq`; src/data/data_instance_processor/
copy_instance_processor.py adds the prefix; the "[SEP] " separator comes from
configs/data/s2s_copy.jsonnet and s2s_reverse.jsonnet). Source | target:

  copy_repeat         Copy: a a a [SEP]                   | a a a
  copy_repeat_2x      Copy: a a a [SEP]                   | a a a a a a
  copy_repeat_change  Replace a with b in a a a [SEP]     | b b b
  copy                Copy: a b c [SEP]                   | a b c
  copy_2x             Copy: a b c [SEP]                   | a b c [NEXT] a b c
  reverse             Reverse: a b c [SEP]                | c b a
  reverse_2x          Reverse: a b c [SEP]                | c b a [NEXT] c b a
  reverse_copy        Reverse: a b c [SEP]                | c b a [NEXT] a b c

Length bucket = L, the number of symbols in the sequence. Train lengths 2-20 (19 buckets), test
21-40 with 500 examples each (10,000). The answer is the whole target (the official scorer
compares everything after "[SEP]", stripped).

Symbols: the paper drew them from t5-base pieces that stay one token when repeated; here symbol
i is the word `s<i>` (s0, s1, ...), one token of the word-level vocabulary.
- copy, copy_2x and the reverse tasks: each position uniform over the first 100 symbols.
- copy_repeat and copy_repeat_2x: the official script gives each of a length's examples its own
  symbol (`get_unique_tokens()[:num_examples]`, num_examples = int(1.15 * 100,000 / 19) = 6,052),
  so every (length, symbol) pair appears once over train + validation. Hence num_symbols = 6,052
  here by default, and the symbol is uniform over them.
- copy_repeat_change: all ordered pairs (a, b), a != b, of the first
  int((1 + sqrt(1 + 4 * 6,052)) / 2) = 78 symbols (6,006 per length); num_symbols = 78.

Sizes: the scripts drew int(1.15 * num_train / 19) examples per training length, took 100,000 for
training and kept the rest as the validation file, of which training read half
(`validation_portion: 0.5` in configs/t5_dec_base.jsonnet): 7,494 examples (7,057 for
copy_repeat_change, whose pool is 6,006 per length). Those are the num_validation defaults.
Validation is disjoint from train (lenggen.tasks.bucketed); with the defaults every training
length can hold both, since the smallest space (copy at L=2) has 100^2 = 10,000 sequences. The
paper's scripts drew sequences with replacement, so its copy/reverse validation could repeat
training sequences of length 2; here it cannot.
"""

import dataclasses
import functools
from typing import ClassVar

import numpy as np

from lenggen.tasks import options
from lenggen.tasks.base import Example
from lenggen.tasks.bucketed import Bucket, PerLengthBuckets

SEPARATOR = "[SEP]"
NEXT = "[NEXT]"


def symbol_words(count: int) -> tuple[str, ...]:
    """The first `count` symbols: `("s0", "s1", ...)`."""
    return tuple(f"s{i}" for i in range(count))


@dataclasses.dataclass(frozen=True, kw_only=True)
class CopyFamilyTask(PerLengthBuckets):
    """Options shared by the family: PerLengthBuckets' (whose defaults are this family's, the
    paper's settings; module doc) and the symbols.

    Attributes:
      num_symbols: how many symbols (`s0`, `s1`, ...) the sequences are drawn from.
    """

    num_symbols: int = 100

    # The words of the format around the symbols (the vocabulary is these plus the symbols).
    format_words: ClassVar[tuple[str, ...]] = ()
    # The fewest symbols the format can use (copy_repeat_change needs two distinct ones).
    min_symbols: ClassVar[int] = 1

    def __post_init__(self):
        self._check_length_options()
        options.check_at_least(self, "num_symbols", self.min_symbols, f"the {self.name} format")
        self._check_plan()

    @functools.cached_property
    def symbols(self) -> tuple[str, ...]:
        return symbol_words(self.num_symbols)

    def vocabulary(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.symbols) | set(self.format_words)))

    def parse_answer(self, text: str) -> str | None:
        """The whole text written after the prompt, whitespace-normalised (None when empty)."""
        return " ".join(text.split()) or None

    def _example(self, bucket: Bucket, item: np.ndarray) -> Example:
        words = [self.symbols[i] for i in item.tolist()]
        source, target = self._format(bucket.length, words)
        return Example(source=" ".join(source), target=" ".join(target), length=bucket.length)

    def _space_size(self, length: int) -> int:
        """How many distinct examples of this length exist."""
        raise NotImplementedError

    def _draw(self, length: int, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` uniform items ([count, width] symbol indices) of this length."""
        raise NotImplementedError

    def _format(self, length: int, words: list[str]) -> tuple[list[str], list[str]]:
        """(source words, target words) of one item whose symbols are `words`."""
        raise NotImplementedError


# -- L symbols drawn uniformly, each position independent ------------------------------------


class _SequenceTask(CopyFamilyTask):
    """Sources of L symbols drawn uniformly (the official np.random.randint(0, 100, L))."""

    prefix: ClassVar[str] = ""

    def _space_size(self, length: int) -> int:
        return self.num_symbols**length

    def _draw(self, length: int, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.integers(0, self.num_symbols, size=(count, length), dtype=np.int64)

    def _format(self, length: int, words: list[str]) -> tuple[list[str], list[str]]:
        return [self.prefix, *words, SEPARATOR], self._target(words)

    @staticmethod
    def _target(words: list[str]) -> list[str]:
        raise NotImplementedError


class Copy(_SequenceTask):
    """`Copy: a b c [SEP]` -> `a b c`."""

    name = "copy"
    prefix = "Copy:"
    format_words = ("Copy:", SEPARATOR)

    @staticmethod
    def _target(words: list[str]) -> list[str]:
        return words


class Copy2x(_SequenceTask):
    """`Copy: a b c [SEP]` -> `a b c [NEXT] a b c`."""

    name = "copy_2x"
    prefix = "Copy:"
    format_words = ("Copy:", SEPARATOR, NEXT)

    @staticmethod
    def _target(words: list[str]) -> list[str]:
        return [*words, NEXT, *words]


class Reverse(_SequenceTask):
    """`Reverse: a b c [SEP]` -> `c b a`."""

    name = "reverse"
    prefix = "Reverse:"
    format_words = ("Reverse:", SEPARATOR)

    @staticmethod
    def _target(words: list[str]) -> list[str]:
        return words[::-1]


class Reverse2x(_SequenceTask):
    """`Reverse: a b c [SEP]` -> `c b a [NEXT] c b a` ("Reverse" in the paper's main figure)."""

    name = "reverse_2x"
    prefix = "Reverse:"
    format_words = ("Reverse:", SEPARATOR, NEXT)

    @staticmethod
    def _target(words: list[str]) -> list[str]:
        return [*words[::-1], NEXT, *words[::-1]]


class ReverseCopy(_SequenceTask):
    """`Reverse: a b c [SEP]` -> `c b a [NEXT] a b c`."""

    name = "reverse_copy"
    prefix = "Reverse:"
    format_words = ("Reverse:", SEPARATOR, NEXT)

    @staticmethod
    def _target(words: list[str]) -> list[str]:
        return [*words[::-1], NEXT, *words]


# -- one symbol repeated L times -------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class CopyRepeat(CopyFamilyTask):
    """`Copy: a a a [SEP]` -> `a a a` ("Copy" in the paper's main figure)."""

    name = "copy_repeat"
    format_words = ("Copy:", SEPARATOR)
    num_symbols: int = 6_052
    # How many times the target repeats the source.
    repeats: ClassVar[int] = 1

    def _space_size(self, length: int) -> int:
        return self.num_symbols

    def _draw(self, length: int, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.integers(0, self.num_symbols, size=(count, 1), dtype=np.int64)

    def _format(self, length: int, words: list[str]) -> tuple[list[str], list[str]]:
        return ["Copy:", *words * length, SEPARATOR], words * (length * self.repeats)


class CopyRepeat2x(CopyRepeat):
    """`Copy: a a a [SEP]` -> `a a a a a a` (the symbol 2L times)."""

    name = "copy_repeat_2x"
    repeats = 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class CopyRepeatChange(CopyFamilyTask):
    """`Replace a with b in a a a [SEP]` -> `b b b`, a != b."""

    name = "copy_repeat_change"
    format_words = ("Replace", "with", "in", SEPARATOR)
    min_symbols = 2
    num_validation: int = 7_057
    num_symbols: int = 78

    def _space_size(self, length: int) -> int:
        return self.num_symbols * (self.num_symbols - 1)

    def _draw(self, length: int, rng: np.random.Generator, count: int) -> np.ndarray:
        source = rng.integers(0, self.num_symbols, size=count, dtype=np.int64)
        # A uniform non-zero offset makes (source, target) uniform over the pairs with a != b.
        offset = rng.integers(1, self.num_symbols, size=count, dtype=np.int64)
        return np.stack([source, (source + offset) % self.num_symbols], axis=1)

    def _format(self, length: int, words: list[str]) -> tuple[list[str], list[str]]:
        old, new = words
        return ["Replace", old, "with", new, "in", *[old] * length, SEPARATOR], [new] * length
