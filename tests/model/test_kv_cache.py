"""Tests of lenggen/model/kv_cache.py: appending to the cache and creating an empty one."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model import kv_cache
from lenggen.model.decoder import Decoder
from tests.model import tiny


class _Cached(nn.Module):
    """Just the cache: returns what `update` returns."""

    @nn.compact
    def __call__(self, k, v, positions, valid):
        return kv_cache.update(self, k, v, positions, valid)


def _entries(batch, length, offset):
    """Distinct recognisable values: k `[batch, length, 3, 2]`, v = -k, positions, valid."""
    k = offset + jnp.arange(batch * length * 6, dtype=jnp.float32).reshape(batch, length, 3, 2)
    positions = offset + jnp.arange(batch * length, dtype=jnp.int32).reshape(batch, length)
    valid = positions % 3 != 0
    return k, -k, positions, valid


def test_init_creates_an_empty_cache_and_returns_the_input():
    module = _Cached()
    entries = _entries(2, 5, 0)
    out, variables = module.init_with_output(jax.random.key(0), *entries)
    for got, want in zip(out, entries):
        np.testing.assert_array_equal(got, want)
    cache = variables["cache"]
    assert cache["cached_key"].shape == (2, 5, 3, 2) and cache["cached_value"].shape == (2, 5, 3, 2)
    assert cache["cached_positions"].dtype == jnp.int32
    assert cache["cached_positions"].shape == (2, 5)
    assert cache["cached_valid"].dtype == jnp.bool_ and not cache["cached_valid"].any()
    assert int(cache["cache_index"]) == 0


def test_prefill_then_step_append_at_the_index():
    module = _Cached()
    cache = module.init(jax.random.key(0), *_entries(2, 5, 0))["cache"]
    first, second = _entries(2, 3, 100), _entries(2, 1, 200)
    _, state = module.apply({"cache": cache}, *first, mutable=["cache"])
    (k, v, positions, valid), state = module.apply(state, *second, mutable=["cache"])
    assert int(state["cache"]["cache_index"]) == 4
    np.testing.assert_array_equal(k[:, :3], first[0])
    np.testing.assert_array_equal(k[:, 3:4], second[0])
    np.testing.assert_array_equal(k[:, 4], 0.0)
    np.testing.assert_array_equal(v[:, :3], first[1])
    np.testing.assert_array_equal(positions[:, :4], jnp.concatenate([first[2], second[2]], axis=1))
    np.testing.assert_array_equal(valid[:, :4], jnp.concatenate([first[3], second[3]], axis=1))
    assert not valid[:, 4].any()  # the empty slot is never a valid key


def test_a_call_longer_than_the_cache_is_rejected():
    module = _Cached()
    cache = module.init(jax.random.key(0), *_entries(1, 3, 0))["cache"]
    with pytest.raises(ValueError, match="a decode call of 4 tokens exceeds the cache of 3"):
        module.apply({"cache": cache}, *_entries(1, 4, 0), mutable=["cache"])


def test_decoding_without_a_cache_is_rejected():
    entries = _entries(1, 3, 0)
    with pytest.raises(ValueError, match="decode=True needs a KV cache.*got no 'cache'"):
        _Cached().apply({}, *entries, mutable=["cache"])


def _decoder(name="t5"):
    return Decoder(vocab_size=17, pe=tiny.pe_config(name), **tiny.SIZES)


def test_init_cache_matches_init_with_decode():
    model = _decoder()
    cache = kv_cache.init_cache(model, batch=3, max_length=11)
    tokens = jnp.zeros((3, 11), jnp.int32)
    reference = jax.eval_shape(
        lambda: model.init(jax.random.key(0), tokens, tokens, tokens > 0, decode=True)["cache"]
    )
    assert jax.tree.structure(cache) == jax.tree.structure(reference)
    for got, want in zip(jax.tree.leaves(cache), jax.tree.leaves(reference)):
        assert (got.shape, got.dtype) == (want.shape, want.dtype)
        assert not np.asarray(got).any()
    layer = cache["block_1"]["attention"]
    assert layer["cached_key"].shape == (3, 11, 3, 8)
    assert layer["cached_valid"].shape == (3, 11)


def test_init_cache_rejects_empty_sizes():
    with pytest.raises(ValueError, match="batch and max_length must be >= 1, got 2 and 0"):
        kv_cache.init_cache(_decoder(), batch=2, max_length=0)
