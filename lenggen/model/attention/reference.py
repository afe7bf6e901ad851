"""The reference attention kernel: plain einsums, the PE's bias, a positional causal mask.

The ground truth every other kernel is tested against. It materialises the
`[batch, heads, q_len, k_len]` scores, which is fine for the paper's lengths.

Conventions (T5's; docs/paper.md "Model"):
  * NO 1/sqrt(head_dim) scaling of the logits: the query init absorbs it.
  * Causal BY POSITION: key j is visible to query i iff k_pos[j] <= q_pos[i] and key j is
    valid. This serves left-padded KV caches and randomized positions with no index arithmetic.
  * Masked logits take a large finite negative, so a query with no visible key (a pad) gets
    a finite (uniform) distribution instead of NaN.
  * Softmax in float32 whatever the compute dtype.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lenggen.model.positional.base import ContextualLogits, TileBias

# Finite, and far below any real logit; -0.7 * max (as flax and the Pallas kernels use)
# leaves headroom so subtracting the row max cannot overflow to -inf.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)

BiasFn = Callable[[jax.Array, jax.Array], jax.Array | None]


def check_dropout_rate(dropout_rate: float) -> None:
    """Raises ValueError unless `dropout_rate` is in [0, 1) (1 would drop every weight)."""
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")


def causal_mask(q_positions: jax.Array, k_positions: jax.Array, k_valid: jax.Array) -> jax.Array:
    """`[batch, 1, q_len, k_len]` bool: True where query i may attend to key j.

    Args:
      q_positions: `[batch, q_len]` int32.
      k_positions: `[batch, k_len]` int32.
      k_valid: `[batch, k_len]` bool, False on padding and empty cache slots.
    """
    visible = k_positions[:, None, :] <= q_positions[:, :, None]  # -> [batch, q_len, k_len]
    return (visible & k_valid[:, None, :])[:, None]  # -> [batch, 1, q_len, k_len]


def attention_weights(
    q: jax.Array,
    k: jax.Array,
    q_positions: jax.Array,
    k_positions: jax.Array,
    k_valid: jax.Array,
    bias_fn: BiasFn,
    contextual: ContextualLogits | None = None,
) -> jax.Array:
    """Softmax attention probabilities.

    Args:
      q: `[batch, q_len, heads, head_dim]`.
      k: `[batch, k_len, heads, head_dim]`.
      q_positions, k_positions, k_valid: as in `causal_mask`.
      bias_fn: `(q_positions, k_positions) -> [batch, heads, q_len, k_len] | None`, the PE's
        `bias` hook.
      contextual: the PE's `contextual_logits` hook (params bound), or None.
    Returns:
      `[batch, heads, q_len, k_len]` float32; each row sums to 1, exactly 0 on masked keys
      unless the row has no visible key at all (then uniform).
    """
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    visible = causal_mask(q_positions, k_positions, k_valid)
    extra = 0.0 if contextual is None else contextual.dense(q, logits, visible)
    bias = bias_fn(q_positions, k_positions)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    logits = jnp.where(visible, logits + extra, MASK_VALUE)
    return jax.nn.softmax(logits, axis=-1)


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_positions: jax.Array,
    k_positions: jax.Array,
    k_valid: jax.Array,
    bias_fn: BiasFn,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    tile_bias: TileBias | None = None,
    contextual: ContextualLogits | None = None,
) -> jax.Array:
    """Attention with the PE's bias hook and the positional causal mask.

    Args:
      q: `[batch, q_len, heads, head_dim]`.
      k, v: `[batch, k_len, heads, head_dim]`.
      q_positions: `[batch, q_len]` int32.
      k_positions: `[batch, k_len]` int32.
      k_valid: `[batch, k_len]` bool.
      bias_fn: the PE's `bias` hook (may return None).
      dropout_rate: dropout on the attention probabilities (HF T5 places one there).
      dropout_rng: PRNG key; None means no dropout (evaluation).
      tile_bias: the same bias in tile form (`positional.base.TileBias`); only fused kernels
        (pallas_flash) read it, this one calls `bias_fn`.
      contextual: the PE's `contextual_logits` hook (params bound; `positional.base.
        ContextualLogits`), a term from the logits themselves; None: none.
    Returns:
      `[batch, q_len, heads, head_dim]` in v's dtype.
    """
    del tile_bias
    check_dropout_rate(dropout_rate)
    weights = attention_weights(q, k, q_positions, k_positions, k_valid, bias_fn, contextual)
    if dropout_rng is not None and dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
