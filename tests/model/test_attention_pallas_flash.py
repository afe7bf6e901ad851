"""Tests of lenggen/model/attention/pallas_flash.py's TPU (Mosaic) form beyond the shared kernel
contract (test_attention_kernels.py, which runs it in interpret mode): lowering for TPU with
every PE's bias in the tile (T5's table lookup as a one-hot contraction), the fallbacks (a
gather the rewrite does not cover, dropout), bad tile sizes. The GPU (Triton) form:
test_attention_pallas_gpu.py.

Lowering is checked with `jax.export(..., platforms=['tpu'])`, which runs Pallas' Mosaic
lowering on this CPU machine (no TPU needed): the module then holds a `tpu_custom_call`. The
Mosaic compiler itself runs only on a TPU, so this proves lowering, not compilation.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lenggen.model import positional
from lenggen.model.attention import blockwise, pallas_flash, reference, tile_bias

B, Q, K, H, D = 2, 5, 7, 3, 8
TABLE = np.random.default_rng(7).standard_normal((9, H)).astype(np.float32)
BIG_TABLE = np.random.default_rng(8).standard_normal((tile_bias.ONE_HOT_MAX_ROWS + 1, H))


def _linear_bias(q_positions, k_positions):
    """ALiBi's form, einsum included (an outer-product dot_general that tile_bias rewrites)."""
    distance = (q_positions[:, :, None] - k_positions[:, None, :]).astype(jnp.float32)
    slopes = jnp.asarray([0.5, 0.25, 0.125], jnp.float32)
    return -jnp.einsum("h,bqk->bhqk", slopes, distance)


def _big_table_bias(q_positions, k_positions):
    """A lookup in a table over ONE_HOT_MAX_ROWS rows: the gather stays."""
    distance = jnp.clip(q_positions[:, :, None] - k_positions[:, None, :], 0, len(BIG_TABLE) - 1)
    return jnp.einsum("bqkh->bhqk", jnp.take(jnp.asarray(BIG_TABLE, jnp.float32), distance, 0))


def _pe_bias(name: str):
    """PE `name`'s bias hook (3 heads, initial parameters)."""
    pe = positional.build(ml_collections.ConfigDict(dict(name=name)), num_heads=H, d_model=16)
    tokens = jnp.zeros((1, 1), jnp.int32)
    params = pe.init(jax.random.key(0), tokens, tokens, method=pe.bias)
    return lambda q, k: pe.apply(params, q, k, method=pe.bias)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((B, Q, H, D)).astype(np.float32)
    k, v = (rng.standard_normal((B, K, H, D)).astype(np.float32) for _ in range(2))
    k_positions = np.broadcast_to(np.arange(K, dtype=np.int32), (B, K))
    return q, k, v, k_positions[:, 2:], k_positions, np.ones((B, K), bool)


def _tpu_module(bias_fn, length: int = 256) -> str:
    """The StableHLO of the compiled (not interpreted) kernel, lowered for TPU."""
    spec = jax.ShapeDtypeStruct
    args = (spec((1, length, H, 64), jnp.float32),) * 3 + (spec((1, length), jnp.int32),) * 2
    args += (spec((1, length), jnp.bool_),)

    def kernel(*arrays):
        return pallas_flash.attend(*arrays, bias_fn, interpret=False)

    return jax.export.export(jax.jit(kernel), platforms=["tpu"])(*args).mlir_module()


@pytest.mark.parametrize("bias", ["none", "linear", "alibi", "t5", "fire"])
def test_lowers_for_tpu_with_the_bias_in_the_tile(bias):
    bias_fn = {"none": lambda q, k: None, "linear": _linear_bias}.get(bias) or _pe_bias(bias)
    assert "tpu_custom_call" in _tpu_module(bias_fn)


def test_gather_without_one_hot_form_falls_back_to_blockwise_when_compiled(inputs):
    # Mosaic would reject the gather: no Pallas call in the TPU module...
    assert "tpu_custom_call" not in _tpu_module(_big_table_bias)
    # ...and the compiled path runs blockwise, which needs no TPU to check.
    out, expected, exact = jax.jit(
        lambda: (
            pallas_flash.attend(*inputs, _big_table_bias, interpret=False),
            blockwise.attend(*inputs, _big_table_bias),
            reference.attend(*inputs, _big_table_bias),
        )
    )()
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(out, exact, atol=1e-5)


def test_dropout_falls_back_to_blockwise(inputs):
    @jax.jit
    def run(key):
        dropout = dict(dropout_rate=0.5, dropout_rng=key)
        return (
            pallas_flash.attend(*inputs, _linear_bias, **dropout),
            blockwise.attend(*inputs, _linear_bias, **dropout),
        )

    dropped, expected = run(jax.random.key(3, impl="rbg"))
    np.testing.assert_array_equal(dropped, expected)


@pytest.mark.parametrize(
    ("name", "kwargs"), [("block_q", dict(block_q=0)), ("block_k", dict(block_k=-1))]
)
def test_tile_sizes_validated(inputs, name, kwargs):
    with pytest.raises(ValueError, match=f"{name} must be >= 1, got {list(kwargs.values())[0]}"):
        pallas_flash.attend(*inputs, _linear_bias, **kwargs)
