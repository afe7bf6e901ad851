"""Rotary with each context-extension scaling (linear, ntk, yarn) in a Decoder: every attention
kernel gives dot_product's logits (a padded KV-cache prefill and one decoding step, as
tests/model/test_attention_kernels_decoder.py does for every PE against the reference kernel,
which dot_product matches there), and KV-cache decoding in chunks equals one full forward pass.

The scalings act in the rotate hook, before any kernel, so one jitted path per (scaling,
kernel) suffices; fraction 0.5 of d_kv 8 rotates 4 dims (ntk needs >= 4). Tolerance 1e-5:
float32 logits, sums in another order.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model.decoder import Decoder
from tests.model import tiny
from tests.model.test_attention_kernels_decoder import (
    KERNELS,
    LENGTH,
    VALID,
    VOCAB,
    _case,
    _prefill_and_step,
    small_blocks,  # noqa: F401 (autouse: small kernel blocks here too)
)

TOLERANCE = 1e-5
SCALINGS = {
    "linear": dict(scaling="linear", scaling_factor=2.0),
    "ntk": dict(scaling="ntk", scaling_factor=2.0),
    # theta = [1, 0.01], L = 64: r = L theta / (2 pi) = [10.2, 0.1], so pair 0 is on the ramp
    # (gamma 0.30) and pair 1 interpolated; plus the temperature.
    "yarn": dict(scaling="yarn", scaling_factor=3.0, original_max_position=64),
}


def _model(scaling: str, kernel: str) -> Decoder:
    pe = tiny.pe_config("rotary", fraction=0.5, **SCALINGS[scaling])
    sizes = dict(tiny.SIZES, num_layers=1)
    return Decoder(vocab_size=VOCAB, pe=pe, attention_impl=kernel, **sizes)


@pytest.fixture(scope="module", params=list(SCALINGS))
def case(request):
    """(scaling, params, inputs, dot_product's logits of prefill and step)."""
    return request.param, *_case(_model(request.param, "dot_product"))


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k != "dot_product"])
def test_kernel_matches_dot_product(case, kernel):
    scaling, params, inputs, (prefill, step) = case
    got_prefill, got_step = jax.jit(functools.partial(_prefill_and_step, _model(scaling, kernel)))(
        params, *inputs
    )
    np.testing.assert_allclose(got_prefill[VALID], prefill[VALID], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(got_step, step, atol=TOLERANCE, rtol=0)


def test_kv_cache_decoding_equals_full_recompute(case):
    scaling, params, _, _ = case
    model = _model(scaling, "reference")
    valid = jnp.asarray(VALID)
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, VOCAB, VALID.shape), jnp.int32)
    positions = jnp.maximum(jnp.cumsum(valid, axis=-1) - 1, 0)
    full = jax.jit(model.apply)({"params": params}, tokens, positions, valid)

    # Chunks of 4, 4, 3: a prefill, then more of the sequence.
    cached = tiny.cached_logits(model, params, tokens, positions, valid, (4, 4, 3), LENGTH)
    np.testing.assert_allclose(cached[VALID], full[VALID], atol=TOLERANCE, rtol=0)


@pytest.fixture(scope="module")
def plain_prefill():
    """The plain rotary's prefill logits on the same params and inputs (one compile)."""
    model = Decoder(
        vocab_size=VOCAB,
        pe=tiny.pe_config("rotary", fraction=0.5),
        attention_impl="dot_product",
        **dict(tiny.SIZES, num_layers=1),
    )
    return jax.jit(functools.partial(_prefill_and_step, model))


def test_the_scaling_changes_the_logits(case, plain_prefill):
    """Teeth: the scaled model's logits differ from the plain rotary's on the same params."""
    _, params, inputs, (prefill, _) = case
    plain, _ = plain_prefill(params, *inputs)
    assert np.abs(np.asarray(plain - prefill))[VALID].max() > 1e-3
