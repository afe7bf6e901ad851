"""Tests of lenggen/model/attention/tile_bias.py: tracing a bias hook at tile shape, evaluating
it with outer products rewritten, finding gathers, and the whole-row hook built from a tile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model.attention import tile_bias

H = 3
SLOPES = np.array([0.5, 0.25, 0.125], np.float32)
TABLE = np.random.default_rng(7).standard_normal((9, H)).astype(np.float32)


def _linear(q_positions, k_positions):
    distance = (q_positions[:, :, None] - k_positions[:, None, :]).astype(jnp.float32)
    return -jnp.einsum("h,bqk->bhqk", jnp.asarray(SLOPES), distance)


@jax.jit  # a jit-wrapped hook: its jaxpr nests the computation one level down
def _mlp(q_positions, k_positions):
    """FIRE's shape: an elementwise feature, an outer product, a ReLU (custom_jvp), a matmul."""
    x = jnp.log1p(jnp.abs(q_positions[:, :, None] - k_positions[:, None, :]).astype(jnp.float32))
    hidden = jax.nn.relu(jnp.einsum("bqk,w->bqkw", x, jnp.linspace(-1.0, 1.0, 4)) + 0.1)
    return jnp.einsum("bqkw,wh->bhqk", hidden, jnp.arange(12.0).reshape(4, H))


def _table(q_positions, k_positions):
    distance = jnp.clip(q_positions[:, :, None] - k_positions[:, None, :], 0, TABLE.shape[0] - 1)
    return jnp.einsum("bqkh->bhqk", jnp.take(jnp.asarray(TABLE), distance, axis=0))


Q_TILE = jnp.array([[3, 7, 4, 9]], jnp.int32)  # [1, block_q = 4]
K_TILE = jnp.array([[0, 5, 2]], jnp.int32)  # [1, block_k = 3]


@pytest.mark.parametrize("bias_fn", [_linear, _mlp, _table], ids=["linear", "mlp", "table"])
def test_evaluate_equals_the_hook(bias_fn):
    jaxpr, consts = tile_bias.trace(bias_fn, 4, 3)
    (bias,) = tile_bias.evaluate(jaxpr.jaxpr, consts, Q_TILE, K_TILE)
    assert bias.shape == (1, H, 4, 3)
    np.testing.assert_allclose(bias, bias_fn(Q_TILE, K_TILE), rtol=1e-6)


def test_linear_by_hand():
    # bias[h, i, j] = -slope_h * (q_i - k_j): head 1, query 9, key 2 -> -0.25 * 7.
    jaxpr, consts = tile_bias.trace(_linear, 4, 3)
    (bias,) = tile_bias.evaluate(jaxpr.jaxpr, consts, Q_TILE, K_TILE)
    assert bias[0, 1, 3, 2] == -1.75
    # The slopes were closed over: they are a const, so a kernel gets them as an input.
    assert any(np.array_equal(c, SLOPES) for c in consts)


def test_outer_products_are_rewritten():
    jaxpr, consts = tile_bias.trace(_linear, 4, 3)
    outer = [
        eqn for eqn in jaxpr.jaxpr.eqns
        if eqn.primitive.name == "dot_general" and not any(eqn.params["dimension_numbers"][0])
    ]  # fmt: skip
    assert outer  # the einsum is an outer-product dot in the jaxpr...
    evaluated = jax.make_jaxpr(lambda *a: tile_bias.evaluate(jaxpr.jaxpr, consts, *a))
    names = {eqn.primitive.name for eqn in evaluated(Q_TILE, K_TILE).jaxpr.eqns}
    assert "dot_general" not in names and "mul" in names  # ...and a multiply once evaluated


@pytest.mark.parametrize(("bias_fn", "expected"), [(_linear, False), (_mlp, False), (_table, True)])
def test_has_gather(bias_fn, expected):
    jaxpr, _ = tile_bias.trace(bias_fn, 4, 3)
    assert tile_bias.has_gather(jaxpr.jaxpr) is expected
    nested, _ = tile_bias.trace(jax.jit(bias_fn), 4, 3)
    assert tile_bias.has_gather(nested.jaxpr) is expected


def test_no_bias():
    assert tile_bias.trace(lambda q, k: None, 4, 3) == (None, [])
    assert tile_bias.as_bias_fn(None, [], 4)(Q_TILE, K_TILE) is None


def test_bad_bias_shape():
    with pytest.raises(ValueError, match=r"bias_fn must return \[batch, heads, q_len, k_len\]"):
        tile_bias.trace(lambda q, k: q[:, :, None] - k[:, None, :], 4, 3)


def test_as_bias_fn_equals_the_hook_on_whole_rows():
    """7 queries in tiles of 4 (a partial last tile), 3 examples, one key block of 3."""
    jaxpr, consts = tile_bias.trace(_mlp, 4, 3)
    q_positions = jnp.asarray(np.random.default_rng(0).integers(0, 50, (3, 7)), jnp.int32)
    k_positions = jnp.asarray(np.random.default_rng(1).integers(0, 50, (3, 3)), jnp.int32)
    bias = tile_bias.as_bias_fn(jaxpr, consts, 4)(q_positions, k_positions)
    assert bias.shape == (3, H, 7, 3)
    np.testing.assert_allclose(bias, _mlp(q_positions, k_positions), rtol=1e-6)
