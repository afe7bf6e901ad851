"""Tests of lenggen/model/positional/cope.py (CoPE) and the `contextual_logits` hook in every
kernel: the equation against hand-worked values and a loop-by-loop numpy reference, every
kernel equal to dot_product, causality, gradients, per-layer parameters, KV-cache decoding.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model import attention, positional
from lenggen.model.attention import blockwise, dot_product, pallas_flash, reference
from lenggen.model.decoder import Decoder
from lenggen.model.positional.cope import CoPE, cope_term, cope_tile_term
from lenggen.train import optimizer
from tests.model import tiny


def _no_bias(q_positions, k_positions):
    del q_positions, k_positions


def _hook(embedding: np.ndarray, num_heads: int = 1):
    p_max, head_dim = embedding.shape[0] - 1, embedding.shape[1]
    hook = CoPE(num_heads=num_heads, p_max=p_max).contextual_logits(head_dim)
    return hook.with_params((jnp.asarray(embedding, jnp.float32),))


def test_hand_worked_counts_and_interpolation():
    """q . k = 0 everywhere, so every gate is sigmoid(0) = 1/2 and query 3 counts keys 0..3 as
    p = 2, 1.5, 1, 0.5; with z[n] = q . e[n] = n^2 the interpolated term is 4, (1 + 4) / 2 =
    2.5, 1, (0 + 1) / 2 = 0.5. With p_max = 1 the counts clip to 1, 1, 1, 0.5."""
    q = jnp.asarray(np.tile([1.0, 0.0], (1, 4, 1, 1)))  # [batch 1, 4 tokens, 1 head, d 2]
    k = jnp.asarray(np.tile([0.0, 1.0], (1, 4, 1, 1)))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
    positions = jnp.arange(4)[None]
    visible = reference.causal_mask(positions, positions, jnp.ones((1, 4), bool))
    squares = np.stack([np.arange(4.0) ** 2, np.full(4, 7.0)], axis=1)  # e[n] = [n^2, 7]
    term = _hook(squares).dense(q, logits, visible)  # -> [1, 1, 4, 4]
    np.testing.assert_allclose(term[0, 0, 3], [4.0, 2.5, 1.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(term[0, 0, 1, :2], [1.0, 0.5], rtol=1e-6)
    clipped = _hook(squares[:2]).dense(q, logits, visible)
    np.testing.assert_allclose(clipped[0, 0, 3], [1.0, 1.0, 1.0, 0.5], rtol=1e-6)


def _numpy_cope(q, k, v, valid, embedding):
    """One head, loop by loop as the paper states it: `q, k, v [length, d]`, `valid [length]`
    (positions are indices) -> `[length, d]`."""
    p_max = embedding.shape[0] - 1
    out = np.zeros_like(v)
    for i in range(len(q)):
        keys = [j for j in range(i + 1) if valid[j]]
        if not keys:
            out[i] = v[valid].mean(axis=0)  # no visible key: uniform over the real keys
            continue
        gates = {t: 1.0 / (1.0 + math.exp(-float(q[i] @ k[t]))) for t in keys}
        logits = []
        for j in keys:
            p = min(sum(gates[t] for t in keys if t >= j), p_max)
            z = functools.partial(lambda row, n: float(row @ embedding[n]), q[i])
            w = p - math.floor(p)
            logits.append(q[i] @ k[j] + w * z(math.ceil(p)) + (1 - w) * z(math.floor(p)))
        weights = np.exp(np.array(logits) - max(logits))
        out[i] = (weights / weights.sum()) @ v[keys]
    return out


@pytest.fixture(scope="module")
def inputs():
    """Batch 2 x 9 tokens x 2 heads x d 4, row 1 left-padded by 3, and a table with p_max 3
    (counts exceed it, so clipping acts); sharp logits so gates vary."""
    rng = np.random.default_rng(0)
    b, length, heads, d, p_max = 2, 9, 2, 4, 3
    q, k, v = (1.5 * rng.standard_normal((b, length, heads, d)) for _ in range(3))
    valid = np.ones((b, length), bool)
    valid[1, :3] = False
    positions = np.maximum(np.cumsum(valid, axis=-1) - 1, 0)
    embedding = rng.standard_normal((p_max + 1, d))
    arrays = [jnp.asarray(a, jnp.float32) for a in (q, k, v)]
    return (*arrays, jnp.asarray(positions), jnp.asarray(valid), embedding)


def test_reference_kernel_equals_numpy_loops(inputs):
    q, k, v, positions, valid, embedding = inputs
    got = reference.attend(
        q, k, v, positions, positions, valid, _no_bias, contextual=_hook(embedding)
    )
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            expected = _numpy_cope(
                *(np.asarray(x[b, :, h], np.float64) for x in (q, k, v)),
                np.asarray(valid[b]),
                embedding,
            )
            rows = np.asarray(valid[b])
            np.testing.assert_allclose(got[b, rows, h], expected[rows], atol=1e-5, rtol=0)
    # CoPE changes the outputs (the comparison has teeth).
    plain = reference.attend(q, k, v, positions, positions, valid, _no_bias)
    assert float(jnp.abs(got - plain).max()) > 0.1


def test_tile_term_equals_gather_term():
    """The Pallas form (hat-function sum, no gather) equals the gather form, counts beyond
    p_max and at integers included."""
    rng = np.random.default_rng(1)
    embedding = jnp.asarray(rng.standard_normal((5, 4)), jnp.float32)
    q = jnp.asarray(rng.standard_normal((2, 3, 4)), jnp.float32)
    counts = (
        jnp.asarray(rng.uniform(0, 6, (2, 3, 7)), jnp.float32)
        .at[0, 0, :3]
        .set(jnp.array([0.0, 2.0, 4.0]))
    )
    expected = cope_term((embedding,), q, counts, p_max=4)
    np.testing.assert_allclose(
        cope_tile_term((embedding,), q, counts, p_max=4), expected, atol=1e-5
    )
    # The GPU kernel's forms: one head as 2-D arrays, and the table zero-padded (to 16 rows).
    padded = (jnp.pad(embedding, ((0, 11), (0, 0))),)
    one_head = cope_tile_term(padded, q[1], counts[1], p_max=4)
    np.testing.assert_allclose(one_head, expected[1], atol=1e-5)


KERNELS = {
    "reference": reference.attend,
    "blockwise": functools.partial(blockwise.attend, block_q=4, block_k=4),
    "blockwise_one_block": blockwise.attend,
    "pallas_flash": functools.partial(pallas_flash.attend, block_q=4, block_k=4),
    "pallas_flash_one_tile": pallas_flash.attend,
    "auto": attention.get("auto"),
}


@pytest.fixture(scope="module")
def dot_product_out(inputs):
    q, k, v, positions, valid, embedding = inputs
    return dot_product.attend(
        q, k, v, positions, positions, valid, _no_bias, contextual=_hook(embedding)
    )


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_equals_dot_product(inputs, dot_product_out, kernel):
    """9 keys in blocks of 4: three key blocks, the last partial, and 3 query chunks."""
    q, k, v, positions, valid, embedding = inputs
    got = KERNELS[kernel](
        q, k, v, positions, positions, valid, _no_bias, contextual=_hook(embedding)
    )
    rows = np.asarray(valid)
    np.testing.assert_allclose(got[rows], dot_product_out[rows], atol=2e-5, rtol=0)


@pytest.mark.parametrize("kernel", ["blockwise", "pallas_flash", "dot_product"])
def test_decoding_step_against_a_cache(inputs, kernel):
    """One query (the last token) against a cache of 12 slots, 3 still empty: the output of
    that query in the full call."""
    q, k, v, positions, valid, embedding = inputs
    pad = ((0, 0), (0, 3), (0, 0), (0, 0))
    cache_k, cache_v = jnp.pad(k, pad), jnp.pad(v, pad)
    cache_pos = jnp.pad(positions, ((0, 0), (0, 3)))
    cache_valid = jnp.pad(valid, ((0, 0), (0, 3)))
    fn = dict(KERNELS, dot_product=dot_product.attend)[kernel]
    got = fn(
        q[:, -1:],
        cache_k,
        cache_v,
        positions[:, -1:],
        cache_pos,
        cache_valid,
        _no_bias,
        contextual=_hook(embedding),
    )
    full = reference.attend(
        q, k, v, positions, positions, valid, _no_bias, contextual=_hook(embedding)
    )
    np.testing.assert_allclose(got[:, 0], full[:, -1], atol=2e-5, rtol=0)


@pytest.mark.parametrize("kernel", ["reference", "blockwise", "pallas_flash"])
def test_outputs_ignore_the_future(inputs, kernel):
    """Changing the keys and values of tokens 5.. leaves the outputs of tokens 0..4."""
    q, k, v, positions, valid, embedding = inputs
    fn = KERNELS[kernel]
    noise = jnp.asarray(np.random.default_rng(3).standard_normal(k[:, 5:].shape), jnp.float32)
    before = fn(q, k, v, positions, positions, valid, _no_bias, contextual=_hook(embedding))
    after = fn(
        q,
        k.at[:, 5:].add(noise),
        v.at[:, 5:].add(noise),
        positions,
        positions,
        valid,
        _no_bias,
        contextual=_hook(embedding),
    )
    np.testing.assert_allclose(after[:, :5], before[:, :5], atol=1e-6, rtol=0)
    assert float(jnp.abs(after[:, 5:] - before[:, 5:]).max()) > 1e-2


def test_gradients_flow_through_gates_and_table(inputs):
    """The term alone: its gradient reaches k only through the gates, and the table."""
    q, k, _, positions, valid, embedding = inputs
    visible = reference.causal_mask(positions, positions, valid)
    weights = jnp.asarray(np.random.default_rng(4).standard_normal((2, 2, 9, 9)), jnp.float32)

    def loss(k, table):
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
        term = _hook(np.zeros_like(embedding)).with_params((table,)).dense(q, logits, visible)
        return jnp.sum(jnp.where(visible, term, 0.0) * weights)

    grad_k, grad_table = jax.grad(loss, argnums=(0, 1))(k, jnp.asarray(embedding, jnp.float32))
    for grad in (grad_k, grad_table):
        assert np.isfinite(grad).all() and float(jnp.abs(grad).max()) > 1e-3


@pytest.mark.parametrize("kernel", ["blockwise", "pallas_flash"])
def test_gradients_equal_the_reference(inputs, kernel):
    """Every input's gradient and the table's, through each kernel's own backward (blockwise's
    rematerialised scan; pallas_flash's custom VJP)."""
    q, k, v, positions, valid, embedding = inputs
    rows = jnp.asarray(valid)[:, :, None, None]

    def loss(fn, q, k, v, table):
        hook = _hook(embedding).with_params((table,))
        out = fn(q, k, v, positions, positions, valid, _no_bias, contextual=hook)
        return jnp.sum(jnp.where(rows, out, 0.0) * jnp.sin(jnp.arange(4.0)))

    args = (q, k, v, jnp.asarray(embedding, jnp.float32))
    expected = jax.jit(jax.grad(functools.partial(loss, reference.attend), argnums=(0, 1, 2, 3)))(
        *args
    )
    got = jax.jit(jax.grad(functools.partial(loss, KERNELS[kernel]), argnums=(0, 1, 2, 3)))(*args)
    for want, have in zip(expected, got, strict=True):
        assert float(jnp.abs(want).max()) > 1e-3
        np.testing.assert_allclose(have, want, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def long_inputs():
    """37 tokens (3 key blocks of 16, the last partial), 3 heads, row 1 left-padded by 5."""
    rng = np.random.default_rng(7)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 37, 3, 8)), jnp.float32) for _ in range(3))
    valid = np.ones((2, 37), bool)
    valid[1, :5] = False
    positions = jnp.asarray(np.maximum(np.cumsum(valid, axis=-1) - 1, 0))
    return q, k, v, positions, jnp.asarray(valid), rng.standard_normal((7, 8))


