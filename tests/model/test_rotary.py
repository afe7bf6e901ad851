"""Tests of lenggen/model/positional/rotary.py: GPT-J interleaved rotary on part of each head."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model.positional.rotary import (
    RotaryPositionalEncoding,
    results_name,
    rotary_frequencies,
    rotate_every_two,
    yarn_query_key_scale,
)


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


def _assert_scores_depend_only_on_relative_position(pe, atol):
    """Each head's q . k score is unchanged when both positions move by 41, and changes when
    only one moves."""
    q = np.random.default_rng(1).standard_normal((1, 1, 3, 16)).astype(np.float32)
    k = np.random.default_rng(2).standard_normal((1, 1, 3, 16)).astype(np.float32)

    def score(pq, pk):
        return jnp.einsum("bqhd,bkhd->h", _rotate(pe, q, [[pq]]), _rotate(pe, k, [[pk]]))

    np.testing.assert_allclose(score(7, 3), score(7 + 41, 3 + 41), atol=atol)
    assert np.abs(score(7, 3) - score(7, 4)).max() > 1e-3


def test_scores_depend_only_on_relative_position():
    pe = RotaryPositionalEncoding(num_heads=3, fraction=0.25, base=10000.0)
    _assert_scores_depend_only_on_relative_position(pe, atol=1e-5)


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


# --- Context extension (rotary_frequencies; docs/methods/rotary_scaling.md). ---


def _frequencies(dim, **options):
    return np.asarray(rotary_frequencies(dim, 10000.0, **options), np.float64)


def test_none_is_the_papers_rotary_bit_for_bit():
    """scaling='none' computes the angles exactly as before the scalings existed."""
    pe = RotaryPositionalEncoding(num_heads=3, fraction=0.5)
    x = np.random.default_rng(3).standard_normal((2, 5, 3, 16)).astype(np.float32)
    positions = np.array([[0, 1, 2, 3, 4], [900, 3, 0, 7, 20000]], np.int32)
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, 8, 2, dtype=jnp.float32) / 8))  # the old code
    angles = jnp.repeat(jnp.asarray(positions, jnp.float32)[..., None] * inv_freq, 2, -1)
    x_rot = jnp.asarray(x[..., :8])
    expected = x_rot * jnp.cos(angles[:, :, None]) + rotate_every_two(x_rot) * jnp.sin(
        angles[:, :, None]
    )
    out = _rotate(pe, x, positions)
    np.testing.assert_array_equal(out[..., :8], expected)
    np.testing.assert_array_equal(out[..., 8:], x[..., 8:])


def test_linear_divides_the_frequencies_by_s():
    np.testing.assert_allclose(_frequencies(4), [1.0, 0.01], rtol=1e-6)
    np.testing.assert_allclose(
        _frequencies(4, scaling="linear", factor=4.0), [0.25, 0.0025], rtol=1e-6
    )


def test_linear_is_position_interpolation():
    """Position p under linear scaling s turns as position p / s unscaled."""
    x = np.random.default_rng(4).standard_normal((1, 3, 3, 8)).astype(np.float32)
    scaled = RotaryPositionalEncoding(
        num_heads=3, fraction=0.5, scaling="linear", scaling_factor=4.0
    )
    plain = RotaryPositionalEncoding(num_heads=3, fraction=0.5)
    np.testing.assert_allclose(
        _rotate(scaled, x, [[8, 20, 400]]), _rotate(plain, x, [[2, 5, 100]]), atol=1e-5
    )


def test_ntk_raises_the_base_by_s_to_the_d_over_d_minus_2():
    # d = 4, s = 4: base' = 10000 * 4^(4/2) = 160000, frequencies [1, 160000^-1/2 = 1/400]:
    # the fastest pair unchanged, the slowest divided by exactly s (0.01 / 4).
    np.testing.assert_allclose(_frequencies(4, scaling="ntk", factor=4.0), [1.0, 0.0025], rtol=1e-6)
    # d = 8, s = 2: base' = 10000 * 2^(8/6); theta_k = base'^(-k/4): 10000^(-k/4) 2^(-k/3).
    expected = [1.0, 0.1 * 2 ** (-1 / 3), 0.01 * 2 ** (-2 / 3), 0.001 / 2]
    np.testing.assert_allclose(_frequencies(8, scaling="ntk", factor=2.0), expected, rtol=1e-5)


def test_yarn_ramps_between_extrapolation_and_interpolation_by_wavelength():
    # d = 8: theta = [1, 0.1, 0.01, 0.001]; L = 1024, s = 4, beta_fast 32, beta_slow 1.
    # r_k = L theta_k / (2 pi) = [162.97, 16.297, 1.6297, 0.16297]: pair 0 turns > 32 times
    # (kept), pair 3 < once (theta / 4), pairs 1 and 2 in between with gamma = (r - 1) / 31.
    r1, r2 = 102.4 / (2 * math.pi), 10.24 / (2 * math.pi)
    g1, g2 = (r1 - 1) / 31, (r2 - 1) / 31
    expected = [
        1.0,
        (1 - g1) * 0.1 / 4 + g1 * 0.1,
        (1 - g2) * 0.01 / 4 + g2 * 0.01,
        0.001 / 4,
    ]
    got = _frequencies(8, scaling="yarn", factor=4.0, original_max_position=1024)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # beta_fast 8, beta_slow 2: pair 1 (r = 16.3 > 8) is kept, pair 2 (r = 1.63 < 2) joins the
    # interpolated ones.
    got = _frequencies(
        8, scaling="yarn", factor=4.0, original_max_position=1024, beta_fast=8.0, beta_slow=2.0
    )
    np.testing.assert_allclose(got, [1.0, 0.1, 0.01 / 4, 0.001 / 4], rtol=1e-5)


def test_yarn_temperature_scales_every_logit_by_1_over_t():
    """sqrt(1/t) = 0.1 ln(s) + 1 on q and on k: at position 0 (no turn) q.k over all head dims,
    the unrotated ones included, is multiplied by (0.1 ln 4 + 1)^2 = 1.29647."""
    pe = RotaryPositionalEncoding(
        num_heads=1, scaling="yarn", scaling_factor=4.0, original_max_position=64
    )
    assert yarn_query_key_scale(4.0) == pytest.approx(1.1386294361)
    q = np.random.default_rng(5).standard_normal((1, 1, 1, 16)).astype(np.float32)
    k = np.random.default_rng(6).standard_normal((1, 1, 1, 16)).astype(np.float32)
    scaled = _rotate(pe, q, [[0]]) * _rotate(pe, k, [[0]])
    np.testing.assert_allclose(scaled.sum(), 1.1386294361**2 * float((q * k).sum()), rtol=1e-5)
    np.testing.assert_allclose(_rotate(pe, q, [[0]]), 1.1386294361 * q, rtol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        dict(scaling="linear", scaling_factor=2.0),
        dict(scaling="ntk", scaling_factor=2.0),
        dict(scaling="yarn", scaling_factor=2.0, original_max_position=16),
    ],
)
def test_scaled_scores_still_depend_only_on_relative_position(options):
    pe = RotaryPositionalEncoding(num_heads=3, fraction=0.5, **options)
    _assert_scores_depend_only_on_relative_position(pe, atol=1e-4)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(scaling="dynamic"), r"rotary scaling must be one of \('none', 'linear', 'ntk', "),
        (dict(scaling="linear", scaling_factor=0.5), "scaling_factor must be a finite number >= 1"),
        (dict(scaling="linear", scaling_factor=float("inf")), "finite number >= 1, got inf"),
        (dict(scaling_factor=2.0), r"scaling_factor=2.0 has no effect with scaling='none'"),
        (dict(scaling="yarn", scaling_factor=2.0), "yarn' needs original_max_position > 0"),
        (
            dict(scaling="yarn", scaling_factor=2.0, original_max_position=8, beta_slow=40.0),
            "0 < beta_slow < beta_fast, got beta_slow=40.0, beta_fast=32.0",
        ),
    ],
)
def test_bad_scaling_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        RotaryPositionalEncoding(num_heads=3, **options)


def test_ntk_needs_four_rotated_dims():
    pe = RotaryPositionalEncoding(num_heads=3, scaling="ntk", scaling_factor=2.0)
    pe.check_widths(d_model=48, head_dim=16)  # 4 rotated dims
    with pytest.raises(ValueError, match=r"int\(0.25 \* 8\) = 2; expected d >= 4"):
        pe.check_widths(d_model=24, head_dim=8)


def test_results_name():
    assert results_name({"name": "rotary", "rotary": {"scaling": "yarn"}}) == "rotary+yarn"
    assert results_name({"name": "rotary", "rotary": {"scaling": "none"}}) == "rotary"
    assert results_name({"name": "rotary", "rotary": {"base": 10.0}}) == "rotary"  # older config
    assert results_name({"name": "alibi", "rotary": {"scaling": "ntk"}}) == "alibi"
