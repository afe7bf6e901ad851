"""The KV cache: per-layer keys, values, positions and valid flags in Linen's 'cache' collection.

Each attention layer keeps
    cached_key, cached_value  [batch, max_length, heads, head_dim]  (keys already rotated)
    cached_positions          [batch, max_length] int32
    cached_valid              [batch, max_length] bool (False on empty slots and on padding)
    cache_index               [] int32, the next free slot (shared by the batch).
A call with `decode=True` of T tokens (a prefill of T > 1 or a single step) writes them at
`cache_index` and attends over the whole buffer; empty slots are invalid keys, so the
positional causal mask of the kernel needs no index arithmetic.

Creating a cache: `init_cache(model, batch, max_length)` (zeros; the same as
`model.init(..., tokens [batch, max_length], decode=True)['cache']` without running the model).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def update(
    module: nn.Module, k: jax.Array, v: jax.Array, positions: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Appends this call's keys and values to `module`'s cache; returns the whole cache.

    Inside `model.init` the cache is created with the input's length as its size and the input
    is returned unchanged; outside it, a missing cache is an error.

    Args:
      module: the attention module owning the cache variables.
      k, v: `[batch, length, heads, head_dim]`.
      positions: `[batch, length]` int32.
      valid: `[batch, length]` bool.
    Returns:
      (k, v) `[batch, max_length, heads, head_dim]`, positions `[batch, max_length]` int32,
      valid `[batch, max_length]` bool.
    """
    initialized = module.has_variable("cache", "cached_key")
    if not initialized and not module.is_initializing():
        # Creating an empty cache here would silently attend to nothing but this call.
        raise ValueError(
            "decode=True needs a KV cache: pass {'params': ..., 'cache': "
            "kv_cache.init_cache(model, batch, max_length)} to model.apply, got no 'cache'"
        )
    cached_key = module.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
    cached_value = module.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
    cached_positions = module.variable(
        "cache", "cached_positions", jnp.zeros, positions.shape, jnp.int32
    )
    cached_valid = module.variable("cache", "cached_valid", jnp.zeros, valid.shape, jnp.bool_)
    cache_index = module.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
    if not initialized:
        return k, v, positions, valid

    max_length, length = cached_key.value.shape[1], k.shape[1]
    if length > max_length:
        raise ValueError(f"a decode call of {length} tokens exceeds the cache of {max_length}")
    index = cache_index.value
    # Writing past the end would be clamped by dynamic_update_slice and overwrite the last
    # slots; callers size the cache for prompt + new tokens (see decoding.py).
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, k, (0, index, 0, 0))
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, v, (0, index, 0, 0))
    cached_positions.value = jax.lax.dynamic_update_slice(
        cached_positions.value, positions.astype(jnp.int32), (0, index)
    )
    cached_valid.value = jax.lax.dynamic_update_slice(cached_valid.value, valid, (0, index))
    cache_index.value = index + length
    return cached_key.value, cached_value.value, cached_positions.value, cached_valid.value


def init_cache(model: nn.Module, batch: int, max_length: int):
    """An empty cache for `model` (a Decoder) of `max_length` slots per example.

    Uses `jax.eval_shape`, so no parameters are initialised and nothing runs.

    Returns:
      The 'cache' collection, all zeros: pass it as `{'params': ..., 'cache': cache}` to
      `model.apply(..., decode=True, mutable=['cache'])`.
    """
    if batch < 1 or max_length < 1:
        raise ValueError(f"batch and max_length must be >= 1, got {batch} and {max_length}")
    tokens = jnp.zeros((batch, max_length), jnp.int32)
    valid = jnp.ones((batch, max_length), jnp.bool_)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), tokens, tokens, valid, decode=True)["cache"]
    )
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
