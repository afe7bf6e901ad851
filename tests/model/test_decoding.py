"""Tests of lenggen/model/decoding.py (and the KV cache through the Decoder), for every PE, at
positions 0, 1, ... and at randomized positions (a `position_table`).

Tolerance: float32 logits of the cached and the recomputed paths agree to 1e-5 (they differ
only by the summation order over padded key buffers).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model import positional
from lenggen.model.decoder import Decoder
from lenggen.model.decoding import full_recompute_greedy_decode, greedy_decode, prompt_positions
from lenggen.model.positional import randomized
from tests.model import tiny

VOCAB = 17
NEVER = VOCAB  # an id the model cannot emit: decoding never stops early
# Left-padded ragged prompts: no pad, 2 pads, 5 pads.
PROMPT_VALID = np.array([[1] * 6, [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]], bool)


def _model(variant: str) -> Decoder:
    return Decoder(vocab_size=VOCAB, pe=tiny.pe_config(variant), **tiny.SIZES)


def _random_params(model: Decoder, seed: int = 0):
    """Parameters drawn with numpy (no init compile), with sharp attention (q, k 3x their
    fan-in scale) and strong position tables, so outputs depend on context and position."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens, tokens >= 0))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "scale":
            return 1.0 + 0.1 * rng.standard_normal(leaf.shape)
        if name in ("embedding", "rel_embedding"):
            return (2.0 if path[0].key == "pe" else 1.0) * rng.standard_normal(leaf.shape)
        fan_in = math.prod(leaf.shape[:2]) if name == "out" else leaf.shape[0]
        gain = 3.0 if name in ("query", "key") else 1.0
        return gain / math.sqrt(fan_in) * rng.standard_normal(leaf.shape)

    params = nn.meta.unbox(abstract["params"])
    return jax.tree_util.tree_map_with_path(lambda p, s: jnp.asarray(draw(p, s), s.dtype), params)


@pytest.fixture(scope="module", params=positional.names())
def setup(request):
    model = _model(request.param)
    return request.param, model, _random_params(model)


@pytest.fixture(scope="module")
def prompts():
    tokens = np.random.default_rng(1).integers(0, VOCAB, PROMPT_VALID.shape)
    return jnp.asarray(tokens, jnp.int32), jnp.asarray(PROMPT_VALID)


def test_prompt_positions_start_at_zero_after_the_pads():
    valid = jnp.array([[False, False, True, True, True], [True, True, True, True, True]])
    assert prompt_positions(valid).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    # With a table, rank r reads entry r (pads: rank 0; past the end: the last entry).
    table = jnp.array([[4, 9, 11], [0, 2, 3]])
    assert prompt_positions(valid, table).tolist() == [[4, 4, 4, 9, 11], [0, 2, 3, 3, 3]]


def test_kv_cache_logits_equal_full_recompute(setup):
    _, model, params = setup
    rng = np.random.default_rng(2)
    valid = jnp.asarray(np.concatenate([PROMPT_VALID, np.ones((3, 4), bool)], axis=1))  # [3, 10]
    tokens = jnp.asarray(rng.integers(0, VOCAB, valid.shape), jnp.int32)
    positions = prompt_positions(valid)
    full = jax.jit(model.apply)({"params": params}, tokens, positions, valid)

    # A prefill, a second multi-token call, single steps.
    cached = tiny.cached_logits(model, params, tokens, positions, valid, (3, 3, 1, 1, 1, 1), 10)
    assert cached.shape == full.shape == (3, 10, VOCAB)
    np.testing.assert_allclose(cached[valid], full[valid], atol=1e-5, rtol=1e-5)


def test_greedy_equals_full_recompute(setup, prompts):
    variant, model, params = setup
    cached = greedy_decode(model, params, *prompts, max_new_tokens=8, eos_id=NEVER)
    recomputed = full_recompute_greedy_decode(
        model, params, *prompts, max_new_tokens=8, eos_id=NEVER
    )
    assert cached.shape == (3, 8) and cached.dtype == jnp.int32
    np.testing.assert_array_equal(cached, recomputed)


@pytest.fixture(scope="module")
def learned():
    """The learned APE: its output changes with any position error in the decoding loops."""
    model = _model("ape_learned")
    return model, _random_params(model)


def test_outputs_depend_on_position(learned, prompts):
    # Guards the tests below: a model that repeated one token could hide a position bug.
    out = greedy_decode(*learned, *prompts, max_new_tokens=8, eos_id=NEVER)
    assert all(len(set(row)) >= 3 for row in out.tolist())


