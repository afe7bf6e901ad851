"""Tests of the tile form of every bias PE (`tile_bias`, lenggen/model/positional/base.py):
it equals the dense `bias` hook, it holds no gather (Mosaic and Triton lower none), and it
keeps its first `heads` rows when the GPU kernel zero-pads its params (pallas_gpu.pad_param).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lenggen.model import positional
from lenggen.model.attention import pallas_gpu

H = 3
Q_POSITIONS = np.array([[4, 0, 6, 2, 150], [10, 3, 7, 12, 8]], np.int32)
K_POSITIONS = np.array([[6, 1, 3, 0, 5, 2, 4], [3, 9, 12, 7, 5, 10, 1]], np.int32)


def _hooks(name: str):
    """(dense bias, tile hook) of PE `name`, 3 heads, randomly initialised parameters."""
    pe = positional.build(ml_collections.ConfigDict(dict(name=name)), num_heads=H, d_model=16)
    variables = pe.init(jax.random.key(4), Q_POSITIONS, K_POSITIONS, method=pe.bias)
    dense = pe.apply(variables, Q_POSITIONS, K_POSITIONS, method=pe.bias)
    return dense, pe.apply(variables, method=pe.tile_bias)


@pytest.mark.parametrize("name", positional.names())
def test_tile_form_equals_the_dense_bias(name):
    dense, tile = _hooks(name)
    assert (dense is None) == (tile is None)
    if tile is None:
        return
    got = tile(jnp.asarray(Q_POSITIONS), jnp.asarray(K_POSITIONS))  # the fn per example
    assert got.shape == dense.shape == (2, H, 5, 7) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, dense, rtol=1e-6, atol=1e-6)
    assert np.ptp(np.asarray(dense)) > 1e-3  # not a constant: the comparison has teeth


BIAS_PES = [n for n in positional.names() if _hooks(n)[1] is not None]


def test_the_bias_pes():
    assert BIAS_PES == ["t5", "alibi", "fire", "kerple"]


@pytest.mark.parametrize("name", BIAS_PES)
def test_tile_form_holds_no_gather(name):
    tile = _hooks(name)[1]
    jaxpr = jax.make_jaxpr(tile.fn)(tile.params, Q_POSITIONS[0], K_POSITIONS[0])
    assert "gather" not in str(jaxpr)


@pytest.mark.parametrize("name", BIAS_PES)
def test_zero_padded_params_keep_the_first_heads(name):
    tile = _hooks(name)[1]
    padded = tuple(pallas_gpu.pad_param(p) for p in tile.params)
    assert any(p.shape != q.shape for p, q in zip(padded, tile.params, strict=True))
    q, k = Q_POSITIONS[0], K_POSITIONS[0]
    got = tile.fn(padded, q, k)
    assert got.shape[0] == pallas_gpu.padded_dim(H)
    np.testing.assert_allclose(got[:H], tile.fn(tile.params, q, k), rtol=1e-6, atol=1e-6)


def _forms(name: str):
    """The tile hook's forms: `fn` (Mosaic) and, where it has one, `triton_fn` (GPU)."""
    tile = _hooks(name)[1]
    return [tile.fn] + ([tile.triton_fn] if tile.triton_fn else [])


def _equations(fn, params):
    jaxpr = jax.make_jaxpr(fn)(params, Q_POSITIONS[0], K_POSITIONS[0]).jaxpr
    return [(e.primitive.name, e.params, e.invars) for e in jaxpr.eqns]


@pytest.mark.parametrize("name", BIAS_PES)
def test_the_triton_form_equals_the_mosaic_form_on_padded_params_too(name):
    tile = _hooks(name)[1]
    if tile.triton_fn is None:
        assert len(_forms(name)) == 1
        return
    q, k = Q_POSITIONS[0], K_POSITIONS[0]
    mosaic = tile.fn(tile.params, q, k)
    # Equal up to float32 summation order (FIRE's default-precision matmul; T5's is exact).
    np.testing.assert_allclose(tile.triton_fn(tile.params, q, k), mosaic, rtol=1e-6, atol=1e-6)
    padded = tuple(pallas_gpu.pad_param(p) for p in tile.params)
    np.testing.assert_allclose(tile.triton_fn(padded, q, k)[:H], mosaic, rtol=1e-6, atol=1e-6)
    assert "gather" not in str(jax.make_jaxpr(tile.triton_fn)(tile.params, q, k))


@pytest.mark.parametrize("name", BIAS_PES)
def test_the_mosaic_form_splits_no_last_axis(name):
    """Mosaic on TPU v4 rejects a reshape that splits the last (lane) axis, e.g. T5's
    `[heads, tq * tk] -> [heads, tq, tk]` (found compiling for v4:2x2x1)."""
    tile = _hooks(name)[1]
    for primitive, params, invars in _equations(tile.fn, tile.params):
        if primitive == "reshape":
            old, new = invars[0].aval.shape, params["new_sizes"]
            assert len(old) < 1 or len(new) < 1 or old[-1] == new[-1] or len(new) < len(old)


@pytest.mark.parametrize("name", BIAS_PES)
def test_the_triton_form_has_no_batched_matmul(name):
    tile = _hooks(name)[1]
    fn = tile.triton_fn or tile.fn
    for primitive, params, _ in _equations(fn, tile.params):
        if primitive == "dot_general":
            assert params["dimension_numbers"][1] == ((), ())
