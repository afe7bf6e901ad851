"""Tests of lenggen/model/positional/alibi.py: the slopes and the bias entries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model.positional import alibi_slopes
from lenggen.model.positional.alibi import ALiBi


def test_slopes_power_of_two():
    assert alibi_slopes(8) == tuple(2.0**-h for h in range(1, 9))
    assert alibi_slopes(1) == (2.0**-8,)
    assert alibi_slopes(4) == (2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8)


def test_slopes_12_heads_the_papers_rule():
    # docs/paper.md: 2^-1 .. 2^-8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
    expected = tuple(2.0**-h for h in range(1, 9)) + (2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5)
    assert alibi_slopes(12) == expected


def test_slopes_3_heads():
    # Two heads from n=2 (2^-4, 2^-8), then every other slope of n=4 ([2^-2, 2^-6]) -> 2^-2.
    assert alibi_slopes(3) == (2.0**-4, 2.0**-8, 2.0**-2)


def test_slopes_reject_zero_heads():
    with pytest.raises(ValueError, match="num_heads >= 1, got 0"):
        alibi_slopes(0)


@pytest.fixture(scope="module")
def bias():
    pe = ALiBi(num_heads=3)
    q_positions = jnp.array([[0, 1, 2, 3, 4], [9, 4, 12, 0, 7]], jnp.int32)
    k_positions = jnp.array([[0, 1, 2, 3, 4, 5, 6], [2, 9, 0, 4, 11, 3, 1]], jnp.int32)
    assert pe.init(jax.random.key(0), q_positions, k_positions, method="bias") == {}
    return pe.apply({}, q_positions, k_positions, method="bias")


@pytest.mark.parametrize(
    "b, h, i, j, value",
    [
        (0, 0, 0, 0, 0.0),  # same position
        (0, 2, 4, 0, -1.0),  # slope 1/4, distance 4
        (0, 1, 3, 1, -2 / 256),  # slope 1/256, distance 2
        (1, 2, 0, 0, -1.75),  # q 9, k 2: slope 1/4, distance 7
        (1, 0, 0, 0, -7 / 16),  # q 9, k 2: slope 1/16
        (1, 0, 2, 2, -12 / 16),  # q 12, k 0
        (1, 1, 1, 4, 7 / 256),  # q 4, k 11: a future key (masked by the kernel)
    ],
)
def test_bias_entries(bias, b, h, i, j, value):
    assert bias.shape == (2, 3, 5, 7) and bias.dtype == jnp.float32
    assert float(bias[b, h, i, j]) == value


def test_bias_depends_only_on_distance(bias):
    np.testing.assert_array_equal(jnp.diagonal(bias[0], axis1=1, axis2=2), np.zeros((3, 5)))
