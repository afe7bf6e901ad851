"""PCFG SET, productivity split (Hupkes et al. 2020), as the paper ran it.

Format, word for word:

  source  "Solve: echo append A1 B2 , shift C3 D4 E5 [SEP]"
  target  "A1 B2 D4 E5 C3 C3"

The paper's run used the official `pcfg_bos` processor (src/data/data_instance_processor/
pcfg_instance_processor.py) on the `md_productivity` split, with the separator "[SEP] "
(configs/data/pcfg.jsonnet; glued to the source there, its own word here). The answer is the
whole target. Length bucket = the number of function words (the script's "category").

The grammar (string-edit functions in prefix order over the 520 symbols A1 .. Z20) and its
interpreter `evaluate` are in lenggen.tasks.pcfg_grammar.

The paper's data (scripts/dataset_builders/make_pcfg_dataset.py) is the productivity split of
github.com/i-machine-think/am-i-compositional: 81,010 training pairs with 1-8 functions, of which
a random tenth (8,101) became the validation file and training read half of it (4,050), leaving
72,909; and 11,333 test pairs with 9-35 functions, far from evenly spread (3,232 have 9
functions, 2,296 have 10, ..., 1 has 35).

Option `source="real"` (the default): the paper's data, from the files shipped in
lenggen/tasks/data/pcfgset/ (read by lenggen.tasks.pcfg_data; shipped rather than downloaded
because lenggen must build the same dataset offline, and they are 1.3 MB compressed).
- test: the real productivity test set, pair for pair in file order, each pair's bucket its
  number of functions (9-30, 32 and 35 occur). A smaller `num_test` takes a seeded random subset
  (file order kept); a smaller `max_test_functions` keeps the pairs with at most that many.
- train and validation: the productivity training sources are not shipped (see the data README),
  but 12,800 real training-distribution pairs are: those with 1-8 functions in the pooled basic
  corpus's dev and test files (pcfg_data.POOL). Their counts per number of functions n (225,
  1,870, 2,827, 2,745, 1,931, 1,495, 967, 740 for n = 1..8) give the real proportions, and
  `num_train` and `num_validation` are each split over n in those proportions (largest
  remainders). Each n's train + validation quota takes the real pairs of n first (a seeded
  random subset when the quota is smaller), and the rest are generated (below) distinct from
  each other and from every real pair; the bucket's examples are then shuffled and cut into
  train and validation, so both splits hold real pairs in the same proportion. At the paper's
  sizes 12,800 of the 76,959 are real and 64,159 generated. Test pairs have 9+ functions, so no
  test source can be in training or validation.
- the generated top-ups follow the real pairs' measured statistics where the grammar below lets
  them: the probability that a function is unary is the real share of unary functions among
  the pairs with n functions, and a string argument's length is 2, 3, 4 or 5 symbols with the
  real pool's frequencies (15.9%, 29.8%, 27.6%, 26.7%). The tree shape and symbols are the
  generator's.
- real pairs are never filtered: 3 test targets are longer than 256 words (the longest, 736).

Option `source="generated"`: everything drawn from the grammar with the data seed (for other
sizes, other function counts, or without the shipped files); its distribution is NOT the
original's, whose production probabilities were fitted with EM to English sentences:
- each length bucket (number of functions n) gets an even share of its split (train over
  n = min_functions..max_train_functions, test over n = max_train_functions + 1..
  max_test_functions, validation over the training buckets, disjoint from training);
- a tree with exactly n functions is drawn top-down: a function is unary with probability 0.75
  (the generator's `prob_unary` default) and uniform within its kind; a unary function's
  argument holds the other n - 1 functions; a binary function splits them between its two
  arguments, the first getting k uniform in 0..n-1; an argument with no function is a string
  of 2-5 symbols (uniform length), each uniform over the 520;
- a tree whose target exceeds `max_target_length` symbols is drawn again (nested repeats double
  the target; greedy evaluation decodes at most 256 tokens, docs/paper.md "Evaluation"); the
  original generator instead capped the written source at 300 characters;
- string arguments may repeat across examples (the original generator avoided that).
"""

import bisect
import collections
import dataclasses
import functools

import numpy as np

from lenggen.tasks import answers, options, pcfg_data
from lenggen.tasks.base import Example
from lenggen.tasks.bucketed import DATA_SEED, Bucket, BucketedTask, split_evenly
from lenggen.tasks.pcfg_grammar import (
    BINARY,
    COMMA,
    SYMBOLS,
    UNARY,
    count_functions,
    evaluate,
    string_arguments,
)

PREFIX = "Solve:"
SEPARATOR = "[SEP]"
P_UNARY = 0.75
STRING_LENGTHS = (2, 5)  # inclusive
# Cumulative probabilities of the string lengths 3, 4, 5 (uniform): length = 2 + bisect(cdf, u).
_UNIFORM_LENGTH_CDF = (0.25, 0.5, 0.75)
SOURCES = ("real", "generated")
# The productivity split's cut: training pairs have at most 8 functions, test pairs at least 9.
REAL_MAX_TRAIN_FUNCTIONS = 8

