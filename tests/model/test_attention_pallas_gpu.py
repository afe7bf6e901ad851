"""Tests of lenggen/model/attention/pallas_gpu.py, the GPU (Triton) form of pallas_flash.

Interpret mode on the CPU against the reference kernel, for every PE's hooks (rotate, bias),
with padded keys, a query that sees no key, positions in no index order, several query and key
blocks (the last partial), and KV-cache decoding (q_len 1 against a cache with empty slots).
Tolerances: float32 1e-5 (the softmax sums in another order); bfloat16 2e-2 against the same
kernel in float32; gradients 1e-4.

Lowering: `jax.export(..., platforms=['cuda'])` under an abstract H100 (no GPU here) runs
Pallas' Triton lowering; the Triton module it embeds must pass MLIR verification (Triton's op
verifiers) with every tensor a power of two in size. Triton's compiler runs only on a GPU: this
proves lowering, not compilation.
"""

import functools
import math
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax._src.lib.mlir import ir
from jax._src.pallas.triton import lowering as triton_lowering

from lenggen.model import attention, positional
from lenggen.model.attention import pallas_flash, pallas_gpu, reference
from lenggen.model.positional.base import TileBias

B, Q, K, H, D = 2, 18, 35, 3, 8  # 2 query blocks and 3 key blocks of 16; head_dim padded to 16
BLOCKS = dict(block_q=16, block_k=16)
F32_TOLERANCE, BF16_TOLERANCE = 1e-5, 2e-2
TABLE = np.random.default_rng(7).standard_normal((9, H)).astype(np.float32)
gpu_attend = functools.partial(pallas_flash.attend, target="gpu", **BLOCKS)


def _normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(3)
    q, k, v = _normal(0, (B, Q, H, D)), _normal(1, (B, K, H, D)), _normal(2, (B, K, H, D))
    q_positions = np.stack([rng.permutation(40)[:Q] for _ in range(B)]).astype(np.int32)
    k_positions = np.stack([rng.permutation(40)[:K] for _ in range(B)]).astype(np.int32)
    k_valid = rng.random((B, K)) > 0.3
    # Query 0 of example 0 sees no key: every key at or before its position is a pad.
    q_positions[0, 0] = 3
    k_valid[0] &= k_positions[0] > 3
    return q, k, v, q_positions, k_positions, k_valid


@pytest.fixture(scope="module")
def decode_inputs(inputs):
    """q_len 1 against a cache of K slots: example 0 left-padded (3 pads), example 1 with its
    last 5 slots still empty."""
    q, k, v, *_ = inputs
    k_positions = np.stack([np.arange(K) - 3, np.arange(K)]).astype(np.int32)
    k_valid = np.stack([np.arange(K) >= 3, np.arange(K) < K - 5])
    return q[:, :1], k, v, np.array([[K - 4], [K - 6]], np.int32), k_positions, k_valid


def _pe(name: str):
    """(rotate, bias, tile_bias) hooks of PE `name` with 3 heads and its initial parameters."""
    pe = positional.build(ml_collections.ConfigDict(dict(name=name)), num_heads=H, d_model=16)
    tokens = jnp.zeros((1, 1), jnp.int32)
    params = pe.init(jax.random.key(1), tokens, tokens, method=pe.bias)

    def rotate(x, positions):
        return pe.apply(params, x, positions, method=pe.rotate)

    return (
        rotate,
        lambda q, k: pe.apply(params, q, k, method=pe.bias),
        pe.apply(params, method=pe.tile_bias),
    )


def _pallas_and_reference(bias_fn, tile):
    return jax.jit(
        lambda *args: (gpu_attend(*args, bias_fn, tile_bias=tile), reference.attend(*args, bias_fn))
    )


# One compile per shape for every PE without a bias (nope, ape, rotary: rotate runs outside).
_UNBIASED = _pallas_and_reference(lambda q_positions, k_positions: None, None)


@pytest.mark.parametrize("pe_name", positional.names())
def test_matches_reference_for_every_pe(inputs, decode_inputs, pe_name):
    rotate, bias_fn, tile = _pe(pe_name)
    biased = tile is not None
    assert biased == (jax.eval_shape(bias_fn, *inputs[3:5]) is not None)
    run = _pallas_and_reference(bias_fn, tile) if biased else _UNBIASED
    for case in (inputs, decode_inputs):
        q, k, v, q_positions, k_positions, k_valid = case
        args = (rotate(q, q_positions), rotate(k, k_positions), v, *case[3:])
        out, expected = run(*args)
        assert out.shape == q.shape and out.dtype == jnp.float32
        np.testing.assert_allclose(out, expected, atol=F32_TOLERANCE, rtol=0)
        if biased:  # the bias matters: the comparison has teeth
            assert np.abs(np.asarray(expected - _UNBIASED(*args)[1])).max() > 1e-2
        if case is inputs:  # the query with no visible key: the uniform row over the keys
            np.testing.assert_allclose(out[0, 0], v[0].mean(axis=0), atol=F32_TOLERANCE)


