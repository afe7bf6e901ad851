"""Tests of lenggen/model/positional/t5.py: causal T5 buckets and the shared bias table."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model.positional import t5_relative_bucket
from lenggen.model.positional.t5 import T5RelativeBias


def _python_bucket(relative_position: int, num_buckets: int, max_distance: int) -> int:
    """The Mesh-TF / HF T5 formula (bidirectional=False), written independently in math."""
    n = max(-relative_position, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return n
    large = max_exact + int(
        math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    )
    return min(large, num_buckets - 1)


# relative position (key - query) -> bucket, worked by hand for 32 buckets, max distance 128:
# distance d >= 16 -> 16 + floor(16 * log(d / 16) / log(8)), capped at 31.
HAND_WORKED = {
    0: 0, -1: 1, -2: 2, -15: 15,  # exact buckets
    -16: 16, -17: 16,  # 16 * log(17/16)/log(8) = 0.47
    -20: 17,  # 16 * log(1.25)/log(8) = 1.72
    -32: 21,  # 16 * log(2)/log(8) = 5.33
    -64: 26,  # 16 * log(4)/log(8) = 10.67
    -100: 30,  # 16 * log(6.25)/log(8) = 14.10
    -127: 31,  # 15.94
    -128: 31, -1000: 31,  # >= 128: the last bucket
    1: 0, 5: 0, 1000: 0,  # future keys (masked) share bucket 0
}  # fmt: skip


def test_hand_worked_buckets():
    relative = jnp.array(list(HAND_WORKED), jnp.int32)
    assert t5_relative_bucket(relative).tolist() == list(HAND_WORKED.values())


@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 20), (33, 50)])
def test_matches_independent_python_formula(num_buckets, max_distance):
    relative = np.arange(-3000, 40)
    got = t5_relative_bucket(jnp.asarray(relative), num_buckets, max_distance)
    expected = [_python_bucket(int(r), num_buckets, max_distance) for r in relative]
    np.testing.assert_array_equal(got, expected)


@pytest.fixture(scope="module")
def t5_bias():
    pe = T5RelativeBias(num_heads=3, d_model=16)
    q_positions = jnp.array([[0, 1, 2, 3, 4], [20, 21, 150, 30, 0]], jnp.int32)
    k_positions = jnp.array([[0, 1, 2, 3, 4, 5, 6], [3, 20, 0, 22, 4, 1, 5]], jnp.int32)
    variables = pe.init(jax.random.key(0, impl="rbg"), q_positions, k_positions, method="bias")
    bias = pe.apply(variables, q_positions, k_positions, method="bias")
    return variables["params"]["rel_embedding"], bias


def test_table_shape_and_logical_names(t5_bias):
    boxed, bias = t5_bias
    assert boxed.value.shape == (32, 3)
    assert boxed.names == ("relpos_buckets", "heads")
    assert bias.shape == (2, 3, 5, 7) and bias.dtype == jnp.float32


@pytest.mark.parametrize(
    "b, h, i, j, bucket",
    [
        (0, 0, 0, 0, 0),  # q 0, k 0: distance 0
        (0, 2, 4, 1, 3),  # q 4, k 1: distance 3
        (0, 1, 1, 5, 0),  # q 1, k 5: future key -> bucket 0
        (1, 1, 0, 0, 16),  # q 20, k 3: distance 17 -> 16 + floor(0.47)
        (1, 0, 3, 1, 10),  # q 30, k 20: distance 10
        (1, 2, 3, 4, 19),  # q 30, k 4: distance 26 -> 16 + floor(16 * log(1.625) / log(8)) = 16 + 3
        (1, 2, 2, 2, 31),  # q 150, k 0: distance 150 >= 128
    ],
)
def test_bias_entries_read_the_table(t5_bias, b, h, i, j, bucket):
    boxed, bias = t5_bias
    assert bias[b, h, i, j] == boxed.value[bucket, h]


def test_table_init_scale():
    # HF T5 initialises relative_attention_bias with N(0, d_model^-0.5).
    pe = T5RelativeBias(num_heads=64, d_model=100)
    positions = jnp.zeros((1, 1), jnp.int32)
    variables = pe.init(jax.random.key(0, impl="rbg"), positions, positions, method="bias")
    table = variables["params"]["rel_embedding"]
    assert abs(float(jnp.std(table.value)) / 0.1 - 1.0) < 0.1


def test_needs_d_model():
    positions = jnp.zeros((1, 1), jnp.int32)
    with pytest.raises(ValueError, match=r"d_model.*got None"):
        T5RelativeBias(num_heads=3).init(jax.random.key(0), positions, positions, method="bias")
