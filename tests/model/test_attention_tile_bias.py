"""Tests of lenggen/model/attention/tile_bias.py: tracing a bias hook at tile shape, hoisting
the work on its consts, evaluating it with outer products and table lookups rewritten, finding
gathers the rewrite leaves, and the whole-row hook built from a tile."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lenggen.model import positional
from lenggen.model.attention import tile_bias

H = 3
SLOPES = np.array([0.5, 0.25, 0.125], np.float32)
TABLE = np.random.default_rng(7).standard_normal((9, H)).astype(np.float32)
BIG_TABLE = np.random.default_rng(8).standard_normal((tile_bias.ONE_HOT_MAX_ROWS + 1, H))


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


def _lookup(mode, table=TABLE):
    """Unclipped distances index the table: out-of-range rows for q - k >= len or < 0."""

    def bias_fn(q_positions, k_positions):
        distance = q_positions[:, :, None] - k_positions[:, None, :]
        if mode == "index":  # numpy-style indexing: negatives wrap, then PROMISE_IN_BOUNDS
            values = jnp.asarray(table, jnp.float32)[distance]
        else:
            values = jnp.take(jnp.asarray(table, jnp.float32), distance, axis=0, mode=mode)
        return jnp.einsum("bqkh->bhqk", values)

    return bias_fn


Q_TILE = jnp.array([[3, 7, 4, 9]], jnp.int32)  # [1, block_q = 4]
K_TILE = jnp.array([[0, 5, 2]], jnp.int32)  # [1, block_k = 3]


def _evaluate(bias_fn, q_tile=Q_TILE, k_tile=K_TILE):
    jaxpr, consts = tile_bias.trace(bias_fn, q_tile.shape[1], k_tile.shape[1])
    return tile_bias.evaluate(jaxpr.jaxpr, consts, q_tile, k_tile)[0]


@pytest.mark.parametrize("bias_fn", [_linear, _mlp, _table], ids=["linear", "mlp", "table"])
def test_evaluate_equals_the_hook(bias_fn):
    bias = _evaluate(bias_fn)
    assert bias.shape == (1, H, 4, 3)
    np.testing.assert_allclose(bias, bias_fn(Q_TILE, K_TILE), rtol=1e-6)


def test_linear_by_hand():
    # bias[h, i, j] = -slope_h * (q_i - k_j): head 1, query 9, key 2 -> -0.25 * 7.
    assert _evaluate(_linear)[0, 1, 3, 2] == -1.75
    # The slopes were closed over: they are a const, so a kernel gets them as an input.
    assert any(np.array_equal(c, SLOPES) for c in tile_bias.trace(_linear, 4, 3)[1])


def _primitives(bias_fn, q_tile=Q_TILE, k_tile=K_TILE) -> set[str]:
    """The primitives `evaluate` emits (nested jaxprs included)."""
    names = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for sub in tile_bias.sub_jaxprs(eqn):
                walk(getattr(sub, "jaxpr", sub))

    walk(jax.make_jaxpr(lambda q, k: _evaluate(bias_fn, q, k))(q_tile, k_tile).jaxpr)
    return names


def test_outer_products_are_rewritten():
    jaxpr, _ = tile_bias.trace(_linear, 4, 3)
    outer = [
        eqn for eqn in jaxpr.jaxpr.eqns
        if eqn.primitive.name == "dot_general" and not any(eqn.params["dimension_numbers"][0])
    ]  # fmt: skip
    assert outer  # the einsum is an outer-product dot in the jaxpr...
    names = _primitives(_linear)
    assert "dot_general" not in names and "mul" in names  # ...and a multiply once evaluated


def test_table_lookup_is_rewritten_without_a_gather():
    assert "gather" in {eqn.primitive.name for eqn in jax.make_jaxpr(_table)(Q_TILE, K_TILE).eqns
                        for eqn in [eqn] + list(_nested(eqn))}  # fmt: skip
    names = _primitives(_table)
    assert "gather" not in names and "dot_general" in names


def _nested(eqn):
    for sub in tile_bias.sub_jaxprs(eqn):
        yield from getattr(sub, "jaxpr", sub).eqns


def _t5_hook():
    pe = positional.build(ml_collections.ConfigDict(dict(name="t5")), num_heads=H, d_model=16)
    tokens = jnp.zeros((1, 1), jnp.int32)
    params = pe.init(jax.random.key(0), tokens, tokens, method=pe.bias)
    return lambda q, k: pe.apply(params, q, k, method=pe.bias)


def test_t5_one_hot_bias_is_exact_in_every_bucket():
    """The real T5 hook (32 buckets, max distance 128): the rewritten tile equals the gather
    bit for bit, on a tile whose distances reach every bucket."""
    q_tile = (15 + 16 * jnp.arange(16, dtype=jnp.int32))[None]  # [1, 16]: 15, 31, ..., 255
    k_tile = jnp.arange(16, dtype=jnp.int32)[None]  # [1, 16]: distances 0 .. 255, each once
    buckets = positional.t5_relative_bucket(k_tile[:, None, :] - q_tile[:, :, None])
    assert set(np.unique(buckets)) == set(range(32))
    hook = _t5_hook()
    np.testing.assert_array_equal(_evaluate(hook, q_tile, k_tile), hook(q_tile, k_tile))
    assert "gather" not in _primitives(hook, q_tile, k_tile)


@pytest.mark.parametrize("mode", ["fill", "clip", "index"])
def test_lookup_modes_out_of_range(mode):
    """Out-of-range rows as the gather has them: NaN (fill), the nearest row (clip), wrapped
    negatives then clamped (index)."""
    bias_fn = _lookup(mode)
    q_tile = jnp.array([[0, 4, 12, 30]], jnp.int32)  # distances -5 .. 30 against K_TILE
    expected = bias_fn(q_tile, K_TILE)
    assert (mode == "fill") == bool(np.isnan(expected).any())
    np.testing.assert_array_equal(_evaluate(bias_fn, q_tile), expected)


def test_keeps_gather():
    for bias_fn in (_linear, _mlp, _table, jax.jit(_table), _lookup("clip")):
        assert not tile_bias.keeps_gather(tile_bias.trace(bias_fn, 4, 3)[0].jaxpr)
    # A table over ONE_HOT_MAX_ROWS rows, nested in a jit, keeps its gather; so does a gather
    # of single entries (not whole rows).
    big = jax.jit(_lookup("clip", BIG_TABLE))
    assert tile_bias.keeps_gather(tile_bias.trace(big, 4, 3)[0].jaxpr)

    def entries(q_positions, k_positions):
        distance = jnp.clip(q_positions[:, :, None] - k_positions[:, None, :], 0, 8)
        return jnp.asarray(TABLE)[distance, 1][:, None]  # -> [1, 1, q, k]

    assert tile_bias.keeps_gather(tile_bias.trace(entries, 4, 3)[0].jaxpr)
    np.testing.assert_array_equal(_evaluate(entries), entries(Q_TILE, K_TILE))


def test_hoist_moves_the_work_on_consts_out():
    """The slopes built by jnp (iota, add, broadcast, mul) leave the tile; what is left reads
    one hoisted [1, heads, 1, 1] value and the positions."""

    def built_slopes(q_positions, k_positions):
        distance = (q_positions[:, None, :, None] - k_positions[:, None, None, :]).astype(float)
        return -0.5 * jnp.arange(1, H + 1, dtype=jnp.float32)[None, :, None, None] * distance

    traced, consts = tile_bias.trace(built_slopes, 4, 3)
    tile, tile_consts = tile_bias.hoist(traced.jaxpr, consts)
    assert {eqn.primitive.name for eqn in tile.eqns} == {
        "broadcast_in_dim",
        "sub",
        "convert_element_type",
        "mul",
    }
    np.testing.assert_array_equal(tile_consts[0].reshape(-1), [-0.5, -1.0, -1.5])
    bias = tile_bias.evaluate(tile, tile_consts, Q_TILE, K_TILE)[0]
    np.testing.assert_array_equal(bias, built_slopes(Q_TILE, K_TILE))


def test_hoist_keeps_position_free_outputs():
    """A bias that ignores the positions is hoisted whole: the tile only hands it back."""

    def per_head(q_positions, k_positions):
        return jnp.broadcast_to(jnp.asarray(TABLE[0])[None, :, None, None], (1, H, 4, 3))

    traced, consts = tile_bias.trace(per_head, 4, 3)
    tile, tile_consts = tile_bias.hoist(traced.jaxpr, consts)
    assert not tile.eqns and len(tile_consts) == 1
    bias = tile_bias.evaluate(tile, tile_consts, Q_TILE, K_TILE)[0]
    np.testing.assert_array_equal(bias, per_head(Q_TILE, K_TILE))


def test_no_bias():
    assert tile_bias.trace(lambda q, k: None, 4, 3) == (None, [])
    assert tile_bias.as_bias_fn(None, [])(Q_TILE, K_TILE) is None


def test_bad_bias_shape():
    with pytest.raises(ValueError, match=r"bias_fn must return \[batch, heads, q_len, k_len\]"):
        tile_bias.trace(lambda q, k: q[:, :, None] - k[:, None, :], 4, 3)


def test_as_bias_fn_equals_the_hook_on_whole_rows():
    """7 queries in tiles of 4 (a partial last tile), 3 examples, 2 keys in a tile of 3, from
    the hoisted jaxpr."""
    traced, consts = tile_bias.trace(_mlp, 4, 3)
    jaxpr, consts = tile_bias.hoist(traced.jaxpr, consts)
    q_positions = jnp.asarray(np.random.default_rng(0).integers(0, 50, (3, 7)), jnp.int32)
    k_positions = jnp.asarray(np.random.default_rng(1).integers(0, 50, (3, 2)), jnp.int32)
    bias = tile_bias.as_bias_fn(jaxpr, consts)(q_positions, k_positions)
    assert bias.shape == (3, H, 7, 2)
    np.testing.assert_allclose(bias, _mlp(q_positions, k_positions), rtol=1e-6)
    with pytest.raises(ValueError, match="k_positions has 4 keys, more than the tile's 3"):
        tile_bias.as_bias_fn(jaxpr, consts)(q_positions, jnp.zeros((3, 4), jnp.int32))
