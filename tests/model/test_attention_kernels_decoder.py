"""Every attention kernel in a Decoder, for every PE: the logits equal the reference kernel's.

One jitted path per (PE, kernel), with the same parameters: a KV-cache prefill of a padded
batch (one full row, one right-padded, one left-padded; positions cumsum(valid) - 1), whose
logits are those of a plain padded forward pass, then one single-token decoding step (q_len 1
against the cache, one slot still empty).
Tolerance: float32 logits agree to 1e-5 (the kernels differ from the reference only in the
order of the softmax sums; logits are O(1)). Pallas runs in interpret mode on the CPU.
Block sizes are shrunk (kernels' keyword defaults are 128) so these short sequences span
several blocks, partial last blocks included.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model import attention, kv_cache, positional
from lenggen.model.attention import blockwise, pallas_flash
from lenggen.model.decoder import Decoder
from tests.model import tiny

VOCAB, LENGTH = 19, 11
TOLERANCE = 1e-5
# `auto` is `reference` on the CPU at these lengths: test_attention_auto.py covers its choice.
KERNELS = tuple(name for name in attention.names() if name not in ("reference", "auto"))
# Example 0 full; 1 right-padded (last 4 pads); 2 left-padded (first 3 pads).
VALID = np.array([[1] * 11, [1] * 7 + [0] * 4, [0] * 3 + [1] * 8], bool)

# Small blocks for the tests, applied through the registry the Decoder reads.
SMALL_BLOCKS = {
    "blockwise": functools.partial(blockwise.attend, block_q=4, block_k=4),
    "pallas_flash": functools.partial(pallas_flash.attend, block_q=4, block_k=4),
}


@pytest.fixture(autouse=True, scope="module")
def small_blocks():
    with pytest.MonkeyPatch.context() as patch:
        for name, kernel in SMALL_BLOCKS.items():
            patch.setitem(attention._KERNELS, name, kernel)
        yield


def _model(pe_name: str, kernel: str) -> Decoder:
    sizes = dict(tiny.SIZES, num_layers=1)
    return Decoder(vocab_size=VOCAB, pe=tiny.pe_config(pe_name), attention_impl=kernel, **sizes)


def _random_params(model: Decoder):
    """numpy draws (no init compile); sharp attention and unit-scale position tables, so the
    logits depend on the context and the positions."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens, tokens >= 0))
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        name = path[-1].key
        if name == "scale":
            return 1.0 + 0.1 * rng.standard_normal(leaf.shape)
        if name in ("embedding", "rel_embedding"):
            return rng.standard_normal(leaf.shape)
        fan_in = math.prod(leaf.shape[:2]) if name == "out" else leaf.shape[0]
        gain = 3.0 if name in ("query", "key") else 1.0
        return gain / math.sqrt(fan_in) * rng.standard_normal(leaf.shape)

    params = nn.meta.unbox(abstract["params"])
    return jax.tree_util.tree_map_with_path(lambda p, s: jnp.asarray(draw(p, s), s.dtype), params)


def _prefill_and_step(model: Decoder, params, tokens, valid, next_token):
    """(prefill logits `[3, LENGTH, VOCAB]`, step logits `[3, VOCAB]`)."""
    positions = jnp.maximum(jnp.cumsum(valid, axis=-1) - 1, 0)
    cache = kv_cache.init_cache(model, tokens.shape[0], LENGTH + 2)
    prefill, state = model.apply(
        {"params": params, "cache": cache},
        tokens,
        positions,
        valid,
        decode=True,
        mutable=["cache"],
    )
    step, _ = model.apply(
        {"params": params, "cache": state["cache"]},
        next_token[:, None],
        valid.sum(axis=-1, keepdims=True),
        jnp.ones((3, 1), bool),
        decode=True,
        mutable=["cache"],
    )
    return prefill, step[:, 0]


def _case(model: Decoder):
    """(random params, inputs (tokens, valid, next token), `model`'s logits of both paths)."""
    params = _random_params(model)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, VOCAB, (3, LENGTH + 1)), jnp.int32)
    inputs = (tokens[:, :LENGTH], jnp.asarray(VALID), tokens[:, LENGTH])
    expected = jax.jit(functools.partial(_prefill_and_step, model))(params, *inputs)
    return params, inputs, expected


@pytest.fixture(scope="module", params=positional.names())
def pe_case(request):
    """(pe name, params, inputs, reference-kernel logits of both paths)."""
    return request.param, *_case(_model(request.param, "reference"))


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_matches_reference_in_decoder(pe_case, kernel):
    pe_name, params, inputs, (prefill, step) = pe_case
    model = _model(pe_name, kernel)
    got_prefill, got_step = jax.jit(functools.partial(_prefill_and_step, model))(params, *inputs)
    rows = VALID  # logits of pad tokens are meaningless; compare real tokens
    np.testing.assert_allclose(got_prefill[rows], prefill[rows], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(got_step, step, atol=TOLERANCE, rtol=0)
    # The comparison has teeth: the logits vary with context and position.
    assert np.abs(np.diff(np.asarray(prefill[0]), axis=0)).max() > 0.1


def _has_pe_params(pe_name: str) -> bool:
    tokens = jnp.zeros((1, 1), jnp.int32)
    model = _model(pe_name, "reference")
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens, tokens >= 0))
    return "pe" in shapes["params"]


# PEs with learned parameters (T5's table, FIRE's MLP), whose gradients must pass through a
# kernel's own backward code. pallas_flash's custom VJP runs blockwise's backward (its scan with
# rematerialised blocks) on the bias evaluated tile by tile, so it covers both kernels' code.
LEARNED_PES = tuple(name for name in positional.names() if _has_pe_params(name))


def _loss(model: Decoder, params, tokens, valid):
    """Next-token cross entropy over the real tokens."""
    positions = jnp.maximum(jnp.cumsum(valid, axis=-1) - 1, 0)
    logits = model.apply({"params": params}, tokens, positions, valid)
    log_probs = jnp.take_along_axis(
        jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], axis=-1
    )[..., 0]  # -> [batch, length - 1]
    return -(log_probs * (valid[:, 1:] & valid[:, :-1])).sum()


@pytest.mark.parametrize("pe_name", LEARNED_PES)
def test_pallas_flash_gradients_match_reference_in_decoder(pe_name):
    """Every parameter's gradient, the PE's included; tolerance 1e-4 relative to the largest
    gradient entry of each parameter (float32 sums in another order)."""
    params = _random_params(_model(pe_name, "reference"))
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, VOCAB, (3, LENGTH)), jnp.int32)
    inputs = (tokens, jnp.asarray(VALID))
    grads = {
        name: jax.jit(jax.grad(functools.partial(_loss, _model(pe_name, name))))(params, *inputs)
        for name in ("reference", "pallas_flash")
    }
    for expected, got in zip(
        jax.tree.leaves(grads["reference"]), jax.tree.leaves(grads["pallas_flash"]), strict=True
    ):
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(got, expected, atol=1e-4 * max(scale, 1.0), rtol=0)
    # The PE's parameters do get a gradient (through the bias in every tile).
    assert float(np.abs(jax.tree.leaves(grads["reference"]["pe"])[0]).max()) > 1e-3
