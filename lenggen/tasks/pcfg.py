"""PCFG SET, productivity split (docs/paper.md "Tasks"; Hupkes et al. 2020).

Format, word for word:

  source  "Solve: echo append A1 B2 , shift C3 D4 E5 [SEP]"
  target  "A1 B2 D4 E5 C3 C3"

The paper's run used the official `pcfg_bos` processor (src/data/data_instance_processor/
pcfg_instance_processor.py) on the `md_productivity` split, with the separator "[SEP] "
(configs/data/pcfg.jsonnet; glued to the source there, its own word here). The answer is the
whole target. Length bucket = the number of function words (the script's "category").

The string-edit functions (github.com/MathijsMul/pcfg-set, tasks/default.py), written in prefix
order, a binary function's two arguments separated by ",":
  unary   copy x = x; reverse x = x reversed; shift x = x[1:] + x[0]; echo x = x + x[-1];
          swap_first_last x = x[-1] + x[1:-1] + x[0]; repeat x = x x
  binary  append x , y = x y; prepend x , y = y x; remove_first x , y = y; remove_second x , y = x
String arguments: 2-5 symbols (the generator's default lengths), each uniform over the 520
symbols A1 .. Z20 (26 letters x 20).

Generation. The paper's data (scripts/dataset_builders/make_pcfg_dataset.py) is the PCFG SET
productivity split of github.com/i-machine-think/am-i-compositional: 81,010 training examples
with 1-8 functions, of which a random tenth (8,101) became the validation file and training read
half of it (4,050), leaving 72,909; 11,333 test examples with 9-35 functions. That corpus cannot
be downloaded here, and its production probabilities were fitted with EM to the depths and
lengths of English sentences ("naturalised"; the fitted values could not be obtained here). So
the data are generated from the grammar with the data seed, and the distribution is NOT the
original's:
- each length bucket (number of functions n) gets an even share of its split (train 72,909 over
  n = 1..8, test 11,333 over n = 9..35, validation 4,050 over the training buckets, disjoint
  from training), where the original's counts per n followed its naturalised grammar;
- a tree with exactly n functions is drawn top-down: a function is unary with probability 0.75
  (the generator's `prob_unary` default) and uniform within its kind; a unary function's
  argument holds the other n - 1 functions; a binary function splits them between its two
  arguments, the first getting k uniform in 0..n-1; an argument with no function is a string;
- a tree whose target exceeds `max_target_length` symbols is drawn again (nested repeats double
  the target; greedy evaluation decodes at most 256 tokens, docs/paper.md "Evaluation"); the
  original generator instead capped the written source at 300 characters;
- string arguments may repeat across examples (the original generator avoided that).
"""

import dataclasses
import functools
import string

import numpy as np

from lenggen.tasks import answers, options
from lenggen.tasks.base import Example
from lenggen.tasks.bucketed import DATA_SEED, Bucket, BucketedTask, split_evenly

PREFIX = "Solve:"
SEPARATOR = "[SEP]"
COMMA = ","
UNARY = ("copy", "reverse", "shift", "echo", "swap_first_last", "repeat")
BINARY = ("append", "prepend", "remove_first", "remove_second")
SYMBOLS = tuple(f"{letter}{number}" for letter in string.ascii_uppercase for number in range(1, 21))
P_UNARY = 0.75
STRING_LENGTHS = (2, 5)  # inclusive

# Item tokens: function words, then the comma, then the symbols; -1 pads a row.
_WORDS = (*UNARY, *BINARY, COMMA, *SYMBOLS)
_FIRST_BINARY = len(UNARY)
_COMMA_ID = len(UNARY) + len(BINARY)
_FIRST_SYMBOL = _COMMA_ID + 1
_PAD = -1


def apply(function: str, *arguments: list[str]) -> list[str]:
    """The value of one string-edit function on its arguments (lists of symbols)."""
    x = arguments[0]
    match function:
        case "copy":
            return x
        case "reverse":
            return x[::-1]
        case "shift":
            return x[1:] + x[:1]
        case "echo":
            return x + x[-1:]
        case "swap_first_last":
            return x[-1:] + x[1:-1] + x[:1]
        case "repeat":
            return x + x
        case "append":
            return x + arguments[1]
        case "prepend":
            return arguments[1] + x
        case "remove_first":
            return arguments[1]
        case "remove_second":
            return x
    raise ValueError(
        f"Unknown PCFG SET function {function!r}; expected one of {', '.join(UNARY + BINARY)}."
    )


