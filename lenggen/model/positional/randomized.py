"""Randomized positions (Ruoss et al. 2023): train on positions a longer sequence would have.

docs/paper.md ("Beyond the paper"): sample T sorted distinct positions from [0, M), M >= the
longest test length, and use them in place of 0..T-1. Every position-based PE then meets, during
training, the positions and distances of test lengths up to M. It is not a PE but a change of
the position arrays, so it serves every PE through the explicit `positions` the model already
takes (positional/base.py); NoPE is unaffected by construction (its attention sees only the
order of positions, which is kept).

Training (`sample_positions`), per example with n valid tokens: a uniformly random n-subset of
[0, M), sorted, given to the valid tokens in order; a pad takes the position of the nearest valid
token before it (the first valid token's for leading pads), as `cumsum(valid) - 1` does for
standard positions. The reference implementation (google-deepmind/randomized_positional_encodings,
`noisy_fixed_positional_encodings`) draws one subset per batch, its batches holding one length;
here each example draws its own, since a padded batch mixes lengths.

Evaluation (`decoding_table`, `evaluation_positions`): the reference samples too (its models draw
fresh positions on every call). Greedy decoding cannot draw n positions for a sequence whose
length n it does not know yet, and teacher forcing must see the very positions greedy decoding
gives each token, or the two would not agree on an example (docs/paper.md, "Evaluation"). So an
example draws ONE sorted table of min(M, p + max_new_tokens) positions, p its prompt's valid
tokens — the longest sequence decoding may write, as the reference's autoregressive sampling
runs its model on the whole tape (input plus an output whose length its tasks fix) — and its
i-th token (prompt, then target or generated tokens) takes the table's i-th entry. Teacher
forcing of an n-token prompt+target therefore uses the n smallest of the p + max_new_tokens
draws, not a uniform n-subset: its positions are about (p + max_new_tokens) / n times denser
than a training draw of n, so a tight `eval.max_new_tokens` keeps evaluation close to
training. The key is a fixed key
folded with the prompt's tokens (`example_keys`), so an example's positions, and its verdict,
depend neither on its batch nor on its padding. Choose M well above p + max_new_tokens
(lenggen.grid.randomized_overrides takes twice that): with M <= p + max_new_tokens the draw is
all of [0, M), i.e. positions 0, 1, ..., and tokens past the M-th repeat position M - 1 (only
generated tokens beyond every target, as M >= the longest test sequence).

Config: `model.pe.randomized_max_position` = M (0: off), read by `max_position_of`.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

CONFIG_KEY = "randomized_max_position"
# Evaluation's positions: this key folded with each example's prompt tokens.
EVAL_SEED = 0
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


def decoding_table(
    prompt_tokens: jax.Array, prompt_valid: jax.Array, max_position: int, max_new_tokens: int
) -> jax.Array:
    """Each example's evaluation positions: one sorted draw for its prompt and generated tokens.

    Args:
      prompt_tokens: `[batch, length]` int; only the tokens under `prompt_valid` are read (so
        a teacher-forced batch may pass its whole sequences).
      prompt_valid: `[batch, length]` bool, True on the prompt's tokens (any padding).
      max_position: M.
      max_new_tokens: the decoding budget; with the prompt's p valid tokens, row b draws
        min(M, p + max_new_tokens) positions.
    Returns:
      `[batch, min(M, length + max_new_tokens)]` int32: row b's first min(M, p +
      max_new_tokens) entries are a sorted uniform subset of [0, M), the rest repeat the last
      of them. A row's drawn entries do not depend on `length` (the draws are the largest of
      M uniform numbers, and `top_k` keeps the lower index first on ties), so a teacher-forced
      batch and a left-padded prompt batch get the same entries for an example.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    keys = example_keys(jax.random.key(EVAL_SEED), prompt_tokens, prompt_valid)
    width = min(max_position, prompt_tokens.shape[1] + max_new_tokens)
    count = jnp.sum(prompt_valid, axis=-1, dtype=jnp.int32) + max_new_tokens  # -> [batch]
    drawn = jnp.arange(width)[None, :] < jnp.minimum(count, max_position)[:, None]
    return sample_positions(keys, drawn, max_position)  # -> [batch, width]


def position_of_rank(table: jax.Array, rank: jax.Array) -> jax.Array:
    """The position of each example's rank-r real token: `table[row, r]` (the last entry past
    the end).

    Args:
      table: `[batch, width]` int.
      rank: `[batch, n]` int >= 0, each token's index among its row's real tokens.
    Returns:
      `[batch, n]` int32.
    """
    rank = jnp.minimum(rank, table.shape[1] - 1)
    return jnp.take_along_axis(table, rank, axis=-1).astype(jnp.int32)


def positions_from_table(table: jax.Array, valid: jax.Array) -> jax.Array:
    """The i-th valid token of each row takes `table[row, i]` (the last entry past the end).

    Args:
      table: `[batch, width]` int.
      valid: `[batch, length]` bool; a pad takes the position of the nearest valid token
        before it (the first valid token's for leading pads).
    Returns:
      `[batch, length]` int32.
    """
    rank = jnp.maximum(jnp.cumsum(valid, axis=-1, dtype=jnp.int32) - 1, 0)
    return position_of_rank(table, rank)


def evaluation_positions(
    tokens: jax.Array,
    valid: jax.Array,
    prompt_valid: jax.Array,
    max_position: int,
    max_new_tokens: int,
) -> jax.Array:
    """Teacher forcing's positions: the `decoding_table` entries greedy decoding would give.

    Args:
      tokens, valid: `[batch, length]` prompt + target sequences (right-padded).
      prompt_valid: `[batch, length]` bool, True on each row's prompt tokens.
      max_position, max_new_tokens: M and the decoding budget (`decoding_table`).
    Returns:
      `[batch, length]` int32.
    """
    table = decoding_table(tokens, prompt_valid, max_position, max_new_tokens)
    return positions_from_table(table, valid)


def model_positions(
    pe_config: Mapping[str, Any],
    batch: dict,
    key: jax.Array | None,
    *,
    max_new_tokens: int | None = None,
) -> jax.Array:
    """The positions the model sees: `batch["positions"]`, or randomized positions when the
    PE config asks for them.

    Args:
      pe_config: the model's PE config (`model.pe`, holding `randomized_max_position`).
      batch: `positions`, `valid` `[batch, length]`; for evaluation with randomized positions
        also `tokens` `[batch, length]` and `source_length` `[batch]` (prompt tokens per row).
      key: the training draw's key; None for evaluation: the positions greedy decoding with a
        budget of `max_new_tokens` gives each token (`randomized.evaluation_positions`).
      max_new_tokens: the decoding budget (`config.eval.max_new_tokens`); needed for
        evaluation with randomized positions.
    Returns:
      `[batch, length]` int32.
    """
    max_position = max_position_of(pe_config)
    if max_position == 0:
        return batch["positions"]
    if key is not None:
        return sample_positions(key, batch["valid"], max_position)
    if max_new_tokens is None or "source_length" not in batch:
        raise ValueError(
            f"Evaluating with randomized positions (M={max_position}) needs max_new_tokens "
            f"(got {max_new_tokens!r}) and batch['source_length'] (batch keys: "
            f"{sorted(batch)}): each token's position comes from the table greedy decoding "
            "draws for its prompt and budget."
        )
    columns = jnp.arange(batch["valid"].shape[1])[None, :]  # -> [1, length]
    prompt_valid = batch["valid"] & (columns < batch["source_length"][:, None])
    return evaluation_positions(
        batch["tokens"], batch["valid"], prompt_valid, max_position, max_new_tokens
    )
