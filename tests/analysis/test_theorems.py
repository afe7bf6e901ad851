"""Tests of lenggen/analysis/theorems.py: Theorems 1 and 2 hold in this repo's Decoder.

Tolerances: recovered positions within 0.01 of t (float32 sums over 1,000 feed-forward units;
the theorem needs < 0.5 for exact rounding); layer-2 logits (magnitude up to 62.5) within 1e-3.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.analysis import theorems
from lenggen.model.positional import alibi_slopes
from lenggen.model.positional.alibi import ALiBi

MAX_POSITION = 1000


@pytest.fixture(scope="module")
def construction():
    return theorems.build(MAX_POSITION)


@pytest.fixture(scope="module")
def trace(construction):
    # Two different contents after the first token, positions 0..1000.
    return theorems.run(construction, theorems.example_tokens(MAX_POSITION + 1, batch=2))


def test_first_layer_is_uniform_causal_attention(construction, trace):
    attention = construction.params["block_0"]["attention"]
    assert not np.asarray(attention["query"]).any() and not np.asarray(attention["key"]).any()
    weights = trace.layer1_weights[:, :, :50, :50]  # [batch, heads, 50, 50]
    t = np.arange(50)
    expected = np.where(t[None, :] <= t[:, None], 1.0 / (t[:, None] + 1), 0.0)
    np.testing.assert_allclose(weights, np.broadcast_to(expected, weights.shape), atol=1e-7)


def test_theorem_1_position_t_is_recovered_exactly_up_to_1000(trace):
    recovered = theorems.recovered_positions(trace)  # [2, 1001]
    t = np.arange(MAX_POSITION + 1)
    assert np.abs(recovered - t).max() < 0.01
    np.testing.assert_array_equal(np.rint(recovered), np.broadcast_to(t, recovered.shape))
    # Attention wrote 1 / (t + 1): the quantity the feed-forward layer inverts.
    np.testing.assert_allclose(trace.hidden[0, :, theorems.ATTENDED_DIM], 1.0 / (t + 1), rtol=1e-6)


def test_recovery_ends_at_the_feed_forward_width():
    # Width T: beyond position T the last linear piece continues, f(t) = 2T - T(T+1)/(t+1).
    small = theorems.build(50)
    recovered = theorems.recovered_positions(theorems.run(small, theorems.example_tokens(80)))[0]
    np.testing.assert_allclose(recovered[:51], np.arange(51), atol=1e-3)
    assert recovered[79] == pytest.approx(100 - 50 * 51 / 80, abs=1e-3)  # 68.125, not 79


def test_theorem_2_logits_are_alibi_and_shift_invariant(construction, trace):
    logits = theorems.layer2_logits(construction, trace)  # [2, heads, 1001, 1001]
    slopes = np.asarray(alibi_slopes(2))
    assert construction.slopes == tuple(slopes)  # 2^-4, 2^-8
    i = np.arange(MAX_POSITION + 1)
    expected = -slopes[:, None, None] * (i[:, None] - i[None, :])
    np.testing.assert_allclose(logits[0], expected, atol=1e-3)
    # Shift invariance: logit(i + s, j + s) = logit(i, j), for s = 1 and s = 700.
    for shift in (1, 700):
        np.testing.assert_allclose(
            logits[:, :, shift:, shift:], logits[:, :, :-shift, :-shift], atol=2e-3
        )
    # ... and equal to this repo's ALiBi PE bias on the causal entries.
    positions = jnp.asarray(i[None, :200])
    bias = np.asarray(ALiBi(num_heads=2).bias(positions, positions))[0]
    causal = np.tril(np.ones((200, 200), bool))
    np.testing.assert_allclose(logits[1][:, :200, :200][:, causal], bias[:, causal], atol=1e-3)


def test_theorem_2_attention_weights_are_alibi_softmax(construction, trace):
    weights = trace.layer2_weights[0, :, :300, :300]
    i = np.arange(300)
    distance = i[:, None] - i[None, :]
    for head, slope in enumerate(construction.slopes):
        scores = np.where(distance >= 0, np.exp(-slope * distance.clip(0)), 0.0)
        np.testing.assert_allclose(weights[head], scores / scores.sum(-1, keepdims=True), atol=1e-5)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="expected max_position >= 1 and num_heads >= 1, got 0, 2"):
        theorems.build(0)