def evaluate(tokens: list[str]) -> list[str]:
    """The target of a prefix-order source (function words, symbols and commas)."""

    def expression(i: int) -> tuple[list[str], int]:  # (value, index after it)
        word = tokens[i]
        if word in UNARY:
            value, i = expression(i + 1)
            return apply(word, value), i
        if word in BINARY:
            first, i = expression(i + 1)
            second, i = expression(i + 1)  # Skips the comma.
            return apply(word, first, second), i
        end = i
        while end < len(tokens) and tokens[end] != COMMA:
            end += 1
        return tokens[i:end], end

    value, _ = expression(0)
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pcfg(BucketedTask):
    """`Solve: <functions and strings> [SEP]` -> `<symbols>`; defaults are the paper's sizes.

    Attributes:
      seed: the data seed.
      num_train: training examples, split evenly over 1..max_train_functions functions.
      num_validation: validation examples, from the training buckets, disjoint from train.
      num_test: test examples, split evenly over max_train_functions + 1..max_test_functions.
      min_functions: the fewest functions of a training example.
      max_train_functions: the most functions of a training example.
      max_test_functions: the most functions of a test example.
      max_target_length: the longest target in symbols (longer trees are drawn again).
    """

    name = "pcfg"

    seed: int = DATA_SEED
    num_train: int = 72_909
    num_validation: int = 4_050
    num_test: int = 11_333
    min_functions: int = 1
    max_train_functions: int = 8
    max_test_functions: int = 35
    max_target_length: int = 256

    def __post_init__(self):
        options.check_types(self)
        options.check_at_least(self, "seed", 0, "numpy seeds are non-negative")
        options.check_at_least(self, "num_train", 1)
        options.check_at_least(self, "num_validation", 0)
        options.check_at_least(self, "num_test", 1)
        options.check_at_least(self, "min_functions", 1)
        options.check_at_least(self, "max_train_functions", self.min_functions, "min_functions")
        options.check_at_least(
            self, "max_test_functions", self.max_train_functions + 1, "max_train_functions + 1"
        )
        # Every tree's target can be cut to one string argument (remove_first / remove_second),
        # but a chain of unary functions grows it by up to one symbol each (echo).
        options.check_at_least(
            self, "max_target_length", STRING_LENGTHS[1] + self.max_test_functions,
            "a string argument plus one symbol per function",
        )
        self._check_plan()

    def _test_counts(self) -> list[int]:
        return split_evenly(self.num_test, len(self._test_buckets()))

    # -- Task interface -------------------------------------------------------------------

    def vocabulary(self) -> tuple[str, ...]:
        return tuple(sorted({PREFIX, SEPARATOR, *_WORDS}))

    def parse_answer(self, text: str) -> str | None:
        """The whole text written after the prompt, whitespace-normalised (None when empty)."""
        return answers.normalized(text) or None

    # -- buckets: one per number of functions ---------------------------------------------

    def _bucket(self, functions: int) -> Bucket:
        return Bucket(
            key=(functions,),
            length=functions,
            # A lower bound: the chains of the 5 unary functions other than repeat on one
            # 2-symbol string, all within max_target_length.
            size=5**functions * len(SYMBOLS) ** 2,
            draw=functools.partial(self._draw, functions),
        )

    def _train_buckets(self) -> tuple[Bucket, ...]:
        return tuple(map(self._bucket, range(self.min_functions, self.max_train_functions + 1)))

    def _test_buckets(self) -> tuple[Bucket, ...]:
        functions = range(self.max_train_functions + 1, self.max_test_functions + 1)
        return tuple(map(self._bucket, functions))

    def _draw(self, functions: int, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` trees of `functions` functions: [count, 7 * functions + 5] token ids.

        A tree has one token per function, one comma per binary function and at most
        functions + 1 strings of at most 5 symbols: 7 * functions + 5 tokens, -1 padded.
        """
        rows = np.full((count, 7 * functions + 5), _PAD, dtype=np.int64)
        for row in rows:
            tokens, target_length = _draw_tree(rng, functions)
            while target_length > self.max_target_length:
                tokens, target_length = _draw_tree(rng, functions)
            row[: len(tokens)] = tokens
        return rows

    def _example(self, bucket: Bucket, item: np.ndarray) -> Example:
        words = [_WORDS[t] for t in item.tolist() if t != _PAD]
        return Example(
            source=f"{PREFIX} {' '.join(words)} {SEPARATOR}",
            target=" ".join(evaluate(words)),
            length=bucket.length,
        )


def _draw_tree(rng: np.random.Generator, functions: int) -> tuple[list[int], int]:
    """(token ids in prefix order, target length) of one tree with exactly `functions` functions.

    The target length follows the functions' semantics, so over-long trees are refused without
    evaluating them.
    """
    # Enough uniforms for the worst case: 3 per function (kind, which, split) and 6 per string
    # (length, 5 symbols), consumed in order.
    uniforms = iter(rng.random(3 * functions + 6 * (functions + 1)).tolist())
    tokens: list[int] = []
    string_lengths = STRING_LENGTHS[1] - STRING_LENGTHS[0] + 1

    def tree(n: int) -> int:  # Appends a tree of n functions; returns its target length.
        if n == 0:
            length = STRING_LENGTHS[0] + int(next(uniforms) * string_lengths)
            tokens.extend(_FIRST_SYMBOL + int(next(uniforms) * len(SYMBOLS)) for _ in range(length))
            return length
        if next(uniforms) < P_UNARY:
            function = int(next(uniforms) * len(UNARY))
            tokens.append(function)
            length = tree(n - 1)
            return {"echo": length + 1, "repeat": 2 * length}.get(UNARY[function], length)
        function = int(next(uniforms) * len(BINARY))
        tokens.append(_FIRST_BINARY + function)
        first_functions = int(next(uniforms) * n)
        first = tree(first_functions)
        tokens.append(_COMMA_ID)
        second = tree(n - 1 - first_functions)
        return {"append": first + second, "prepend": first + second, "remove_first": second,
                "remove_second": first}[BINARY[function]]

    length = tree(functions)
    return tokens, length
