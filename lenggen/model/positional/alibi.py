"""ALiBi (Press et al. 2022): a fixed linear penalty on distance, one slope per head.

As in the paper (docs/paper.md, "Positional encodings"): bias -m_h * (i - j) added in every
layer; slopes are the ALiBi paper's geometric series (8 heads: 2^-1 .. 2^-8; 12 heads: 2^-1 ..
2^-8 then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5).
"""

import math

import jax
import jax.numpy as jnp

from lenggen.model.positional.base import PositionalEncoding, TileBias


def alibi_slopes(num_heads: int) -> tuple[float, ...]:
    """The ALiBi paper's slopes.

    For n a power of 2: m_h = 2^(-8h/n), h = 1..n. Otherwise (the paper's rule): the slopes of
    the largest power of 2 below n, then every other slope of twice that power, until n.

    Returns:
      `num_heads` Python floats, the exact powers of two above.
    """
    if num_heads < 1:
        raise ValueError(f"alibi needs num_heads >= 1, got {num_heads}")
    if math.log2(num_heads).is_integer():
        return tuple(2.0 ** (-8.0 * h / num_heads) for h in range(1, num_heads + 1))
    closest = 2 ** math.floor(math.log2(num_heads))
    return alibi_slopes(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


class ALiBi(PositionalEncoding):
    """`bias[b, h, i, j] = -m_h * (q_pos[b, i] - k_pos[b, j])`; no parameters, no options.

    Future keys (j > i) get a positive value here; the causal mask removes them.
    """

    def tile_bias(self) -> TileBias:
        """`([slopes [heads]], q_positions [tq], k_positions [tk]) -> [heads, tq, tk]`."""
        slopes = jnp.asarray(alibi_slopes(self.num_heads), jnp.float32)  # -> [heads]
        return TileBias(_alibi_tile, (slopes,))


def _alibi_tile(params, q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
    """-slope_h * (i - j) for one example's tile -> `[heads, tq, tk]` float32."""
    (slopes,) = params
    distance = (q_positions[:, None] - k_positions[None, :]).astype(jnp.float32)  # [tq, tk]
    return -slopes[:, None, None] * distance[None]
