"""Tests of lenggen/model/attention/reference.py and the kernel registry."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model import attention
from lenggen.model.attention import reference

B, Q, K, H, D = 2, 5, 7, 3, 8  # odd unequal sizes: a transposed axis fails

# Jitted once per bias_fn: one compiled program instead of many eager ops.
attend = jax.jit(reference.attend, static_argnums=6, static_argnames="dropout_rate")


def _toy_bias(q_positions, k_positions):
    """An arbitrary position-dependent bias, different per head: `[batch, heads, q, k]`."""
    distance = (q_positions[:, None, :, None] - k_positions[:, None, None, :]).astype(jnp.float32)
    return -0.3 * jnp.arange(1, H + 1, dtype=jnp.float32)[None, :, None, None] * distance


def _naive(q, k, v, q_positions, k_positions, k_valid, bias_fn):
    """Loop-per-entry attention in float64 numpy, for comparison."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    bias = bias_fn(jnp.asarray(q_positions), jnp.asarray(k_positions))
    bias = np.zeros((B, H, Q, K)) if bias is None else np.asarray(bias, np.float64)
    out = np.zeros((B, Q, H, D))
    for b in range(B):
        for h in range(H):
            for i in range(Q):
                visible = [
                    j for j in range(K) if k_valid[b, j] and k_positions[b, j] <= q_positions[b, i]
                ]
                logits = np.array([q[b, i, h] @ k[b, j, h] + bias[b, h, i, j] for j in visible])
                weights = np.exp(logits - logits.max())
                weights /= weights.sum()
                out[b, i, h] = sum(w * v[b, j, h] for w, j in zip(weights, visible, strict=True))
    return out


def _normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def inputs():
    q, k, v = _normal(0, (B, Q, H, D)), _normal(1, (B, K, H, D)), _normal(2, (B, K, H, D))
    # Positions in no particular index order (randomized / cached layouts); every query sees a key.
    q_positions = np.array([[4, 0, 6, 2, 5], [10, 3, 7, 12, 8]], np.int32)
    k_positions = np.array([[6, 0, 3, 1, 5, 2, 4], [3, 9, 12, 7, 5, 10, 1]], np.int32)
    k_valid = np.array([[1, 1, 0, 1, 1, 1, 0], [1, 0, 1, 1, 1, 1, 1]], bool)
    return q, k, v, q_positions, k_positions, k_valid


@pytest.mark.parametrize("bias_fn", [lambda q, k: None, _toy_bias], ids=["no_bias", "bias"])
def test_matches_naive_loops(inputs, bias_fn):
    out = attend(*inputs, bias_fn)
    assert out.shape == (B, Q, H, D) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, _naive(*inputs, bias_fn), atol=1e-5)


def test_no_sqrt_d_scaling():
    # One query, keys [2, 0] and [0, 0]: logits are exactly q.k = 2 and 0 (T5 convention).
    q = jnp.array([1.0, 0.0]).reshape(1, 1, 1, 2)
    k = jnp.array([[2.0, 0.0], [0.0, 0.0]]).reshape(1, 2, 1, 2)
    v = jnp.array([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)
    positions = jnp.array([[0, 0]])
    out = attend(q, k, v, positions[:, :1], positions, jnp.ones((1, 2), bool), lambda q, k: None)
    e2 = math.exp(2.0)
    np.testing.assert_allclose(out[0, 0, 0], [e2 / (e2 + 1), 1 / (e2 + 1)], atol=1e-6)


def test_causal_by_position_not_index(inputs):
    q, k, v, q_positions, k_positions, k_valid = inputs
    weights = reference.attention_weights(q, k, q_positions, k_positions, k_valid, _toy_bias)
    assert weights.shape == (B, H, Q, K)
    # Query 1 of example 0 has position 0: only key 1 (position 0, valid) is visible.
    np.testing.assert_allclose(weights[0, :, 1], np.eye(K)[[1, 1, 1]], atol=1e-7)
    # Query 0 (position 4) of example 0, keys at positions [6, 0, 3, 1, 5, 2, 4] with indices
    # 2 and 6 invalid: only indices 1, 3, 5 (positions 0, 1, 2) are visible.
    visible = np.isin(np.arange(K), [1, 3, 5])
    assert (weights[0, :, 0][:, ~visible] == 0).all()
    assert (weights[0, :, 0][:, visible] > 0).all()
    np.testing.assert_allclose(weights.sum(-1), np.ones((B, H, Q)), atol=1e-6)


def test_query_without_a_visible_key_stays_finite():
    q, k, v = _normal(3, (1, 2, H, D)), _normal(4, (1, 3, H, D)), _normal(5, (1, 3, H, D))
    k_valid = jnp.array([[False, True, True]])
    # Query 0 at position 0 sees nothing (key 0 is a pad): a uniform, finite row.
    out = attend(q, k, v, jnp.array([[0, 2]]), jnp.array([[0, 1, 2]]), k_valid, _toy_bias)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0, 0], v[0].mean(axis=0), atol=1e-6)


def test_bias_is_added_to_the_logits(inputs):
    q, k, v, q_positions, k_positions, k_valid = inputs
    constant_bias = lambda a, b: jnp.full((B, H, Q, K), 3.0)  # noqa: E731
    constant = attend(q, k, v, q_positions, k_positions, k_valid, constant_bias)
    np.testing.assert_allclose(constant, attend(*inputs, lambda a, b: None), atol=1e-6)
    assert np.abs(attend(*inputs, _toy_bias) - constant).max() > 1e-2


def test_bfloat16_inputs(inputs):
    q, k, v, *rest = inputs
    q16, k16, v16 = (a.astype(jnp.bfloat16) for a in (q, k, v))
    out = attend(q16, k16, v16, *rest, _toy_bias)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), attend(*inputs, _toy_bias), atol=5e-2)


def test_dropout_is_unbiased_and_off_without_rng(inputs):
    exact = attend(*inputs, _toy_bias)
    no_rng = attend(*inputs, _toy_bias, dropout_rate=0.5, dropout_rng=None)
    np.testing.assert_array_equal(no_rng, exact)

    @jax.jit
    def samples():  # rbg keys: threefry's compile costs seconds on a small CPU
        def drop(key):
            return reference.attend(*inputs, _toy_bias, dropout_rate=0.5, dropout_rng=key)

        return jax.vmap(drop)(jax.random.split(jax.random.key(4, impl="rbg"), 1000))

    outs = samples()
    assert np.abs(outs[0] - exact).max() > 1e-2
    assert np.abs(outs[0] - outs[1]).max() > 1e-2  # each key draws its own mask
    np.testing.assert_allclose(outs.mean(axis=0), exact, atol=0.15)  # ~5 sigma of the mean


def test_dropout_rate_validated(inputs):
    with pytest.raises(ValueError, match=r"dropout_rate must be in \[0, 1\), got 1.0"):
        reference.attend(*inputs, _toy_bias, dropout_rate=1.0, dropout_rng=jax.random.key(0))


def test_registry():
    assert attention.names() == ("reference", "blockwise", "dot_product", "pallas_flash", "auto")
    assert attention.get("reference") is reference.attend
    message = r"unknown attention kernel 'flash'; valid names: \('reference', 'blockwise', "
    with pytest.raises(ValueError, match=message):
        attention.get("flash")
