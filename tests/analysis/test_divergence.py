"""Tests of lenggen/analysis/divergence.py: the distances on hand-worked distributions, the
minimum over head pairs and the mean over valid queries.

Tolerance: float32 arithmetic, 1e-6 on values of order 1.
"""

import math

import numpy as np
import pytest

from lenggen.analysis import divergence

ONE_HOT_A, ONE_HOT_B = np.array([1.0, 0.0]), np.array([0.0, 1.0])


def test_jensen_shannon_hand_worked():
    uniform = np.array([0.5, 0.5])
    assert float(divergence.jensen_shannon(uniform, uniform)) == 0.0
    # Disjoint supports: the maximum, ln 2.
    assert float(divergence.jensen_shannon(ONE_HOT_A, ONE_HOT_B)) == pytest.approx(math.log(2))
    # p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4):
    # KL(p||m) = ln(4/3); KL(q||m) = (ln(2/3) + ln 2) / 2; JSD = their mean = 0.2157616.
    expected = (math.log(4 / 3) + (math.log(2 / 3) + math.log(2)) / 2) / 2
    assert float(divergence.jensen_shannon(ONE_HOT_A, uniform)) == pytest.approx(expected, 1e-6)
    assert float(divergence.jensen_shannon(uniform, ONE_HOT_A)) == pytest.approx(expected, 1e-6)


def test_symmetric_kl_hand_worked():
    p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    # KL(p||q) = (ln 2 + ln(2/3)) / 2 = 0.1438410; KL(q||p) = ln(1/2)/4 + 3 ln(3/2)/4 = 0.1308121.
    expected = (math.log(2) + math.log(2 / 3)) / 2 + math.log(0.5) / 4 + 0.75 * math.log(1.5)
    assert float(divergence.symmetric_kl(p, q)) == pytest.approx(expected, rel=1e-6)
    assert float(divergence.symmetric_kl(p, p)) == 0.0
    # Disjoint supports: finite through the floor, 2 ln(1 / KL_FLOOR).
    assert float(divergence.symmetric_kl(ONE_HOT_A, ONE_HOT_B)) == pytest.approx(
        2 * -math.log(divergence.KL_FLOOR), rel=1e-6
    )


def _heads(*rows_per_head):
    """`[heads, queries, keys]` from per-head lists of query rows."""
    return np.array(rows_per_head, np.float32)


def test_minimum_over_every_head_pair_including_cross_index():
    # Query 0 sees key 0 only; query 1 splits over keys 0, 1.
    x = [[1, 0], [0.5, 0.5]]
    y = [[1, 0], [0, 1]]
    z = [[1, 0], [1, 0]]
    a = _heads(x, y)
    b = _heads(z, x)  # b's head 1 equals a's head 0: the minimum pairs different indices
    valid = np.array([True, True])
    pairs = np.asarray(divergence.head_pair_distances(a, b, valid, "jsd"))
    assert pairs.shape == (2, 2)
    # Query 0 is identical everywhere (distance 0); the mean over 2 queries halves query 1's.
    jsd_half = (math.log(4 / 3) + (math.log(2 / 3) + math.log(2)) / 2) / 2  # JSD((1,0),(.5,.5))
    np.testing.assert_allclose(
        pairs, [[jsd_half / 2, 0.0], [math.log(2) / 2, jsd_half / 2]], atol=1e-6
    )
    assert float(divergence.layer_distance(a, b, valid, "jsd")) == 0.0


def test_mean_covers_valid_queries_only():
    a = _heads([[1, 0], [1, 0]])
    b = _heads([[1, 0], [0, 1]])  # differs on query 1 only
    both = divergence.head_pair_distances(a, b, np.array([True, True]), "jsd")
    first = divergence.head_pair_distances(a, b, np.array([True, False]), "jsd")
    assert float(both[0, 0]) == pytest.approx(math.log(2) / 2)
    assert float(first[0, 0]) == 0.0


def test_batch_layer_distances_equals_per_example():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 4, 5, 5))  # [model, batch, heads, q, k]
    causal = np.tril(np.ones((5, 5), bool))
    weights = np.where(causal, np.exp(logits), 0.0)
    weights = (weights / weights.sum(-1, keepdims=True)).astype(np.float32)
    valid = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], bool)
    found = divergence.batch_layer_distances(weights[0], weights[1], valid)
    assert set(found) == set(divergence.METRICS)
    for metric in divergence.METRICS:
        expected = [
            divergence.layer_distance(weights[0, i], weights[1, i], valid[i], metric)
            for i in range(3)
        ]
        np.testing.assert_allclose(found[metric], expected, rtol=1e-5)
        assert (np.asarray(found[metric]) > 0).all()


def test_bad_arguments_are_rejected():
    a = _heads([[1, 0], [1, 0]])
    with pytest.raises(ValueError, match=r"unknown metric 'kl'; valid metrics: \('jsd', "):
        divergence.head_pair_distances(a, a, np.array([True, True]), "kl")
    with pytest.raises(ValueError, match=r"got \(1, 2, 2\), \(1, 2, 3\) and \(2,\)"):
        divergence.head_pair_distances(a, np.zeros((1, 2, 3)), np.array([True, True]), "jsd")
