"""Randomized positions (Ruoss et al. 2023): train on positions a longer sequence would have.

facts.md: sample T sorted distinct positions from [0, M), M >= the longest test length, and use
them in place of 0..T-1. Every position-based PE then meets, during training, the positions and
distances of test lengths up to M. It is not a PE but a change of the position arrays, so it
serves every PE through the explicit `positions` the model already takes (DESIGN.md); NoPE is
unaffected by construction (its attention sees only the order of positions, which is kept).

Sampling, per example with n valid tokens: a uniformly random n-subset of [0, M), sorted, given
to the valid tokens in order; a pad takes the position of the nearest valid token before it (the
first valid token's for leading pads), as `cumsum(valid) - 1` does for standard positions. The
reference implementation (google-deepmind/randomized_positional_encodings,
`noisy_fixed_positional_encodings`) draws one subset per batch, its batches holding one length;
here each example draws its own, since a padded batch mixes lengths.

At evaluation the reference samples too: its models draw fresh positions on every call
(`hk.next_rng_key()` inside the model) and its range evaluation passes a new rng per batch.
`example_keys` gives evaluation a key per example derived from its tokens, so an example's
positions (and verdict) do not depend on the batch it lands in.

Config: `model.pe.randomized_max_position` = M (0: off), read by `max_position_of`.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

CONFIG_KEY = "randomized_max_position"
# An odd multiplier for the per-example token hash (Knuth's multiplicative hashing constant).
_HASH_MULTIPLIER = 2654435761


def max_position_of(pe_config: Mapping[str, Any]) -> int:
    """M from a PE config (`model.pe`); 0 (off) when the key is absent, as in older configs."""
    value = pe_config.get(CONFIG_KEY, 0) if hasattr(pe_config, "get") else 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(
            f"model.pe.{CONFIG_KEY} must be a non-negative integer (0: off), got {value!r}"
        )
    return value


def check_fits(max_position: int, longest_sequence: int, pe_limit: int | None) -> None:
    """Raises ValueError unless M can serve every sequence and the PE can represent M - 1.

    Args:
      max_position: M (0 means off: nothing to check).
      longest_sequence: tokens of the longest sequence the model trains on or is evaluated on
        (padded training width and evaluation sequences included).
      pe_limit: the PE's `max_position()` (None: unbounded).
    """
    if max_position == 0:
        return
    if max_position < longest_sequence:
        raise ValueError(
            f"model.pe.{CONFIG_KEY}={max_position} is below the longest sequence "
            f"({longest_sequence} tokens): expected M >= {longest_sequence}, so every token of "
            "it gets a distinct position in [0, M)."
        )
    if pe_limit is not None and max_position - 1 > pe_limit:
        raise ValueError(
            f"model.pe.{CONFIG_KEY}={max_position} samples positions up to {max_position - 1} "
            f"but the positional encoding represents positions up to {pe_limit}: expected "
            f"M <= {pe_limit + 1} (or a larger table)."
        )


def example_keys(key: jax.Array, tokens: jax.Array, valid: jax.Array) -> jax.Array:
    """One key per example, a function of `key` and the example's valid tokens only.

    Args:
      key: a PRNG key.
      tokens: `[batch, length]` int.
      valid: `[batch, length]` bool; pads do not enter the key.
    Returns:
      `[batch]` keys: equal examples (however padded) get equal keys.
    """
    # Polynomial hash sum_t token_t * A^rank_t mod 2^32 over the valid tokens, rank_t their
    # 1-based index among them (uint32 arithmetic wraps).
    factors = jnp.where(valid, jnp.uint32(_HASH_MULTIPLIER), jnp.uint32(1))
    weights = jnp.cumprod(factors, axis=-1, dtype=jnp.uint32)  # -> [batch, length]
    terms = jnp.where(valid, tokens.astype(jnp.uint32) * weights, jnp.uint32(0))
    hashed = jnp.sum(terms, axis=-1, dtype=jnp.uint32)  # -> [batch]
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, hashed)


def sample_positions(key: jax.Array, valid: jax.Array, max_position: int) -> jax.Array:
    """Sorted distinct random positions in [0, max_position) for each example's valid tokens.

    Args:
      key: one PRNG key (split per example) or `[batch]` keys, one per example.
      valid: `[batch, length]` bool; each row's valid tokens get a uniformly random sorted
        subset of [0, max_position) of their count, in order; pads repeat the position of the
        nearest valid token before them (position of the first valid token for leading pads).
      max_position: M; needs M >= the valid tokens of every row (`check_fits`).
    Returns:
      `[batch, length]` int32; deterministic in `key`.
    """
    batch, length = valid.shape
    if max_position < 1:
        raise ValueError(f"max_position must be >= 1, got {max_position}")
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        raise ValueError(
            f"expected a typed PRNG key (jax.random.key), got an array of dtype {key.dtype}"
        )
    keys = jax.random.split(key, batch) if key.shape == () else key
    if keys.shape != (batch,):
        raise ValueError(f"expected one key or {batch} keys (one per example), got {keys.shape}")
    draws = min(length, max_position)
    # The `draws` largest of M uniform numbers sit at a uniformly random ordered subset of
    # [0, M) (Gumbel top-k): its first n entries are a uniform n-subset, for any n <= draws.
    noise = jax.vmap(lambda k: jax.random.uniform(k, (max_position,)))(keys)  # -> [batch, M]
    _, chosen = jax.lax.top_k(noise, draws)  # -> [batch, draws]
    count = jnp.sum(valid, axis=-1, dtype=jnp.int32)  # -> [batch]
    # Keep each row's first `count` draws (at least one, so a row with no valid token still
    # gets positions in range) and sort them; the others sort after them.
    keep = jnp.arange(draws)[None, :] < jnp.maximum(count, 1)[:, None]
    kept = jnp.where(keep, chosen, max_position)
    table = jnp.sort(kept, axis=-1)  # -> [batch, draws]
    rank = jnp.cumsum(valid, axis=-1, dtype=jnp.int32) - 1  # index among valid tokens
    rank = jnp.clip(rank, 0, jnp.maximum(count - 1, 0)[:, None])
    return jnp.take_along_axis(table, rank, axis=-1).astype(jnp.int32)
