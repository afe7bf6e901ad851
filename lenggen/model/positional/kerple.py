"""KERPLE (Chi et al. 2022, "KERPLE: Kernelized Relative Positional Embedding for Length
Extrapolation"), its logarithmic variant:

    b[h, i, j] = -r1_h * log(1 + r2_h * |i - j|),    r1_h, r2_h > 0 learned per head,

added to the attention logits in every layer. The bias is a conditionally positive definite
kernel of the distance, shifted into the logits (the paper's construction); it depends on i - j
only (shift invariant) and grows only logarithmically with distance, which is how it reaches
lengths beyond training. With r2 -> 0 and r1 r2 fixed it tends to ALiBi's linear penalty.

Why KERPLE (issue 17 asks for xPos or KERPLE): it is a learned relative-bias PE like T5, ALiBi
and FIRE, designed for length extrapolation, so it compares directly with the bias PEs of this
testbed and runs in the fused kernels' tile path (`tile_bias`); xPos is a rotary variant
(an exponential decay folded into the rotation), closer to the rotary scalings.

Parametrisation, as the authors' released GPT-NeoX code: r1 starts U(0, 2), r2 U(0, 1), one
each per head, and both are floored at eps = 0.01 before use (that code clamps the stored
values in place; here the floor is applied on the way in and the gradient passes through it
unchanged, so a parameter pushed below eps can climb back, as there). One module serves every
layer (the Decoder builds one PE), as T5's table and FIRE here.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from lenggen.model.positional.base import PositionalEncoding, TileBias


def kerple_log_bias(
    q_positions: jax.Array, k_positions: jax.Array, r1: jax.Array, r2: jax.Array
) -> jax.Array:
    """-r1_h * log(1 + r2_h * |i - j|) for one example.

    Args:
      q_positions: `[tq]` int; k_positions: `[tk]` int.
      r1, r2: `[heads]` float32, positive.
    Returns:
      `[heads, tq, tk]` float32.
    """
    distance = jnp.abs(q_positions[:, None] - k_positions[None, :]).astype(jnp.float32)
    # |i - j| as the paper (future keys get finite values; the causal mask removes them).
    return -r1[:, None, None] * jnp.log1p(r2[:, None, None] * distance[None])


def _floor(value: jax.Array, eps: float) -> jax.Array:
    """max(value, eps) in the forward pass, the identity in the backward pass."""
    return value + jax.lax.stop_gradient(jnp.maximum(value, eps) - value)


class KERPLE(PositionalEncoding):
    """`bias[b, h, i, j] = -r1_h * log(1 + r2_h * |q_pos[b, i] - k_pos[b, j]|)` (module
    docstring).

    Parameters (logical axis 'heads'): `r1`, `r2` `[heads]`.

    Attributes:
      init_r1_max: r1 starts U(0, init_r1_max) (authors' code: 2).
      init_r2_max: r2 starts U(0, init_r2_max) (authors' code: 1).
      eps: the floor of r1 and r2 (authors' code: 0.01), keeping both > 0.
    """

    init_r1_max: float = 2.0
    init_r2_max: float = 1.0
    eps: float = 0.01

    def __post_init__(self):
        for name in ("init_r1_max", "init_r2_max", "eps"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"kerple {name} must be > 0, got {getattr(self, name)}")
        super().__post_init__()

    def setup(self):
        def uniform(high):
            def init(key, shape, dtype=jnp.float32):
                return jax.random.uniform(key, shape, dtype, 0.0, high)

            return nn.with_logical_partitioning(init, ("heads",))

        self.r1 = self.param("r1", uniform(self.init_r1_max), (self.num_heads,))
        self.r2 = self.param("r2", uniform(self.init_r2_max), (self.num_heads,))

    def tile_bias(self) -> TileBias:
        """`((r1 [heads], r2 [heads]), q_positions [tq], k_positions [tk]) -> [heads, tq, tk]`,
        r1 and r2 already floored at eps. Zero-padded heads (pallas_gpu) give -0 * log(1) = 0:
        extra rows only."""
        params = (_floor(self.r1, self.eps), _floor(self.r2, self.eps))

        def tile(params, q_positions, k_positions):
            return kerple_log_bias(q_positions, k_positions, *params)

        return TileBias(tile, params)
