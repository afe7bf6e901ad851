"""Tests of lenggen/model/positional/rotary.py: GPT-J interleaved rotary on part of each head."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model.positional.rotary import RotaryPositionalEncoding, rotate_every_two


def _rotate(pe, x, positions):
    x, positions = jnp.asarray(x, jnp.float32), jnp.asarray(positions, jnp.int32)
    return pe.apply({}, x, positions, method="rotate")


def test_rotate_every_two():
    np.testing.assert_array_equal(rotate_every_two(jnp.array([1.0, 2.0, 3.0, 4.0])), [-2, 1, -4, 3])


def test_hand_worked_4_dims():
    # head_dim 4, all rotated: pair (x0, x1) turns by p * 1, pair (x2, x3) by p * 10000^(-2/4).
    pe = RotaryPositionalEncoding(num_heads=1, fraction=1.0)
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 4)  # [batch, length, heads, head_dim]
    p = 2
    a, b = p * 1.0, p * 0.01
    expected = [
        1 * math.cos(a) - 2 * math.sin(a),
        2 * math.cos(a) + 1 * math.sin(a),
        3 * math.cos(b) - 4 * math.sin(b),
        4 * math.cos(b) + 3 * math.sin(b),
    ]
    np.testing.assert_allclose(_rotate(pe, x, [[p]])[0, 0, 0], expected, atol=1e-6)


def test_only_the_leading_fraction_turns():
    pe = RotaryPositionalEncoding(num_heads=3, fraction=0.5)
    x = np.random.default_rng(0).standard_normal((2, 5, 3, 8)).astype(np.float32)
    positions = jnp.array([[0, 1, 2, 3, 4], [9, 3, 0, 7, 2]])
    out = _rotate(pe, x, positions)
    np.testing.assert_array_equal(out[..., 4:], x[..., 4:])
    # The first 4 dims: the 4-dim rotation (frequencies 1 and 10000^-0.5) by each position.
    full = RotaryPositionalEncoding(num_heads=3, fraction=1.0)
    np.testing.assert_allclose(out[..., :4], _rotate(full, x[..., :4], positions), atol=1e-6)
    # Position 0 is the identity.
    np.testing.assert_allclose(out[1, 2], x[1, 2], atol=1e-7)


def test_papers_rotary_dim():
    assert RotaryPositionalEncoding(num_heads=12).rotary_dim(64) == 16


def test_scores_depend_only_on_relative_position():
    pe = RotaryPositionalEncoding(num_heads=3, fraction=0.25, base=10000.0)
    q = np.random.default_rng(1).standard_normal((1, 1, 3, 16)).astype(np.float32)
    k = np.random.default_rng(2).standard_normal((1, 1, 3, 16)).astype(np.float32)

    def score(pq, pk):
        return jnp.einsum("bqhd,bkhd->h", _rotate(pe, q, [[pq]]), _rotate(pe, k, [[pk]]))

    np.testing.assert_allclose(score(7, 3), score(7 + 41, 3 + 41), atol=1e-5)
    assert np.abs(score(7, 3) - score(7, 4)).max() > 1e-3


def test_rotated_width_must_be_even():
    pe = RotaryPositionalEncoding(num_heads=3, fraction=0.375)
    message = r"int\(0.375 \* 8\) = 3 dims; expected an even number >= 2"
    with pytest.raises(ValueError, match=message):
        _rotate(pe, np.zeros((1, 1, 3, 8)), [[0]])


def test_check_widths_refuses_an_odd_or_empty_rotated_width():
    pe = RotaryPositionalEncoding(num_heads=3, fraction=0.25)
    pe.check_widths(d_model=48, head_dim=16)  # int(0.25 * 16) = 4: accepted
    for head_dim, dims in ((6, 1), (12, 3), (4, 1)):
        with pytest.raises(
            ValueError,
            match=rf"int\(0.25 \* {head_dim}\) = {dims} dims; "
            "expected an even number >= 2",
        ):
            pe.check_widths(d_model=48, head_dim=head_dim)
