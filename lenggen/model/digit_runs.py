"""Each token's index within its run of digit tokens: what arithmetic PEs embed instead of its
position (abacus, position coupling).

A number is written one digit per token, so a maximal run of consecutive digit tokens is one
number. `runs[b, t]` is 1 for the first digit written of a number, 2 for the next, ..., and 0
for every other token (pads included). In the least-significant-first format
(lenggen.tasks.addition, `digit_order="lsb_first"`) this index is the digit's significance
(10^(index - 1)), so digits of equal significance in both operands and the answer share it.

The index of a token depends only on the tokens before it, so KV-cache decoding computes it
incrementally: each call continues the run it was given (`previous`, the index of the last
token of the previous call) and returns the run it ends on; the decoder keeps that number in
its cache. A pad resets the run, as any non-digit does: a left-padded prompt starts at 0.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def digit_mask(tokens: jax.Array, valid: jax.Array, digit_ids: Sequence[int]) -> jax.Array:
    """`[batch, length]` bool: True on valid tokens whose id is in `digit_ids`."""
    ids = jnp.asarray(tuple(digit_ids), dtype=tokens.dtype).reshape(-1)  # -> [digits]
    return valid & jnp.any(tokens[..., None] == ids, axis=-1)


def digit_runs(
    tokens: jax.Array,
    valid: jax.Array,
    digit_ids: Sequence[int],
    previous: jax.Array | None = None,
) -> jax.Array:
    """Each token's 1-based index within its run of digits (0 for non-digits).

    Args:
      tokens: `[batch, length]` int.
      valid: `[batch, length]` bool; invalid tokens count as non-digits.
      digit_ids: the token ids of the digits (empty: no token is a digit).
      previous: `[batch]` int, the index of the token before this call's first (0 when there
        was none or it was not a digit); KV-cache decoding passes the last call's last index.
    Returns:
      `[batch, length]` int32. Example (D a digit, x not): x D D x D -> 0 1 2 0 1; with
      previous = 3, D D x -> 4 5 0.
    """
    is_digit = digit_mask(tokens, valid, digit_ids) if len(digit_ids) else valid & False
    index = jnp.arange(tokens.shape[1], dtype=jnp.int32)[None, :]  # -> [1, length]
    # The index of the last non-digit at or before t (-1 when none): a run starts after it.
    last_break = jax.lax.cummax(jnp.where(is_digit, -1, index), axis=1)  # -> [batch, length]
    runs = jnp.where(is_digit, index - last_break, 0)
    if previous is not None:
        # Digits before this call's first break continue the previous call's run.
        runs = jnp.where(is_digit & (last_break < 0), runs + previous[:, None], runs)
    return runs.astype(jnp.int32)
