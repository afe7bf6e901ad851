"""Tests of lenggen/model/positional/abacus.py: the embedding of hand-worked digit indices, the
training offset, option errors, and KV-cache decoding of digit runs that span calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model import kv_cache, positional
from lenggen.model.decoder import Decoder
from lenggen.model.decoding import prompt_positions
from lenggen.model.positional.abacus import Abacus
from tests.model import tiny

D_MODEL = 5
# E[k, c] = 10 k + c: every row tells its index.
TABLE = 10.0 * np.arange(12)[:, None] + np.arange(D_MODEL)[None, :]


def _embed(runs, *, offset_max=0, rngs=None):
    pe = Abacus(num_heads=3, max_k=12, offset_max=offset_max)
    x = jnp.zeros(runs.shape + (D_MODEL,), jnp.float32)
    params = {"params": {"embedding": jnp.asarray(TABLE, jnp.float32)}}
    return pe.apply(params, x, runs, method=Abacus.embed, rngs=rngs)


def test_digits_read_their_index_and_non_digits_row_0():
    # "2 1 + 5 4 3 = 7 5 3" (12 + 345 = 357, least-significant digit first): digit runs
    # 1 2 0 1 2 3 0 1 2 3 (tests/model/test_digit_runs.py).
    runs = jnp.asarray([[1, 2, 0, 1, 2, 3, 0, 1, 2, 3]], jnp.int32)
    out = _embed(runs)
    assert out[0, :, 0].tolist() == [10, 20, 0, 10, 20, 30, 0, 10, 20, 30]
    np.testing.assert_array_equal(out[0, 5], [30, 31, 32, 33, 34])


def test_index_past_the_table_is_nan():
    out = _embed(jnp.asarray([[11, 12]], jnp.int32))
    assert out[0, 0, 0] == 110 and bool(jnp.all(jnp.isnan(out[0, 1])))


def test_training_offset_shifts_digits_only_one_draw_per_example():
    runs = jnp.asarray([[1, 2, 0, 1, 2, 3, 0]] * 64, jnp.int32)
    out = _embed(runs, offset_max=2, rngs={"dropout": jax.random.key(3)})
    first = out[:, :, 0] / 10  # the row index each token read
    offsets = first[:, 0] - 1  # -> [64]
    expected = jnp.where(runs > 0, runs + offsets[:, None], 0)
    np.testing.assert_array_equal(first, expected)
    # Uniform over 0..2: all three values occur in 64 draws (each misses w.p. (2/3)^64).
    assert sorted(set(offsets.tolist())) == [0, 1, 2]
    # Evaluation (no 'dropout' rng): no offset.
    np.testing.assert_array_equal(_embed(runs, offset_max=2)[:, :, 0] / 10, runs)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(max_k=1), "abacus max_k must be >= 2"),
        (dict(max_k=10, offset_max=9), r"abacus offset_max must be in \[0, max_k - 2\] = \[0, 8\]"),
        (dict(offset_max=-1), "abacus offset_max must be in"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        positional.build(tiny.pe_config("abacus", **options), num_heads=3)


@pytest.mark.parametrize("name", ["abacus", "coupling"])
def test_cached_decoding_continues_digit_runs(name):
    """Logits of chunked KV-cache calls equal the full pass when digit runs cross the chunks."""
    model = Decoder(vocab_size=17, pe=tiny.pe_config(name), **tiny.SIZES)
    # Digits are ids 3..8 (tiny.SIZES). Row 0: a run of 5 digits across the first two calls,
    # then one of 4 across single-token calls; row 1: left-padded, a run of 4 across calls.
    tokens = jnp.asarray(
        [[3, 4, 5, 6, 7, 2, 8, 8, 8, 8], [0, 0, 2, 3, 9, 4, 5, 6, 7, 2]], jnp.int32
    )
    valid = tokens > 0
    positions = prompt_positions(valid)
    params = model.init(jax.random.key(0), tokens, positions, valid)["params"]
    full = model.apply({"params": params}, tokens, positions, valid)
    cache, pieces, start = kv_cache.init_cache(model, batch=2, max_length=10), [], 0
    for length in (3, 3, 1, 1, 1, 1):
        chunk = slice(start, start + length)
        logits, state = model.apply(
            {"params": params, "cache": cache},
            tokens[:, chunk],
            positions[:, chunk],
            valid[:, chunk],
            decode=True,
            mutable=["cache"],
        )
        cache, start = state["cache"], start + length
        pieces.append(logits)
    np.testing.assert_allclose(jnp.concatenate(pieces, 1)[valid], full[valid], atol=1e-5)
    # The cache ends on each row's last index: row 0's last run has 4 digits, row 1 ends on
    # a non-digit (id 2).
    assert cache["digit_run"].tolist() == [4, 0]


def test_decoder_gives_the_embed_hook_digit_runs():
    """The decoder hands abacus digit runs, not positions: three leading non-digits shift the
    positions but leave each digit's index."""
    pe_config = tiny.pe_config("abacus")
    model = Decoder(vocab_size=17, pe=pe_config, **tiny.SIZES)
    tokens = jnp.asarray([[2, 2, 2, 3, 4, 2, 5, 6, 7, 2]], jnp.int32)
    valid = tokens > 0
    runs = model.apply(
        {},
        positional.build(pe_config, 3, 16),
        tokens,
        prompt_positions(valid),
        valid,
        False,
        method=Decoder._embed_input,
    )
    assert runs.tolist() == [[0, 0, 0, 1, 2, 0, 1, 2, 3, 0]]
