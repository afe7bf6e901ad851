"""The contract every attention kernel shares with lenggen/model/attention/reference.py.

Each kernel is compared with the reference on the same inputs: positions in no index order,
invalid keys, a query with no visible key, KV-cache decoding (q_len 1 against a cache with
empty slots) and lengths that leave a partial last block. Biases: none, pure arithmetic of
positions (ALiBi-like), a table lookup (T5-like) and a bias closing over a traced parameter;
each a dense hook (`bias_fn`, the table read by a gather) and a tile hook (`TileBias`, the
table read as a one-hot), which only pallas_flash reads.
Tolerances: float32 1e-5 (only the order of the softmax sums differs); bfloat16 inputs 2e-2
against the same kernel in float32 (bfloat16 has 8 mantissa bits: ~4e-3 relative per rounding).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model.attention import blockwise, dot_product, pallas_flash, reference
from lenggen.model.positional.base import TileBias

B, Q, K, H, D = 2, 5, 7, 3, 8  # odd unequal sizes: a transposed axis fails
F32_TOLERANCE, BF16_TOLERANCE = 1e-5, 2e-2

# Blocks smaller than the lengths, so every kernel runs several blocks and a partial last one.
KERNELS = {
    "blockwise": functools.partial(blockwise.attend, block_q=2, block_k=3),
    "blockwise_key_blocks": functools.partial(blockwise.attend, block_k=3),
    "blockwise_one_block": blockwise.attend,
    "dot_product": dot_product.attend,
    "pallas_flash": functools.partial(pallas_flash.attend, block_q=2, block_k=3),
    "pallas_flash_one_tile": pallas_flash.attend,
}
TABLE = np.random.default_rng(7).standard_normal((9, H)).astype(np.float32)


def _no_bias(q_positions, k_positions):
    return None


def _linear_bias(q_positions, k_positions):
    """ALiBi-like: -slope_h * (i - j), different per head."""
    distance = (q_positions[:, None, :, None] - k_positions[:, None, None, :]).astype(jnp.float32)
    return -0.3 * jnp.arange(1, H + 1, dtype=jnp.float32)[None, :, None, None] * distance


def _table_bias(q_positions, k_positions, table=TABLE):
    """T5-like: a table row per clipped distance (a gather)."""
    distance = jnp.clip(q_positions[:, :, None] - k_positions[:, None, :], 0, table.shape[0] - 1)
    return jnp.einsum("bqkh->bhqk", jnp.take(jnp.asarray(table), distance, axis=0))


def _linear_tile(params, q_positions, k_positions):
    """`_linear_bias` for one example's tile -> [heads, tq, tk]."""
    (slopes,) = params
    distance = (q_positions[:, None] - k_positions[None, :]).astype(jnp.float32)
    return -0.3 * slopes[:, None, None] * distance[None]


def _table_tile(params, q_positions, k_positions):
    """`_table_bias` for one example's tile, the table read as a one-hot -> [heads, tq, tk]."""
    (table,) = params
    rows = TABLE.shape[0]  # the logical rows: the clip ignores zero-padded ones
    distance = jnp.clip(q_positions[:, None] - k_positions[None, :], 0, rows - 1)
    one_hot = (distance[:, :, None] == jnp.arange(table.shape[0])).astype(table.dtype)
    return jnp.einsum("qkn,nh->hqk", one_hot, table, precision=jax.lax.Precision.HIGHEST)


# name -> (dense bias_fn, tile hook)
BIASES = {
    "none": (_no_bias, None),
    "linear": (_linear_bias, TileBias(_linear_tile, (jnp.arange(1, H + 1, dtype=jnp.float32),))),
    "table": (_table_bias, TileBias(_table_tile, (jnp.asarray(TABLE),))),
}


def _normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def inputs():
    q, k, v = _normal(0, (B, Q, H, D)), _normal(1, (B, K, H, D)), _normal(2, (B, K, H, D))
    q_positions = np.array([[4, 0, 6, 2, 5], [10, 3, 7, 12, 8]], np.int32)
    k_positions = np.array([[6, 1, 3, 0, 5, 2, 4], [3, 9, 12, 7, 5, 10, 1]], np.int32)
    # Example 0: key 3 (position 0) is a pad, so query 1 (position 0) sees no key at all.
    k_valid = np.array([[1, 1, 0, 0, 1, 1, 0], [1, 0, 1, 1, 1, 1, 1]], bool)
    return q, k, v, q_positions, k_positions, k_valid


@functools.cache
def _jitted(kernel_name: str, bias_name: str):
    bias_fn, tile = BIASES[bias_name]
    return jax.jit(functools.partial(KERNELS[kernel_name], bias_fn=bias_fn, tile_bias=tile))


@functools.cache
def _jitted_reference(bias_name: str):
    return jax.jit(functools.partial(reference.attend, bias_fn=BIASES[bias_name][0]))