def test_no_sqrt_d_scaling_hand_worked():
    """One query, keys [2, 0] and [0, 0]: logits exactly q.k = 2 and 0 (T5 convention)."""
    q = jnp.array([1.0, 0.0]).reshape(1, 1, 1, 2)
    k = jnp.array([[2.0, 0.0], [0.0, 0.0]]).reshape(1, 2, 1, 2)
    v = jnp.array([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)
    positions = jnp.array([[0, 0]], jnp.int32)
    out = gpu_attend(
        q,
        k,
        v,
        positions[:, :1],
        positions,
        jnp.ones((1, 2), bool),
        lambda q_positions, k_positions: None,
    )
    e2 = np.exp(2.0)
    np.testing.assert_allclose(out[0, 0, 0], [e2 / (e2 + 1), 1 / (e2 + 1)], atol=1e-6)


def _linear_tile(params, q_positions, k_positions):
    distance = (q_positions[:, None] - k_positions[None, :]).astype(jnp.float32)
    return -0.3 * params[0][:, None, None] * distance[None]


LINEAR = TileBias(_linear_tile, (jnp.arange(1, H + 1, dtype=jnp.float32),))


def test_bfloat16(inputs):
    run = jax.jit(functools.partial(gpu_attend, bias_fn=LINEAR, tile_bias=LINEAR))
    q, k, v, *rest = inputs
    out = run(*(a.astype(jnp.bfloat16) for a in (q, k, v)), *rest)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), run(*inputs), atol=BF16_TOLERANCE, rtol=0)


def _table_tile(params, q_positions, k_positions):
    """A table row per distance clipped to 8, read as a one-hot -> [heads, tq, tk]; the table
    may arrive zero-padded (rows and heads)."""
    (table,) = params
    distance = jnp.clip(q_positions[:, None] - k_positions[None, :], 0, 8)
    one_hot = (distance[:, :, None] == jnp.arange(table.shape[0])).astype(table.dtype)
    return jnp.einsum("qkn,nh->hqk", one_hot, table, precision=jax.lax.Precision.HIGHEST)


def _loss(kernel, table, q, k, v, q_positions, k_positions, k_valid):
    tile = TileBias(_table_tile, (table,))  # the table is a traced parameter, as a PE's
    out = kernel(q, k, v, q_positions, k_positions, k_valid, tile, tile_bias=tile)
    return (out * jnp.cos(jnp.arange(D, dtype=jnp.float32))).sum()


@pytest.mark.parametrize("lengths", [(Q, K), (5, 7)], ids=["blocks", "shorter_than_a_tile"])
def test_gradients_match_reference(inputs, lengths):
    """Through the custom VJP (blockwise's backward on the tile hook); with 7 keys the tile
    (16) is longer than the keys."""
    q_len, k_len = lengths
    q, k, v, q_positions, k_positions, k_valid = inputs
    args = (
        q[:, :q_len],
        k[:, :k_len],
        v[:, :k_len],
        q_positions[:, :q_len],
        k_positions[:, :k_len],
        k_valid[:, :k_len],
    )
    grad = jax.value_and_grad(_loss, argnums=(1, 2, 3, 4))
    (value, grads), (ref_value, ref_grads) = jax.jit(
        lambda *a: (grad(gpu_attend, *a), grad(reference.attend, *a))
    )(jnp.asarray(TABLE), *args)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for got, expected in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert np.abs(ref_grads[0]).max() > 1e-2  # the table matters


def test_gpu_backend_runs_the_gpu_form(inputs, monkeypatch):
    """On a GPU backend `pallas_flash` (the registry's too) runs the Triton form, compiled,
    with its default tiles; the Mosaic form is refused there."""
    calls = []
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(pallas_gpu, "forward", lambda *a, **kw: calls.append(kw) or a[0])
    attention.get("pallas_flash")(*inputs, LINEAR, tile_bias=LINEAR)
    assert calls == [
        dict(
            block_q=pallas_gpu.DEFAULT_BLOCK_Q, block_k=pallas_gpu.DEFAULT_BLOCK_K, interpret=False
        )
    ]
    with pytest.raises(ValueError, match="target 'tpu' does not compile on the gpu backend"):
        pallas_flash.attend(*inputs, LINEAR, tile_bias=LINEAR, target="tpu")


