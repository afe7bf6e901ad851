"""Tasks whose splits are drawn bucket by bucket from a fixed data seed.

A bucket holds the examples of one kind: one source length for the copy family, one pair of
operand digit counts for addition. A bucket knows how many distinct examples it holds (`size`,
possibly astronomically many) and draws items uniformly at random; the task turns an item into an
`Example`. The splits follow the paper's data scripts (McGill-NLP/length-generalization,
scripts/dataset_builders/make_*_dataset.py): the same number of examples per bucket, test buckets
disjoint from training buckets (longer lengths / more digits), everything shuffled.

How train and validation are drawn (validation comes from the training buckets):
- `num_train` is split evenly over the training buckets (the first buckets take the remainder);
  so is `num_validation`, but only over the buckets *eligible* for validation: those whose
  `size` can hold their training share plus their validation share without repeating an example.
  Eligibility is found by iteration (dropping a bucket raises the others' validation shares).
- In an eligible bucket both shares are drawn together as distinct examples, so validation never
  repeats a training example and neither split repeats itself.
- A bucket too small for validation gives none (e.g. addition's 1-digit + 1-digit bucket, only
  100 problems); its training share is distinct when `size` allows, otherwise drawn with
  replacement, as the paper's scripts did everywhere (np.random.randint per example).
- A split with validation requested but no eligible bucket is refused with a TaskOptionError,
  unless the task sets `validation_repeats_training`: then validation is split evenly over every
  training bucket and a bucket too small for both shares draws both with replacement, as the
  paper's scripts did (parity: a training length L holds only 2^L sequences, far fewer than its
  share, so no validation set can avoid the training examples).
Test: `_test_counts()` examples per test bucket (by default `num_test_per_bucket` each), distinct
unless the bucket holds fewer.

Seeding: every random stream is `np.random.default_rng([seed, stream, *bucket key])`, never
global state, so the same options give identical examples and buckets are independent of each
other. The data seed is fixed like the paper's (whose scripts all used 9842497, kept here as the
default) and is separate from the model seed; the examples still differ from the paper's files,
which came from a different generator and the T5 vocabulary.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

import numpy as np

from lenggen.tasks import options
from lenggen.tasks.base import SPLITS, Example, Task

# The seed of the paper's data scripts (set_seed(9842497) in make_*_dataset.py).
DATA_SEED = 9842497

# Random streams, the second entry of every SeedSequence.
_TRAIN_VALIDATION_STREAM = 0
_TEST_STREAM = 1
_SHUFFLE_STREAM = 2


@dataclasses.dataclass(frozen=True)
class Bucket:
    """A set of examples the task draws from.

    Attributes:
      key: non-negative ints naming the bucket in its random stream, e.g. `(length,)`.
      length: the length bucket its examples are reported under (`Example.length`).
      size: how many distinct examples it holds (a Python int, possibly huge; a lower bound
        where the exact count is unknown, as for pcfg's trees).
      draw: `(rng, count) -> [count, width]` int64 array of items drawn uniformly with
        replacement (pcfg: independently from its grammar); equal rows are equal examples.
    """

    key: tuple[int, ...]
    length: int
    size: int
    draw: Callable[[np.random.Generator, int], np.ndarray]


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` split into `parts` counts differing by at most one, larger counts first."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def plan_counts(
    sizes: Sequence[int], num_train: int, num_validation: int
) -> tuple[list[int], list[int]]:
    """Per-bucket (train, validation) counts for buckets holding `sizes` distinct examples.

    Validation goes only to buckets that can hold both shares without a repeat (module doc);
    the validation counts sum to `num_validation` unless no bucket is eligible (then all zero).
    """
    train = split_evenly(num_train, len(sizes))
    eligible = list(range(len(sizes)))
    while eligible:
        shares = split_evenly(num_validation, len(eligible))
        keep = [b for b, share in zip(eligible, shares) if sizes[b] >= train[b] + share]
        if keep == eligible:
            break
        eligible = keep
    validation = [0] * len(sizes)
    if eligible:
        for b, share in zip(eligible, split_evenly(num_validation, len(eligible))):
            validation[b] = share
    return train, validation


def draw_distinct(bucket: Bucket, rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` distinct items of `bucket`: [count, width], a uniform random subset in random order.

    Keeping the first `count` distinct items of a uniform stream gives exactly that.
    """
    if count > bucket.size:
        raise ValueError(f"Cannot draw {count} distinct items from a bucket of {bucket.size}.")
    rows, seen = [], set()
    batch = bucket.draw(rng, count)
    while True:
        for row in batch:
            key = row.tobytes()
            if key not in seen:
                seen.add(key)
                rows.append(row)
        if len(rows) == count:
            return np.stack(rows) if rows else batch[:0]
        batch = bucket.draw(rng, count - len(rows))


def _rng(seed: int, stream: int, key: Sequence[int]) -> np.random.Generator:
    return np.random.default_rng([seed, stream, *key])


class BucketedTask(Task):
    """A Task whose splits come from buckets (module doc). Subclasses are frozen dataclasses.

    Subclasses provide the options `seed`, `num_train` and `num_validation` (dataclass fields),
    `num_test_per_bucket`, `_train_buckets()`, `_test_buckets()` and `_example(bucket, item)`;
    their `__post_init__` checks their options and then calls `_check_plan()`. They may override
    `_test_counts()` (examples per test bucket) and set `validation_repeats_training` (module doc).
    """

    # Whether validation may repeat training examples where no bucket can keep them apart.
    validation_repeats_training: ClassVar[bool] = False

    @property
    def num_test_per_bucket(self) -> int:
        raise NotImplementedError

    def _train_buckets(self) -> tuple[Bucket, ...]:
        raise NotImplementedError

    def _test_buckets(self) -> tuple[Bucket, ...]:
        raise NotImplementedError

    def _example(self, bucket: Bucket, item: np.ndarray) -> Example:
        """The example of one item (a row of `bucket.draw`'s output)."""
        raise NotImplementedError

    def _test_counts(self) -> list[int]:
        """How many examples each test bucket gives (in `_test_buckets()` order)."""
        return [self.num_test_per_bucket] * len(self._test_buckets())

    # -- Task interface -------------------------------------------------------------------

    def options(self) -> dict:
        return dataclasses.asdict(self)

    def examples(self, split: str) -> Iterator[Example]:
        _check_split(split)
        if split == "test":
            return iter(self._test_examples)
        return iter(self._train_validation_examples[SPLITS.index(split)])

    def lengths(self, split: str) -> tuple[int, ...]:
        _check_split(split)
        if split == "test":
            buckets = zip(self._test_buckets(), self._test_counts())
            return tuple(sorted({b.length for b, n in buckets if n}))
        counts = self._plan[SPLITS.index(split)]
        return tuple(sorted({b.length for b, n in zip(self._train_buckets(), counts) if n}))

    # -- generation -----------------------------------------------------------------------

    @functools.cached_property
    def _plan(self) -> tuple[list[int], list[int]]:
        sizes = [b.size for b in self._train_buckets()]
        if self.validation_repeats_training:
            return (
                split_evenly(self.num_train, len(sizes)),
                split_evenly(self.num_validation, len(sizes)),
            )
        return plan_counts(sizes, self.num_train, self.num_validation)

    def _check_plan(self) -> None:
        """Refuses options under which validation cannot be kept apart from training."""
        if self.num_validation and not any(self._plan[1]):
            buckets = self._train_buckets()
            largest = max(buckets, key=lambda b: b.size)
            raise options.TaskOptionError(
                f"Task {self.name!r}: cannot draw num_validation={self.num_validation} "
                f"validation examples disjoint from num_train={self.num_train} training "
                f"examples: each of the {len(buckets)} training buckets gets about "
                f"{self.num_train // len(buckets)} training examples, and the largest holds "
                f"only {largest.size} distinct examples. Expected fewer training or validation "
                "examples, or a larger example space (more symbols, longer lengths)."
            )

    @functools.cached_property
    def _train_validation_examples(self) -> tuple[list[Example], list[Example]]:
        train, validation = [], []
        for bucket, n_train, n_valid in zip(self._train_buckets(), *self._plan):
            rng = _rng(self.seed, _TRAIN_VALIDATION_STREAM, bucket.key)
            if n_train + n_valid <= bucket.size:
                items = draw_distinct(bucket, rng, n_train + n_valid)
            else:  # Too small for distinct examples: drawn with replacement, as the paper did.
                # (n_valid is 0 here unless validation_repeats_training.)
                items = bucket.draw(rng, n_train + n_valid)
            train += [self._example(bucket, item) for item in items[:n_train]]
            validation += [self._example(bucket, item) for item in items[n_train:]]
        return self._shuffled(train, "train"), self._shuffled(validation, "validation")

    @functools.cached_property
    def _test_examples(self) -> list[Example]:
        test = []
        for bucket, count in zip(self._test_buckets(), self._test_counts()):
            rng = _rng(self.seed, _TEST_STREAM, bucket.key)
            if count <= bucket.size:
                items = draw_distinct(bucket, rng, count)
            else:
                items = bucket.draw(rng, count)
            test += [self._example(bucket, item) for item in items]
        return self._shuffled(test, "test")

    def _shuffled(self, examples: list[Example], split: str) -> list[Example]:
        """The examples in a seeded random order (the paper's scripts shuffled every split)."""
        order = _rng(self.seed, _SHUFFLE_STREAM, (SPLITS.index(split),)).permutation(len(examples))
        return [examples[i] for i in order]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PerLengthBuckets(BucketedTask):
    """A BucketedTask with one bucket per input length (the copy family, the maths tasks).

    The options both families share are here, with the copy family's defaults (a subclass
    redeclares a field to change its default); subclasses provide `_space_size(length)`
    (distinct problems of that length) and `_draw(length, rng, count)`, and their
    `__post_init__` calls `_check_length_options`, then checks their own options, then calls
    `_check_plan()`.

    Attributes:
      seed: the data seed (fixed like the paper's; not the model seed).
      num_train: training examples, split evenly over the training lengths.
      num_validation: validation examples, drawn from the training lengths, disjoint from
        train where a length holds enough problems.
      num_test_per_length: test examples per test length.
      min_length: the shortest training length.
      max_train_length: the longest training length; test lengths start one above it.
      max_test_length: the longest test length.
    """

    seed: int = DATA_SEED
    num_train: int = 100_000
    num_validation: int = 7_494
    num_test_per_length: int = 500
    min_length: int = 2
    max_train_length: int = 20
    max_test_length: int = 40

    def _check_length_options(self, lowest_length: int = 1, reason: str = "") -> None:
        """Raises TaskOptionError unless every option has its default's type, the counts are
        positive (num_validation may be 0) and lowest_length <= min_length <= max_train_length
        < max_test_length; `reason` says where lowest_length comes from."""
        options.check_types(self)
        options.check_at_least(self, "seed", 0, "numpy seeds are non-negative")
        options.check_at_least(self, "num_train", 1)
        options.check_at_least(self, "num_validation", 0)
        options.check_at_least(self, "num_test_per_length", 1)
        options.check_at_least(self, "min_length", lowest_length, reason)
        options.check_at_least(self, "max_train_length", self.min_length, "min_length")
        options.check_at_least(
            self, "max_test_length", self.max_train_length + 1, "max_train_length + 1"
        )

    @property
    def num_test_per_bucket(self) -> int:
        return self.num_test_per_length

    def _space_size(self, length: int) -> int:
        raise NotImplementedError

    def _draw(self, length: int, rng: np.random.Generator, count: int) -> np.ndarray:
        raise NotImplementedError

    def _buckets(self, lengths: range) -> tuple[Bucket, ...]:
        return tuple(
            Bucket(
                key=(length,),
                length=length,
                size=self._space_size(length),
                draw=functools.partial(self._draw, length),
            )
            for length in lengths
        )

    def _train_buckets(self) -> tuple[Bucket, ...]:
        return self._buckets(range(self.min_length, self.max_train_length + 1))

    def _test_buckets(self) -> tuple[Bucket, ...]:
        return self._buckets(range(self.max_train_length + 1, self.max_test_length + 1))
