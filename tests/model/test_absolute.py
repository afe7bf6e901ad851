"""Tests of lenggen/model/positional/absolute.py: sinusoidal and learned APE."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model.positional.absolute import AbsolutePositionalEncoding, sinusoidal_embedding


def test_position_zero_is_zeros_then_ones():
    code = sinusoidal_embedding(jnp.array([0]), 6)
    np.testing.assert_array_equal(code, [[0, 0, 0, 1, 1, 1]])


def test_entries_by_hand():
    # d_model 6: frequencies 1, 10000^(-2/6), 10000^(-4/6); halves [sin..., cos...].
    w = [1.0, 10000 ** (-1 / 3), 10000 ** (-2 / 3)]
    p = 3
    expected = [math.sin(p * w[0]), math.sin(p * w[1]), math.sin(p * w[2])] + [
        math.cos(p * w[0]),
        math.cos(p * w[1]),
        math.cos(p * w[2]),
    ]
    np.testing.assert_allclose(sinusoidal_embedding(jnp.array(p), 6), expected, atol=1e-6)
    # d_model 4, position 1: [sin 1, sin 0.01, cos 1, cos 0.01].
    expected = [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)]
    np.testing.assert_allclose(sinusoidal_embedding(jnp.array(1), 4), expected, atol=1e-6)


def test_sinusoidal_is_computed_beyond_16384():
    position = 20000
    code = sinusoidal_embedding(jnp.array(position), 4)
    expected = [
        math.sin(position),
        math.sin(position * 0.01),
        math.cos(position),
        math.cos(position * 0.01),
    ]
    np.testing.assert_allclose(code, expected, atol=2e-3)  # float32 angle of 2e4 rad


def test_odd_width_rejected():
    with pytest.raises(ValueError, match="even d_model, got 5"):
        sinusoidal_embedding(jnp.array([0]), 5)


def test_embed_adds_the_code_of_each_explicit_position():
    pe = AbsolutePositionalEncoding(num_heads=3)
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)
    positions = jnp.array([[3, 0, 7], [0, 0, 1]], jnp.int32)  # not the array index
    assert pe.init(jax.random.key(1), x, positions, method="embed") == {}
    out = pe.apply({}, x, positions, method="embed")
    np.testing.assert_allclose(out, x + sinusoidal_embedding(positions, 8), atol=1e-6)
    np.testing.assert_allclose(out[1, 0], x[1, 0] + jnp.array([0, 0, 0, 0, 1, 1, 1, 1]), atol=1e-6)


def test_learned_table_is_added_and_partitioned():
    pe = AbsolutePositionalEncoding(num_heads=3, kind="learned", max_length=6)
    x = np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32)
    positions = jnp.array([[0, 1, 2, 3], [5, 0, 2, 2]], jnp.int32)
    variables = pe.init(jax.random.key(1, impl="rbg"), x, positions, method="embed")
    boxed = variables["params"]["embedding"]
    assert boxed.names == ("positions", "embed")
    table = boxed.value
    assert table.shape == (6, 8)
    out = pe.apply(variables, x, positions, method="embed")
    np.testing.assert_allclose(out, x + table[positions], atol=1e-6)
    assert pe.max_position() == 5


def test_learned_rejects_inputs_longer_than_its_table():
    pe = AbsolutePositionalEncoding(num_heads=3, kind="learned", max_length=4)
    x = jnp.zeros((1, 5, 8))
    positions = jnp.arange(5)[None]
    message = "table of max_length=4 positions, got an input of length 5"
    with pytest.raises(ValueError, match=message):
        pe.init(jax.random.key(0), x, positions, method="embed")


def test_learned_position_past_the_table_is_nan_not_clamped():
    # In KV-cache decoding each call is short, so the length check cannot see the position.
    pe = AbsolutePositionalEncoding(num_heads=3, kind="learned", max_length=4)
    x = jnp.zeros((1, 2, 8))
    variables = pe.init(jax.random.key(0, impl="rbg"), x, jnp.array([[0, 1]]), method="embed")
    out = pe.apply(variables, x, jnp.array([[3, 4]]), method="embed")
    assert np.isfinite(out[0, 0]).all()
    assert np.isnan(out[0, 1]).all()


def test_sinusoidal_codes_differ_per_position():
    # Why APE is not shift invariant: the code of position p is not the code of p + 37.
    codes = sinusoidal_embedding(jnp.arange(5), 16)
    shifted = sinusoidal_embedding(jnp.arange(5) + 37, 16)
    assert np.abs(codes - shifted).max(axis=-1).min() > 0.1


def test_check_widths_refuses_an_odd_width_for_the_sinusoidal_code_only():
    AbsolutePositionalEncoding(num_heads=2).check_widths(d_model=6, head_dim=3)
    with pytest.raises(ValueError, match="sinusoidal APE needs an even d_model, got 7"):
        AbsolutePositionalEncoding(num_heads=2).check_widths(d_model=7, head_dim=7)
    AbsolutePositionalEncoding(num_heads=2, kind="learned").check_widths(d_model=7, head_dim=7)