def test_bad_target_and_tiles(inputs):
    with pytest.raises(ValueError, match=r"unknown pallas_flash target 'cuda'; expected one of"):
        pallas_flash.attend(*inputs, LINEAR, tile_bias=LINEAR, target="cuda")
    for name, value in (("block_q", 24), ("block_k", 8)):
        message = f"{name} must be a power of two >= 16 on the gpu target \\(Triton tiles\\)"
        with pytest.raises(ValueError, match=f"{message}, got {value}"):
            pallas_flash.attend(*inputs, LINEAR, tile_bias=LINEAR, target="gpu", **{name: value})


@pytest.mark.parametrize(("length", "blocks"), [(1, 1), (16, 1), (40, 3)])
def test_block_size(length, blocks):
    """Clipped to the smallest power-of-two tile holding the axis; 40 keys: 3 tiles of 16."""
    size = pallas_gpu.block_size(16, length, "block_k")
    assert size == 16 and math.ceil(length / size) == blocks
    assert pallas_gpu.block_size(128, 40, "block_k") == 64


def _triton_config(bias_fn, tile, length: int, dtype=jnp.bfloat16, **hooks) -> ir.DictAttr:
    """The backend config of the kernel's one Triton call, lowered for CUDA with q, k, v of
    `dtype`. `hooks`: more of the kernel's hook arguments (`contextual`)."""
    spec = jax.ShapeDtypeStruct
    args = (spec((2, length, H, 64), dtype),) * 3 + (spec((2, length), jnp.int32),) * 2
    args += (spec((2, length), jnp.bool_),)
    device = jax.sharding.AbstractDevice(
        device_kind="NVIDIA H100 80GB HBM3", num_cores=132, platform="gpu"
    )
    mesh = jax.sharding.AbstractMesh(
        (1,), ("x",), (jax.sharding.AxisType.Explicit,), abstract_device=device
    )

    def kernel(*arrays):
        return pallas_flash.attend(
            *arrays, bias_fn, tile_bias=tile, interpret=False, target="gpu", **hooks
        )

    with jax.sharding.use_abstract_mesh(mesh):
        exported = jax.export.export(
            jax.jit(kernel),
            platforms=["cuda"],
            disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
        )(*args)
        module = exported.mlir_module()
        lowered = jax.jit(kernel).trace(*args).lower(lowering_platforms=("cuda",))
    assert module.count("__gpu$xla.gpu.triton") == 1
    calls = []

    def walk(op):
        for region in op.regions:
            for block in region.blocks:
                for child in block.operations:
                    if child.operation.name == "stablehlo.custom_call":
                        calls.append(child)
                    walk(child.operation)

    walk(lowered.compiler_ir("stablehlo").operation)
    (call,) = calls
    return ir.DictAttr(call.attributes["mhlo.backend_config"])


def _triton_module(bias_fn, tile, length: int, **hooks) -> str:
    """The Triton IR of the kernel lowered for CUDA (bfloat16), verified; its text."""
    triton_ir = ir.StringAttr(_triton_config(bias_fn, tile, length, **hooks)["ir"])
    # Pallas' own context: MLIR's upstream dialects plus Triton's.
    with triton_lowering._new_ir_context():
        triton_module = ir.Module.parse(triton_ir.value_bytes)
        assert triton_module.operation.verify()
        return str(triton_module)


# jax 0.12 deprecates the Pallas Triton backend (pallas_gpu's docstring); the warning is known.
@pytest.mark.filterwarnings("ignore:The Pallas Triton backend is deprecated:DeprecationWarning")
@pytest.mark.parametrize("pe_name", ["nope", "alibi", "t5", "fire", "kerple"])
@pytest.mark.parametrize("length", [1, 40], ids=["decode", "prefill"])
def test_lowers_for_cuda_with_the_bias_in_the_tile(pe_name, length):
    text = _triton_module(*_pe(pe_name)[1:], length)
    sizes = {
        math.prod(map(int, shape.split("x")))
        for shape in re.findall(r"tensor<([0-9x]+)x[!a-z]", text)
    }
    assert sizes and all(size & (size - 1) == 0 for size in sizes)
    assert "tt.dot" in text and "gather" not in text
    # 3 heads: 2 dots each (q.k, p.v) in the key loop; T5 adds the one-hot dot, FIRE its MLP.
    assert text.count("tt.dot") >= 2 * H


@pytest.mark.filterwarnings("ignore:The Pallas Triton backend is deprecated:DeprecationWarning")
@pytest.mark.parametrize("dtype, stages", [(jnp.float32, 1), (jnp.bfloat16, 2)])
def test_float32_runs_one_pipeline_stage(dtype, stages):
    # Two stages of float32 tiles asked an H200 for 248,128 bytes of shared memory (232,448
    # available; benchmarks/results/gpu_session_h200.md); one fits and matched the reference.
    config = str(_triton_config(*_pe("t5")[1:], 40, dtype))
    assert re.search(r"num_stages = (\d+) : i32", config).group(1) == str(stages)