# Item tokens: function words, then the comma, then the symbols; -1 pads a row.
_WORDS = (*UNARY, *BINARY, COMMA, *SYMBOLS)
_FIRST_BINARY = len(UNARY)
_COMMA_ID = len(UNARY) + len(BINARY)
_FIRST_SYMBOL = _COMMA_ID + 1
_PAD = -1

# Random streams of source="real" (bucketed.py uses 0-2 for the generated splits).
_REAL_TRAIN_VALIDATION_STREAM = 3
_REAL_TEST_STREAM = 4


@functools.cache
def _counted(name: str) -> tuple[tuple[str, str, int], ...]:
    """(source, target, functions) of the shipped file `name`; counted once per process."""
    return tuple((s, t, count_functions(s)) for s, t in pcfg_data.read(name))


def proportional_counts(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights` by largest remainders (ties to the first).

    Each count is floor or ceil of total * weight / sum(weights), and they sum to `total`.
    """
    whole = sum(weights)
    counts = [total * w // whole for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in remainders[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _real_example(source: str, target: str) -> Example:
    return Example(
        source=f"{PREFIX} {source} {SEPARATOR}", target=target, length=count_functions(source)
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pcfg(BucketedTask):
    """`Solve: <functions and strings> [SEP]` -> `<symbols>`; defaults are the paper's data.

    Attributes:
      seed: the data seed.
      source: "real" (the paper's productivity data, topped up with generated training pairs)
        or "generated" (every split drawn from the grammar); see the module doc.
      num_train: training examples (real: in the real proportions over the number of functions;
        generated: split evenly over min_functions..max_train_functions).
      num_validation: validation examples, from the training buckets, disjoint from train.
      num_test: test examples (real: the whole real test set, 11,333, or a seeded subset;
        generated: split evenly over max_train_functions + 1..max_test_functions).
      min_functions: the fewest functions of a training example.
      max_train_functions: the most functions of a training example (8 with source="real").
      max_test_functions: the most functions of a test example.
      max_target_length: the longest generated target in symbols (longer trees are drawn
        again; real pairs are kept whatever their length).
    """

    name = "pcfg"
    # 1.1.0: source="real" (the paper's data) became the default.
    version = "1.1.0"

    seed: int = DATA_SEED
    source: str = "real"
    num_train: int = 72_909
    num_validation: int = 4_050
    num_test: int = 11_333
    min_functions: int = 1
    max_train_functions: int = 8
    max_test_functions: int = 35
    max_target_length: int = 256

    def __post_init__(self):
        options.check_types(self)
        if self.source not in SOURCES:
            raise options.TaskOptionError(
                f"Task {self.name!r}: option source={self.source!r} is not a data source; "
                f"expected one of {', '.join(SOURCES)}."
            )
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
            self,
            "max_target_length",
            STRING_LENGTHS[1] + self.max_test_functions,
            "a string argument plus one symbol per function",
        )
        if self.source == "real":
            if self.max_train_functions != REAL_MAX_TRAIN_FUNCTIONS:
                raise options.TaskOptionError(
                    f"Task {self.name!r}: option max_train_functions={self.max_train_functions} "
                    f"cannot be used with source='real', whose split cuts at "
                    f"{REAL_MAX_TRAIN_FUNCTIONS} functions; expected "
                    f"{REAL_MAX_TRAIN_FUNCTIONS}, or source='generated'."
                )
            available = len(self._real_test_candidates)
            options.check_at_most(
                self,
                "num_test",
                available,
                f"the real test pairs with at most max_test_functions={self.max_test_functions} "
                "functions",
            )
        self._check_plan()

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

    def _test_counts(self) -> list[int]:
        if self.source == "generated":
            return split_evenly(self.num_test, len(self._test_buckets()))
        counts = collections.Counter(e.length for e in self._test_examples)
        return [counts[b.length] for b in self._test_buckets()]

    def _draw(
        self,
        functions: int,
        rng: np.random.Generator,
        count: int,
        p_unary: float = P_UNARY,
        length_cdf: tuple[float, ...] = _UNIFORM_LENGTH_CDF,
    ) -> np.ndarray:
        """`count` trees of `functions` functions: [count, 7 * functions + 5] token ids.

        A tree has one token per function, one comma per binary function and at most
        functions + 1 strings of at most 5 symbols: 7 * functions + 5 tokens, -1 padded.
        """
        rows = np.full((count, 7 * functions + 5), _PAD, dtype=np.int64)
        for row in rows:
            tokens, target_length = _draw_tree(rng, functions, p_unary, length_cdf)
            while target_length > self.max_target_length:
                tokens, target_length = _draw_tree(rng, functions, p_unary, length_cdf)
            row[: len(tokens)] = tokens
        return rows

    def _example(self, bucket: Bucket, item: np.ndarray) -> Example:
        words = [_WORDS[t] for t in item.tolist() if t != _PAD]
        return Example(
            source=f"{PREFIX} {' '.join(words)} {SEPARATOR}",
            target=" ".join(evaluate(words)),
            length=bucket.length,
        )

    # -- source="real": the shipped productivity data (module doc) -------------------------

    @functools.cached_property
    def _real_pool(self) -> dict[int, list[tuple[str, str]]]:
        """Number of functions -> the real training-distribution pairs, min..max_train."""
        pool = {n: [] for n in range(self.min_functions, self.max_train_functions + 1)}
        for name in pcfg_data.POOL:
            for source, target, n in _counted(name):
                if n in pool:
                    pool[n].append((source, target))
        return pool

    @functools.cached_property
    def _real_test_candidates(self) -> list[tuple[str, str]]:
        return [(s, t) for s, t, n in _counted("productivity/test") if n <= self.max_test_functions]

    @functools.cached_property
    def _plan(self) -> tuple[list[int], list[int]]:
        if self.source == "generated":
            return super()._plan
        weights = [len(pairs) for pairs in self._real_pool.values()]
        return (
            proportional_counts(self.num_train, weights),
            proportional_counts(self.num_validation, weights),
        )

    @functools.cached_property
    def _string_length_cdf(self) -> tuple[float, ...]:
        """The real pool's string-argument lengths as `_draw_tree`'s cumulative probabilities."""
        counts = collections.Counter(
            len(argument.split())
            for pairs in self._real_pool.values()
            for source, _ in pairs
            for argument in string_arguments(source)
        )
        total = sum(counts.values())
        lengths = range(STRING_LENGTHS[0], STRING_LENGTHS[1])  # The last is implied.
        return tuple(sum(counts[k] for k in range(n + 1)) / total for n in lengths)

    def _unary_share(self, functions: int) -> float:
        """The share of unary functions among the function words of the real pairs of a bucket."""
        words = [w for source, _ in self._real_pool[functions] for w in source.split()]
        unary = sum(w in UNARY for w in words)
        return unary / (unary + sum(w in BINARY for w in words))

    def _top_up(
        self, bucket: Bucket, rng: np.random.Generator, count: int, exclude: set[str]
    ) -> list[Example]:
        """`count` generated examples of `bucket`, distinct from each other and from `exclude`."""
        p_unary, cdf = self._unary_share(bucket.length), self._string_length_cdf
        examples, seen = [], set(exclude)
        while len(examples) < count:
            for item in self._draw(bucket.length, rng, count - len(examples), p_unary, cdf):
                example = self._example(bucket, item)
                if example.source not in seen:
                    seen.add(example.source)
                    examples.append(example)
        return examples

    @functools.cached_property
    def _train_validation_examples(self) -> tuple[list[Example], list[Example]]:
        if self.source == "generated":
            return super()._train_validation_examples
        train, validation = [], []
        for bucket, n_train, n_valid in zip(self._train_buckets(), *self._plan):
            rng = np.random.default_rng([self.seed, _REAL_TRAIN_VALIDATION_STREAM, *bucket.key])
            real = [_real_example(*pair) for pair in self._real_pool[bucket.length]]
            examples = [real[i] for i in rng.permutation(len(real))[: n_train + n_valid]]
            if len(examples) < n_train + n_valid:
                examples += self._top_up(
                    bucket, rng, n_train + n_valid - len(examples), {e.source for e in real}
                )
            examples = [examples[i] for i in rng.permutation(len(examples))]
            train += examples[:n_train]
            validation += examples[n_train:]
        return self._shuffled(train, "train"), self._shuffled(validation, "validation")

    @functools.cached_property
    def _test_examples(self) -> list[Example]:
        if self.source == "generated":
            return super()._test_examples
        pairs = self._real_test_candidates
        if self.num_test < len(pairs):
            rng = np.random.default_rng([self.seed, _REAL_TEST_STREAM])
            pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), self.num_test, replace=False))]
        return [_real_example(*pair) for pair in pairs]


def _draw_tree(
    rng: np.random.Generator, functions: int, p_unary: float, length_cdf: tuple[float, ...]
) -> tuple[list[int], int]:
    """(token ids in prefix order, target length) of one tree with exactly `functions` functions.

    A function is unary with probability `p_unary`; a string has length
    STRING_LENGTHS[0] + bisect(length_cdf, u). The target length follows the functions'
    semantics, so over-long trees are refused without evaluating them.
    """
    # Enough uniforms for the worst case: 3 per function (kind, which, split) and 6 per string
    # (length, 5 symbols), consumed in order.
    uniforms = iter(rng.random(3 * functions + 6 * (functions + 1)).tolist())
    tokens: list[int] = []

    def tree(n: int) -> int:  # Appends a tree of n functions; returns its target length.
        if n == 0:
            length = STRING_LENGTHS[0] + bisect.bisect_right(length_cdf, next(uniforms))
            tokens.extend(_FIRST_SYMBOL + int(next(uniforms) * len(SYMBOLS)) for _ in range(length))
            return length
        if next(uniforms) < p_unary:
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
        return {
            "append": first + second,
            "prepend": first + second,
            "remove_first": second,
            "remove_second": first,
        }[BINARY[function]]

    length = tree(functions)
    return tokens, length
