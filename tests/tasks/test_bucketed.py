"""Tests of lenggen/tasks/bucketed.py: even splits, the validation plan, distinct draws."""

import numpy as np
import pytest

from lenggen.tasks import bucketed
from lenggen.tasks.base import Example


def _uniform_bucket(size: int) -> bucketed.Bucket:
    def draw(rng, count):
        return rng.integers(0, size, size=(count, 1), dtype=np.int64)

    return bucketed.Bucket(key=(size,), length=1, size=size, draw=draw)


@pytest.mark.parametrize(
    "total, parts, expected",
    [(10, 3, [4, 3, 3]), (9, 3, [3, 3, 3]), (2, 4, [1, 1, 0, 0]), (0, 2, [0, 0])],
)
def test_split_evenly(total, parts, expected):
    assert bucketed.split_evenly(total, parts) == expected


def test_plan_gives_validation_only_to_buckets_that_hold_both_shares():
    # 3,000 training examples: 1,000 per bucket; 300 validation: 100 each at first.
    # 100 < 1,100 and 900 < 1,100 drop the first two; the third takes all 300.
    train, validation = bucketed.plan_counts([100, 900, 8_100], 3_000, 300)
    assert train == [1_000, 1_000, 1_000]
    assert validation == [0, 0, 300]


def test_plan_iterates_until_stable():
    # Round 1: shares 100 each; 1,000 < 1,100 drops bucket 0, 1,120 >= 1,100 keeps bucket 1.
    # Round 2: shares 150 each; 1,120 < 1,150 drops bucket 1. Round 3: bucket 2 takes 300.
    assert bucketed.plan_counts([1_000, 1_120, 10**6], 3_000, 300)[1] == [0, 0, 300]
    # With 1,150 distinct examples bucket 1 holds 1,000 + 150 exactly and stays.
    assert bucketed.plan_counts([1_000, 1_150, 10**6], 3_000, 300)[1] == [0, 150, 150]


def test_plan_without_eligible_bucket_gives_no_validation():
    assert bucketed.plan_counts([10, 10], 100, 5) == ([50, 50], [0, 0])


def test_plan_handles_astronomical_sizes():
    assert bucketed.plan_counts([100**40, 7], 14, 3) == ([7, 7], [3, 0])


def test_draw_distinct_whole_bucket_is_a_permutation():
    rng = np.random.default_rng(0)
    items = bucketed.draw_distinct(_uniform_bucket(5), rng, 5)
    assert items.shape == (5, 1)
    assert sorted(items[:, 0].tolist()) == [0, 1, 2, 3, 4]


def test_draw_distinct_zero_and_too_many():
    rng = np.random.default_rng(0)
    assert bucketed.draw_distinct(_uniform_bucket(5), rng, 0).shape == (0, 1)
    with pytest.raises(ValueError, match="Cannot draw 6 distinct items from a bucket of 5"):
        bucketed.draw_distinct(_uniform_bucket(5), rng, 6)


def test_draw_distinct_is_uniform_over_subsets():
    # Each of 4 items lands in a 2-subset with probability 1/2: over 4,000 seeded draws the
    # counts stay within 5 standard deviations (sqrt(4000 * 0.25) ~ 32) of 2,000.
    counts = np.zeros(4, dtype=int)
    for seed in range(4_000):
        items = bucketed.draw_distinct(_uniform_bucket(4), np.random.default_rng(seed), 2)
        counts[items[:, 0]] += 1
    assert np.all(np.abs(counts - 2_000) < 160), counts


# -- the hooks for tasks whose validation must repeat training, and per-bucket test counts ----


class _Tiny(bucketed.BucketedTask):
    """Two training buckets of 3 items each, two test buckets; counts set per instance."""

    name = "tiny"
    seed = 0
    num_train = 8
    num_validation = 4
    num_test_per_bucket = 5

    def __init__(self, repeats: bool, test_counts=None):
        self.validation_repeats_training = repeats
        self.test_counts = test_counts

    def _train_buckets(self):
        return (_bucket(1, 3), _bucket(2, 3))

    def _test_buckets(self):
        return (_bucket(3, 3), _bucket(4, 100))

    def _test_counts(self):
        return self.test_counts or super()._test_counts()

    def _example(self, bucket, item):
        return Example(source=f"{bucket.length}:{item[0]}", target="", length=bucket.length)


def _bucket(length: int, size: int) -> bucketed.Bucket:
    def draw(rng, count):
        return rng.integers(0, size, size=(count, 1), dtype=np.int64)

    return bucketed.Bucket(key=(length,), length=length, size=size, draw=draw)


def test_validation_repeating_training_is_drawn_with_replacement():
    task = _Tiny(repeats=True)
    train, validation = list(task.examples("train")), list(task.examples("validation"))
    # 4 training + 2 validation examples per bucket of 3 items: both drawn with replacement.
    assert [e.length for e in sorted(train, key=lambda e: e.length)] == [1] * 4 + [2] * 4
    assert sorted(e.length for e in validation) == [1, 1, 2, 2]
    assert {e.source for e in train + validation} <= {f"{n}:{i}" for n in (1, 2) for i in range(3)}
    assert task.lengths("validation") == (1, 2)


def test_without_repeats_such_validation_is_refused():
    with pytest.raises(ValueError, match="cannot draw num_validation=4 validation examples"):
        _Tiny(repeats=False)._check_plan()


def test_test_counts_per_bucket():
    assert sorted(e.length for e in _Tiny(True).examples("test")) == [3] * 5 + [4] * 5
    task = _Tiny(True, test_counts=[0, 7])
    test = list(task.examples("test"))
    assert sorted(e.length for e in test) == [4] * 7 and len({e.source for e in test}) == 7
    assert task.lengths("test") == (4,)
