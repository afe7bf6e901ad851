"""Rotary position embedding (Su et al. 2021), GPT-J style, on part of each head.

docs/paper.md ("Positional encodings"): GPT-J style (rotate every two: interleaved pairs (x0,
x1), (x2, x3), ...), base 10000, applied to the first 25% of each head's dimensions (16 of 64);
the official code hard-coded the fraction, here it is an option.
"""

import jax
import jax.numpy as jnp

from lenggen.model.positional.base import PositionalEncoding


def rotate_every_two(x: jax.Array) -> jax.Array:
    """`[..., d]` -> `[..., d]`: [a, b, c, d] -> [-b, a, -d, c]."""
    pairs = jnp.stack([-x[..., 1::2], x[..., 0::2]], axis=-1)  # -> [..., d / 2, 2]
    return pairs.reshape(x.shape)  # -> [..., d]


class RotaryPositionalEncoding(PositionalEncoding):
    """Rotates pair k of the first `fraction` of each head by angle `position * base^(-2k/r)`,
    r the rotated width; the remaining dimensions pass through unchanged.

    Attributes:
      fraction: share of head_dim rotated (paper: 0.25); fraction * head_dim must be an even
        integer >= 2.
      base: frequency base (paper: 10000).
    """

    fraction: float = 0.25
    base: float = 10000.0

    def __post_init__(self):
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"rotary fraction must be in (0, 1], got {self.fraction}")
        if self.base <= 1.0:
            raise ValueError(f"rotary base must be > 1, got {self.base}")
        super().__post_init__()

    def check_widths(self, d_model: int, head_dim: int) -> None:
        del d_model
        self.rotary_dim(head_dim)

    def rotary_dim(self, head_dim: int) -> int:
        """How many leading dims of a head are rotated (the official code's int(0.25 * d))."""
        dim = int(head_dim * self.fraction)
        if dim < 2 or dim % 2:
            raise ValueError(
                f"rotary rotates int(fraction * head_dim) = int({self.fraction} * {head_dim}) = "
                f"{dim} dims; expected an even number >= 2"
            )
        return dim

    def rotate(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        """`x [batch, length, heads, head_dim]`, `positions [batch, length]` -> like `x`."""
        dim = self.rotary_dim(x.shape[-1])
        x_rot, x_pass = x[..., :dim].astype(jnp.float32), x[..., dim:]
        inv_freq = 1.0 / (self.base ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
        angles = positions.astype(jnp.float32)[..., None] * inv_freq  # -> [batch, length, dim/2]
        # Each angle serves one interleaved pair: repeat [t0, t1] -> [t0, t0, t1, t1].
        angles = jnp.repeat(angles, 2, axis=-1)[:, :, None, :]  # -> [batch, length, 1, dim]
        rotated = x_rot * jnp.cos(angles) + rotate_every_two(x_rot) * jnp.sin(angles)
        return jnp.concatenate([rotated.astype(x.dtype), x_pass], axis=-1)