def test_pallas_gpu_form_equals_dot_product(long_inputs):
    """The Triton form in interpret mode: 16 x 16 tiles (its smallest), key blocks last to
    first, the table zero-padded to power-of-two rows."""
    q, k, v, positions, valid, embedding = long_inputs
    hook = _hook(embedding, num_heads=3)
    args = (q, k, v, positions, positions, valid, _no_bias)
    got = pallas_flash.attend(
        *args, contextual=hook, target="gpu", interpret=True, block_q=16, block_k=16
    )
    expected = dot_product.attend(*args, contextual=hook)
    rows = np.asarray(valid)
    np.testing.assert_allclose(got[rows], expected[rows], atol=2e-5, rtol=0)


# jax 0.12 deprecates the Pallas Triton backend (pallas_gpu's docstring); the warning is known.
@pytest.mark.filterwarnings("ignore:The Pallas Triton backend is deprecated:DeprecationWarning")
def test_pallas_gpu_form_lowers_for_cuda():
    """Triton lowering of the compiled form with the contextual pass (no GPU here: lowering,
    not compilation); power-of-two tensors only, no gather."""
    from tests.model.test_attention_pallas_gpu import _triton_module

    text = _triton_module(_no_bias, None, 40, contextual=_hook(np.zeros((65, 64)), num_heads=3))
    assert "tt.dot" in text and "gather" not in text


