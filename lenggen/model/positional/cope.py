"""CoPE (Golovneva et al. 2024, "Contextual Position Encoding: Learning to Count What's
Important"): positions counted by gates the queries and keys decide, not by tokens.

For each head, query i and key j <= i (causal):

    g[i, t] = sigmoid(s[i, t]),             s[i, t] = q_i . k_t, the attention logit
    p[i, j] = min(sum_{t = j..i} g[i, t], p_max)                   a fractional position
    z_i[n]  = q_i . e[n],                   n = 0 .. p_max         e: learned, [p_max + 1, d]
    logits[i, j] = s[i, j] + (p - floor p) z_i[ceil p] + (1 - (p - floor p)) z_i[floor p]

so the added term is q_i . e[p], e interpolated linearly between its integer rows. Written
here as the hat-function sum sum_n z_i[n] max(0, 1 - |p - n|), which is the same value
(`tile_term`: a gather-free form for the Pallas kernel).

Scaling, as the paper's listing: its logits are q.k / sqrt(d), the gates are the sigmoid of
those scaled logits (the causal mask already added, so future keys count 0), and the term
q . e[p] is added unscaled. This project's logits carry no 1/sqrt(d) (T5: the query init
absorbs it), so the gates are sigmoid(q.k) of the logits the softmax sees, exactly as in the
paper, and q . e[p] uses the same q; with e learned and initialised to zero (the listing), the
missing sqrt(d) between the two conventions is a rescaling of e only.

Parameters: e per attention layer, shared by the layer's heads (the listing: one table of
head_dim x npos_max per attention module; its npos_max is p_max + 1 here), created by each
attention layer from `ParamSpec` as `cope_embedding [p_max + 1, head_dim]`.

Cost: the gates need the logits of every (query, key) pair before the softmax, and the counts a
suffix sum over keys, so a kernel makes an extra pass over q.k and holds `[q_len, k_len]` gate
sums per head (dense kernels), or carries one running sum per query across key blocks taken
last to first (blockwise, pallas_flash).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from lenggen.model.positional.base import ContextualLogits, ParamSpec, PositionalEncoding

PARAM_NAME = "cope_embedding"


def cope_gates(params, logits: jax.Array) -> jax.Array:
    """`sigmoid(logits)` in float32; `params` unused (the gate has none)."""
    del params
    return jax.nn.sigmoid(logits.astype(jnp.float32))


def _position_logits(embedding: jax.Array, q: jax.Array) -> jax.Array:
    """z[..., i, n] = q_i . e[n]: `q [..., q, d]`, `embedding [rows, d]` -> `[..., q, rows]`
    float32, as one 2-D dot (contracting both last axes: no transpose)."""
    rows = q.reshape(-1, q.shape[-1]).astype(jnp.float32)
    z = jax.lax.dot_general(
        rows,
        embedding.astype(jnp.float32),
        (((1,), (1,)), ((), ())),
        preferred_element_type=jnp.float32,
    )
    return z.reshape(*q.shape[:-1], embedding.shape[0])


def cope_term(params, q: jax.Array, counts: jax.Array, *, p_max: int) -> jax.Array:
    """The interpolated q . e[min(c, p_max)] for whole arrays, by gathers.

    Args:
      params: `(embedding [p_max + 1, head_dim],)`.
      q: `[..., q_len, head_dim]`.
      counts: `[..., q_len, k_len]` float32, >= 0.
      p_max: the largest position (static: the table may arrive zero-padded).
    Returns:
      `[..., q_len, k_len]` float32.
    """
    (embedding,) = params
    z = _position_logits(embedding, q)  # -> [..., q_len, p_max + 1]
    p = jnp.minimum(counts, p_max)
    floor = jnp.floor(p)
    weight = p - floor
    low = floor.astype(jnp.int32)
    high = jnp.minimum(low + 1, p_max)  # = ceil p where weight > 0; weight 0 elsewhere
    z_low = jnp.take_along_axis(z, low, axis=-1, mode="clip")
    z_high = jnp.take_along_axis(z, high, axis=-1, mode="clip")
    return weight * z_high + (1.0 - weight) * z_low


def cope_tile_term(params, q: jax.Array, counts: jax.Array, *, p_max: int) -> jax.Array:
    """`cope_term` for one tile, gather-free: sum_n z[n] max(0, 1 - |p - n|) over n = 0 ..
    p_max, one column of z selected per step by an iota mask.

    Args:
      params: `(embedding [rows >= p_max + 1, head_dim],)`; rows past p_max (zero padding on
        a GPU) are never selected.
      q: `[..., tq, head_dim]` (one tile: `[heads, tq, head_dim]` or `[tq, head_dim]`).
      counts: `[..., tq, tk]` float32.
      p_max: the largest position (static).
    Returns:
      `[..., tq, tk]` float32.
    """
    (embedding,) = params
    z = _position_logits(embedding, q)  # -> [..., tq, rows]
    p = jnp.minimum(counts, p_max)
    column = jax.lax.broadcasted_iota(jnp.int32, z.shape, z.ndim - 1)

    def add_position(n, total):
        z_n = jnp.sum(jnp.where(column == n, z, 0.0), axis=-1, keepdims=True)  # [..., tq, 1]
        return total + z_n * jnp.maximum(0.0, 1.0 - jnp.abs(p - n.astype(jnp.float32)))

    return jax.lax.fori_loop(0, p_max + 1, add_position, jnp.zeros(counts.shape, jnp.float32))


class CoPE(PositionalEncoding):
    """Contextual position encoding (module docstring); acts through `contextual_logits` only.

    Attributes:
      p_max: the largest contextual position; counts are clipped to it and the table has
        p_max + 1 rows (the paper clips to a small p_max; 64 here).
    """

    p_max: int = 64

    def __post_init__(self):
        if not isinstance(self.p_max, int) or isinstance(self.p_max, bool) or self.p_max < 1:
            raise ValueError(f"cope p_max must be an integer >= 1, got {self.p_max!r}")
        super().__post_init__()

    def contextual_logits(self, head_dim: int) -> ContextualLogits:
        """Sigmoid gates and the interpolated q . e[p] (module docstring); one table
        `cope_embedding [p_max + 1, head_dim]` per attention layer, zeros at init."""
        spec = ParamSpec(
            PARAM_NAME, (self.p_max + 1, head_dim), nn.initializers.zeros, (None, "kv")
        )
        return ContextualLogits(
            cope_gates,
            functools.partial(cope_term, p_max=self.p_max),
            functools.partial(cope_tile_term, p_max=self.p_max),
            (spec,),
        )
