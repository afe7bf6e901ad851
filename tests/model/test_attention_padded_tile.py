"""Tests of lenggen/model/attention/padded_tile.py: a bias tile evaluated on power-of-two padded
arrays (Triton's shapes) equals the hook on its logical entries, whatever the padding holds."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lenggen.model import positional
from lenggen.model.attention import padded_tile, tile_bias

H = 3  # padded to 16
Q_TILE = jnp.array([[3, 7, 4, 9, 0, 1, 2, 5, 6, 8, 10, 11, 12, 13, 14, 40]], jnp.int32)
K_TILE = jnp.array([[0, 5, 2, 9, 1, 3, 4, 6, 7, 8, 10, 11, 12, 13, 14, 15]], jnp.int32)


@pytest.mark.parametrize(
    ("size", "expected"), [(1, 1), (2, 16), (3, 16), (12, 16), (16, 16), (17, 32), (33, 64)]
)
def test_padded_dim(size, expected):
    assert padded_tile.padded_dim(size) == expected


def test_pad_const_zero_fills():
    padded = padded_tile.pad_const(jnp.ones((32, H)))
    assert padded.shape == (32, 16)
    np.testing.assert_array_equal(padded[:, :H], 1.0)
    np.testing.assert_array_equal(padded[:, H:], 0.0)
    assert padded_tile.pad_const(jnp.float32(2.0)).shape == ()


def _pe_hook(name: str):
    pe = positional.build(ml_collections.ConfigDict(dict(name=name)), num_heads=H, d_model=16)
    tokens = jnp.zeros((1, 1), jnp.int32)
    params = pe.init(jax.random.key(1), tokens, tokens, method=pe.bias)
    return lambda q, k: pe.apply(params, q, k, method=pe.bias)


def _contracted_over_heads(q_positions, k_positions):
    """exp of a [.., heads] array is 1 in the padding: contractions and reductions over heads
    must mask it."""
    distance = (q_positions[:, :, None] - k_positions[:, None, :]).astype(jnp.float32)
    per_head = jnp.exp(-0.1 * jnp.einsum("bqk,h->bqkh", distance, jnp.arange(1.0, H + 1)))
    summed = jnp.einsum("bqkh,h->bqk", per_head, jnp.ones(H))  # a matrix-vector product
    mixed = jnp.einsum("bqkh,hg->bgqk", per_head, jnp.eye(H) + 1.0)  # a 2-D dot
    # Integer: -(|i - j| + 1) * h < 0 for every head, so a zero of the padding would win the max.
    steps = jnp.abs(q_positions[:, :, None] - k_positions[:, None, :]) + 1
    nearest = jnp.max(-steps[..., None] * jnp.arange(1, H + 1), axis=-1)  # -> -(|i - j| + 1)
    return mixed + summed[:, None] + jnp.max(per_head, axis=-1)[:, None] + nearest[:, None]


def _padded_equals_hook(bias_fn) -> jax.Array:
    traced, consts = tile_bias.trace(bias_fn, 16, 16)
    jaxpr, consts = tile_bias.hoist(traced.jaxpr, consts)
    padded = [padded_tile.pad_const(c) for c in consts]
    (bias,) = jax.jit(lambda *a: padded_tile.evaluate(jaxpr, *a))(padded, Q_TILE, K_TILE)
    assert bias.shape == padded_tile.padded_shape(traced.jaxpr.outvars[0].aval.shape)
    expected = bias_fn(Q_TILE, K_TILE)
    logical = bias[tuple(slice(0, d) for d in expected.shape)]
    np.testing.assert_allclose(logical, expected, rtol=1e-6, atol=1e-6)
    return logical


@pytest.mark.parametrize("name", ["alibi", "t5", "fire"])
def test_pe_biases(name):
    hook = _pe_hook(name)
    logical = _padded_equals_hook(hook)
    assert logical.shape == (1, H, 16, 16)
    if name == "t5":  # the one-hot lookup is exact
        np.testing.assert_array_equal(logical, hook(Q_TILE, K_TILE))


def test_contractions_and_reductions_mask_the_padding():
    _padded_equals_hook(_contracted_over_heads)


def test_bias_shared_by_heads_stays_one_head():
    logical = _padded_equals_hook(
        lambda q, k: -jnp.abs(q[:, None, :, None] - k[:, None, None, :]).astype(jnp.float32)
    )
    assert logical.shape == (1, 1, 16, 16)


def _merging_reshape(q_positions, k_positions):
    distance = (q_positions[:, :, None] - k_positions[:, None, :]).astype(jnp.float32)
    per_head = distance[..., None] * jnp.arange(1.0, H + 1)  # -> [1, 16, 16, heads]
    flat = per_head.reshape(1, 16, 16 * H)  # heads merged into keys: the padding would move
    return flat[:, None, :, :16]


@pytest.mark.parametrize(
    ("bias_fn", "message"),
    [
        (
            lambda q, k: jnp.cumsum(q[:, None, :, None] - k[:, None, None, :], axis=-1),
            "primitive 'cumsum' has no padded",
        ),
        (_merging_reshape, r"reshape \(1, 16, 16, 3\) -> \(1, 16, 48\) merges padded axes"),
    ],
    ids=["cumsum", "merging reshape"],
)
def test_unsupported_equations_raise(bias_fn, message):
    traced, consts = tile_bias.trace(bias_fn, 16, 16)
    jaxpr, consts = tile_bias.hoist(traced.jaxpr, consts)
    with pytest.raises(padded_tile.UnsupportedTileOp, match=message):
        padded_tile.evaluate(jaxpr, [padded_tile.pad_const(c) for c in consts], Q_TILE, K_TILE)
    assert issubclass(padded_tile.UnsupportedTileOp, ValueError)