def test_bad_p_max_is_rejected():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=rf"cope p_max must be an integer >= 1, got {bad!r}$"):
            positional.build(tiny.pe_config("cope", p_max=bad), num_heads=3)


SIZES = dict(tiny.SIZES, num_layers=2)


def _model(pe_name: str, **options) -> Decoder:
    return Decoder(vocab_size=13, pe=tiny.pe_config(pe_name, **options), **SIZES)


def test_one_zero_initialised_table_per_layer():
    """Each attention layer owns `cope_embedding [p_max + 1, d_kv]`, zeros (the paper's init),
    and the optimizer's weight-decay rule knows its name."""
    tokens = jnp.zeros((1, 4), jnp.int32)
    model = _model("cope", p_max=5)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens, tokens >= 0))
    params = nn.meta.unbox(shapes["params"])
    assert "pe" not in params
    for layer in range(2):
        assert params[f"block_{layer}"]["attention"]["cope_embedding"].shape == (6, SIZES["d_kv"])
    (spec,) = positional.build(tiny.pe_config("cope"), num_heads=3).contextual_logits(8).specs
    assert not np.any(spec.init(jax.random.key(0), spec.shape))
    assert optimizer.hf_parameter_name(("block_1", "attention", "cope_embedding")) == (
        "decoder.block.1.layer.0.SelfAttention.cope.pos_emb"
    )
    assert optimizer.decay_mask(params)["block_0"]["attention"]["cope_embedding"]