def _reference(bias_name: str, *args):
    return _jitted_reference(bias_name)(*args)


@pytest.mark.parametrize("bias_name", BIASES)
@pytest.mark.parametrize("kernel_name", KERNELS)
def test_matches_reference(inputs, kernel_name, bias_name):
    out = _jitted(kernel_name, bias_name)(*inputs)
    assert out.shape == (B, Q, H, D) and out.dtype == jnp.float32
    expected = _reference(bias_name, *inputs)
    np.testing.assert_allclose(out, expected, atol=F32_TOLERANCE, rtol=0)
    # Query 1 of example 0 sees no key: the reference's finite uniform row over the 7 keys.
    np.testing.assert_allclose(out[0, 1], inputs[2][0].mean(axis=0), atol=F32_TOLERANCE)


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_no_sqrt_d_scaling_hand_worked(kernel_name):
    """One query, keys [2, 0] and [0, 0]: logits exactly q.k = 2 and 0 (T5 convention), so the
    weights are e^2 / (e^2 + 1) and 1 / (e^2 + 1) on the one-hot values."""
    q = jnp.array([1.0, 0.0]).reshape(1, 1, 1, 2)
    k = jnp.array([[2.0, 0.0], [0.0, 0.0]]).reshape(1, 2, 1, 2)
    v = jnp.array([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)
    positions = jnp.array([[0, 0]], jnp.int32)
    out = KERNELS[kernel_name](
        q, k, v, positions[:, :1], positions, jnp.ones((1, 2), bool), _no_bias
    )
    e2 = np.exp(2.0)
    np.testing.assert_allclose(out[0, 0, 0], [e2 / (e2 + 1), 1 / (e2 + 1)], atol=1e-6)


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_kv_cache_step(inputs, kernel_name):
    """q_len 1 against a cache of 7 slots, the last 2 empty (invalid), as in decoding."""
    q, k, v, _, _, _ = inputs
    k_positions = np.broadcast_to(np.arange(K, dtype=np.int32), (B, K))
    k_valid = np.array([[1, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0, 0]], bool)  # left pads in 1
    args = (q[:, :1], k, v, np.array([[4], [2]], np.int32), k_positions, k_valid)
    out = _jitted(kernel_name, "table")(*args)
    assert out.shape == (B, 1, H, D)
    np.testing.assert_allclose(out, _reference("table", *args), atol=F32_TOLERANCE, rtol=0)


@pytest.mark.parametrize("kernel_name", ["blockwise", "dot_product", "pallas_flash"])
def test_bfloat16(inputs, kernel_name):
    q, k, v, *rest = inputs
    out = _jitted(kernel_name, "linear")(*(a.astype(jnp.bfloat16) for a in (q, k, v)), *rest)
    assert out.dtype == jnp.bfloat16
    exact = _jitted(kernel_name, "linear")(*inputs)
    np.testing.assert_allclose(out.astype(jnp.float32), exact, atol=BF16_TOLERANCE, rtol=0)


def _loss(kernel, inputs, table, q, k, v):
    """A scalar of the attention output, its bias table a (traced) parameter."""
    bias_fn = functools.partial(_table_bias, table=table)
    out = kernel(q, k, v, *inputs[3:], bias_fn, tile_bias=TileBias(_table_tile, (table,)))
    return (out * jnp.cos(jnp.arange(D, dtype=jnp.float32))).sum()


def _value_and_grads(kernel, inputs):
    grad = jax.value_and_grad(_loss, argnums=(2, 3, 4, 5))
    return jax.jit(functools.partial(grad, kernel, inputs))(jnp.asarray(TABLE), *inputs[:3])


@pytest.fixture(scope="module")
def reference_grads(inputs):
    return _value_and_grads(reference.attend, inputs)


# pallas_flash's gradients (its custom VJP) are also checked in
# test_attention_kernels_decoder.py, through real PE parameters.
@pytest.mark.parametrize("kernel_name", ["blockwise", "dot_product", "pallas_flash"])
def test_gradients_match_reference(inputs, reference_grads, kernel_name):
    """Gradients w.r.t. a bias parameter closed over by bias_fn (a PE's table reaches the
    kernel as a tracer: T5, FIRE) and q, k, v. Tolerance 1e-4: float32 sums in another order."""
    value, grads = _value_and_grads(KERNELS[kernel_name], inputs)
    ref_value, ref_grads = reference_grads
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for got, expected in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert np.abs(ref_grads[0]).max() > 1e-2  # the table matters


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_dropout_rate_validated(inputs, kernel_name):
    with pytest.raises(ValueError, match=r"dropout_rate must be in \[0, 1\), got 1.5"):
        KERNELS[kernel_name](*inputs, _no_bias, dropout_rate=1.5, dropout_rng=jax.random.key(0))
