"""Tests of lenggen/model/attention/pallas_flash.py's TPU (Mosaic) form beyond the shared kernel
contract (test_attention_kernels.py, which runs it in interpret mode): lowering for TPU with
every PE's tile bias hook in the tile (T5's table lookup as a one-hot contraction), the
fallbacks (a bias without a tile hook, dropout) and their log lines, bad tile sizes. The GPU
(Triton) form: test_attention_pallas_gpu.py.

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
from lenggen.model.attention import blockwise, pallas_flash, reference
from lenggen.model.positional.base import TileBias

B, Q, K, H, D = 2, 5, 7, 3, 8


def _linear_tile(params, q_positions, k_positions):
    """ALiBi's form for one tile -> [heads, tq, tk]."""
    distance = (q_positions[:, None] - k_positions[None, :]).astype(jnp.float32)
    return -params[0][:, None, None] * distance[None]


LINEAR = TileBias(_linear_tile, (jnp.asarray([0.5, 0.25, 0.125], jnp.float32),))


def _pe_bias(name: str) -> tuple:
    """PE `name`'s (bias, tile_bias) hooks (3 heads, initial parameters)."""
    pe = positional.build(ml_collections.ConfigDict(dict(name=name)), num_heads=H, d_model=16)
    tokens = jnp.zeros((1, 1), jnp.int32)
    params = pe.init(jax.random.key(0), tokens, tokens, method=pe.bias)
    return (
        lambda q, k: pe.apply(params, q, k, method=pe.bias),
        pe.apply(params, method=pe.tile_bias),
    )


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((B, Q, H, D)).astype(np.float32)
    k, v = (rng.standard_normal((B, K, H, D)).astype(np.float32) for _ in range(2))
    k_positions = np.broadcast_to(np.arange(K, dtype=np.int32), (B, K))
    return q, k, v, k_positions[:, 2:], k_positions, np.ones((B, K), bool)


def _tpu_module(bias_fn, tile, length: int = 256) -> str:
    """The StableHLO of the compiled (not interpreted) kernel, lowered for TPU."""
    spec = jax.ShapeDtypeStruct
    args = (spec((1, length, H, 64), jnp.float32),) * 3 + (spec((1, length), jnp.int32),) * 2
    args += (spec((1, length), jnp.bool_),)

    def kernel(*arrays):
        return pallas_flash.attend(*arrays, bias_fn, tile_bias=tile, interpret=False)

    return jax.export.export(jax.jit(kernel), platforms=["tpu"])(*args).mlir_module()


@pytest.mark.parametrize("bias", ["none", "linear", "alibi", "t5", "fire", "kerple"])
def test_lowers_for_tpu_with_the_bias_in_the_tile(bias):
    hooks = {"none": (lambda q, k: None, None), "linear": (LINEAR, LINEAR)}.get(bias)
    assert "tpu_custom_call" in _tpu_module(*(hooks or _pe_bias(bias)))


def test_bias_without_a_tile_hook_falls_back_to_blockwise(inputs, caplog):
    # No Pallas call in the TPU module...
    with caplog.at_level("INFO"):
        assert "tpu_custom_call" not in _tpu_module(LINEAR, None)
    message = (
        "pallas_flash: the positional encoding's bias has no tile form (tile_bias); "
        "running blockwise attention instead"
    )
    assert [r.getMessage() for r in caplog.records] == [message]
    # ...and the call runs blockwise, which needs no TPU to check.
    out, expected, exact = jax.jit(
        lambda: (
            pallas_flash.attend(*inputs, LINEAR, interpret=False),
            blockwise.attend(*inputs, LINEAR),
            reference.attend(*inputs, LINEAR),
        )
    )()
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(out, exact, atol=1e-5)


def test_dropout_falls_back_to_blockwise(inputs, caplog):
    @jax.jit
    def run(key):
        dropout = dict(dropout_rate=0.5, dropout_rng=key)
        return (
            pallas_flash.attend(*inputs, LINEAR, tile_bias=LINEAR, **dropout),
            blockwise.attend(*inputs, LINEAR, **dropout),
        )

    with caplog.at_level("INFO"):
        dropped, expected = run(jax.random.key(3, impl="rbg"))
    np.testing.assert_array_equal(dropped, expected)
    assert [r.getMessage() for r in caplog.records] == [
        "pallas_flash: attention dropout has no Pallas form; running blockwise attention instead"
    ]


@pytest.mark.parametrize(
    ("name", "kwargs"), [("block_q", dict(block_q=0)), ("block_k", dict(block_k=-1))]
)
def test_tile_sizes_validated(inputs, name, kwargs):
    with pytest.raises(ValueError, match=f"{name} must be >= 1, got {list(kwargs.values())[0]}"):
        pallas_flash.attend(*inputs, LINEAR, tile_bias=LINEAR, **kwargs)