def test_kv_cache_decoding_equals_full_recompute():
    """Decoder logits: a prefill, then single-token steps against the cache, equal one full
    pass, with a strong table (so contextual positions matter) and left padding."""
    model = _model("cope", p_max=4)
    tokens = jnp.asarray(np.random.default_rng(5).integers(0, 13, (2, 8)), jnp.int32)
    valid = jnp.asarray([[True] * 8, [False] * 2 + [True] * 6])
    positions = jnp.maximum(jnp.cumsum(valid, axis=-1) - 1, 0)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(1), tokens, positions, valid))
    rng = np.random.default_rng(6)

    def draw(path, leaf):  # numpy draws (no init compile); a strong CoPE table
        name = path[-1].key
        if name == "scale":
            return np.ones(leaf.shape)
        scale = 3.0 if name == "cope_embedding" else 1.0 / math.sqrt(leaf.shape[0])
        return scale * rng.standard_normal(leaf.shape)

    params = jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.asarray(draw(path, leaf), leaf.dtype),
        nn.meta.unbox(shapes["params"]),
    )
    full = jax.jit(model.apply)({"params": params}, tokens, positions, valid)

    cached = tiny.cached_logits(model, params, tokens, positions, valid, (5, 1, 1, 1), 9)
    np.testing.assert_allclose(cached[valid], full[valid], atol=1e-5, rtol=1e-5)
    # The table matters: without it (zeros) the logits change.
    zeros = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.zeros_like(x) if path[-1].key == "cope_embedding" else x, params
    )
    plain = jax.jit(model.apply)({"params": zeros}, tokens, positions, valid)
    assert float(jnp.abs(plain - full)[valid].max()) > 0.1


def test_pallas_flash_lowers_for_tpu_with_cope():
    """The compiled (not interpreted) Mosaic form with the contextual pass in the tile:
    `jax.export(..., platforms=['tpu'])` runs Pallas' Mosaic lowering on this CPU (lowering,
    not compilation: that needs a TPU)."""
    spec = jax.ShapeDtypeStruct
    args = (spec((1, 256, 3, 64), jnp.float32),) * 3 + (spec((1, 256), jnp.int32),) * 2
    args += (spec((1, 256), jnp.bool_),)
    hook = _hook(np.zeros((65, 64)), num_heads=3)

    def kernel(*arrays):
        return pallas_flash.attend(*arrays, _no_bias, contextual=hook, interpret=False)

    module = jax.export.export(jax.jit(kernel), platforms=["tpu"])(*args).mlir_module()
    assert "tpu_custom_call" in module