@pytest.mark.parametrize("decode", [greedy_decode, full_recompute_greedy_decode])
def test_eos_then_eos_forever(learned, prompts, decode):
    free = np.asarray(decode(*learned, *prompts, max_new_tokens=8, eos_id=NEVER))
    eos = int(free[0, 3])  # a token emitted mid-sequence by example 0
    expected = free.copy()
    for row in expected:
        hits = np.flatnonzero(row == eos)
        if hits.size:
            row[hits[0] :] = eos
    got = decode(*learned, *prompts, max_new_tokens=8, eos_id=eos)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("decode", [greedy_decode, full_recompute_greedy_decode])
def test_padding_does_not_change_an_example(learned, prompts, decode):
    # Example 2 (5 pads, 1 real token) decoded alone and unpadded: same tokens. Its second
    # token as EOS also stops the loop early for the whole (single-example) batch.
    tokens, valid = prompts
    batch = np.asarray(decode(*learned, tokens, valid, max_new_tokens=8, eos_id=NEVER))
    alone = decode(*learned, tokens[2:, 5:], valid[2:, 5:], max_new_tokens=8, eos_id=NEVER)
    np.testing.assert_array_equal(alone[0], batch[2])
    eos = int(batch[2, 1])
    first = int(np.flatnonzero(batch[2] == eos)[0])
    stopped = decode(*learned, tokens[2:, 5:], valid[2:, 5:], max_new_tokens=8, eos_id=eos)
    np.testing.assert_array_equal(stopped[0, : first + 1], batch[2, : first + 1])
    assert (np.asarray(stopped[0, first:]) == eos).all()


# Randomized positions: M = 48 >= prompt (6) + new tokens (8), within the learned APE's 64.
M = 48


@pytest.fixture(scope="module", params=["rotary", "t5", "ape_learned"])
def randomized_setup(request, prompts):
    """A PE of each hook that reads positions (q/k, logit bias, embeddings) and the prompts'
    randomized position tables."""
    model = _model(request.param)
    table = randomized.decoding_table(*prompts, max_position=M, max_new_tokens=8)
    return model, _random_params(model), table


def test_greedy_equals_full_recompute_at_randomized_positions(randomized_setup, prompts):
    model, params, table = randomized_setup
    assert table.shape == (3, 14) and int(table.max()) < M
    cached = greedy_decode(model, params, *prompts, 8, NEVER, position_table=table)
    recomputed = full_recompute_greedy_decode(model, params, *prompts, 8, NEVER, table)
    np.testing.assert_array_equal(cached, recomputed)
    # The table is what the model saw: a recompute at positions table[rank] gives every
    # generated token as its argmax.
    tokens = jnp.concatenate([prompts[0], cached], axis=1)  # -> [3, 14]
    valid = jnp.concatenate([prompts[1], jnp.ones((3, 8), bool)], axis=1)
    positions = randomized.positions_from_table(table, valid)
    logits = model.apply({"params": params}, tokens, positions, valid)
    np.testing.assert_array_equal(jnp.argmax(logits[:, 5:-1], axis=-1), cached)


def test_a_position_table_changes_the_output(learned, prompts):
    # The learned APE at the default positions 0, 1, ... and at a randomized table: the table
    # reaches the model in both decoding loops (rank -> table entry, not the rank itself).
    table = randomized.decoding_table(*prompts, max_position=M, max_new_tokens=8)
    default = greedy_decode(*learned, *prompts, max_new_tokens=8, eos_id=NEVER)
    at_table = greedy_decode(*learned, *prompts, 8, NEVER, position_table=table)
    assert (np.asarray(default) != np.asarray(at_table)).any()
    ranks = jnp.broadcast_to(jnp.arange(14), (3, 14))  # the table of the default positions
    np.testing.assert_array_equal(
        greedy_decode(*learned, *prompts, 8, NEVER, position_table=ranks), default
    )


@pytest.mark.parametrize("decode", [greedy_decode, full_recompute_greedy_decode])
def test_bad_arguments(learned, prompts, decode):
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        decode(*learned, *prompts, max_new_tokens=0, eos_id=1)
    tokens, valid = prompts
    message = r"must both be \[batch, length\], got \(3, 6\) and \(3, 5\)"
    with pytest.raises(ValueError, match=message):
        decode(*learned, tokens, valid[:, 1:], max_new_tokens=2, eos_id=1)
    for table, got in (
        (jnp.zeros((2, 14), jnp.int32), r"int32 \(2, 14\)"),
        (jnp.zeros((3, 14), jnp.float32), r"float32 \(3, 14\)"),
    ):
        message = r"position_table must be an integer \[batch=3, width >= 1\] array, got " + got
        with pytest.raises(ValueError, match=message):
            decode(*learned, *prompts, 2, 1, position_table=table)
