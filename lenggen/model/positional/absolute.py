"""APE: absolute position codes added to the token embeddings.

docs/paper.md ("Positional encodings"): the paper used a fixed sinusoidal table ([sin...,
cos...] halves, not interleaved) of 16,384 positions; frequencies 1 / 10000^(2i / d_model), i =
0 .. d_model/2 - 1 (as in the official code's FixedAbsolutePositionalEmbedding). A learned table
exists in the official code (N(0, 1) init, PyTorch's nn.Embedding default) but was not in the
paper; it is kept as an option.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from lenggen.model.positional.base import PositionalEncoding

KINDS = ("sinusoidal", "learned")


def sinusoidal_embedding(positions: jax.Array, d_model: int) -> jax.Array:
    """The sinusoidal code of each position, computed from the positions (any length works).

    Args:
      positions: `[...]` integer positions.
      d_model: even width of the code.
    Returns:
      `[..., d_model]` float32: `[sin(p * w_0), ..., sin(p * w_{d/2-1}), cos(p * w_0), ...]`
      with `w_i = 10000^(-2i / d_model)`; position 0 is `[0, ..., 0, 1, ..., 1]`.
    """
    if d_model % 2:
        raise ValueError(f"sinusoidal APE needs an even d_model, got {d_model}")
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # -> [..., d_model / 2]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # -> [..., d_model]


class AbsolutePositionalEncoding(PositionalEncoding):
    """Adds `code(position)` to each token embedding; the other hooks do nothing.

    Attributes:
      kind: 'sinusoidal' (the paper's fixed table) or 'learned' (a trainable table).
      max_length: rows of the table (the paper's 16,384). The sinusoidal code is computed from
        the positions, so this only bounds `max_position()`; the learned table has exactly this
        many rows and rejects longer inputs.
    """

    kind: str = "sinusoidal"
    max_length: int = 16384

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"ape kind must be one of {KINDS}, got {self.kind!r}")
        if self.max_length < 1:
            raise ValueError(f"ape max_length must be >= 1, got {self.max_length}")
        super().__post_init__()

    def check_widths(self, d_model: int, head_dim: int) -> None:
        del head_dim
        if self.kind == "sinusoidal" and d_model % 2:
            raise ValueError(f"sinusoidal APE needs an even d_model, got {d_model}")

    @nn.compact
    def embed(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        """`x [batch, length, d_model]` + code of `positions [batch, length]`."""
        d_model = x.shape[-1]
        if self.kind == "sinusoidal":
            code = sinusoidal_embedding(positions, d_model)  # -> [batch, length, d_model]
            return x + code.astype(x.dtype)
        if x.shape[1] > self.max_length:
            raise ValueError(
                f"learned APE has a table of max_length={self.max_length} positions, "
                f"got an input of length {x.shape[1]}"
            )
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("positions", "embed")),
            (self.max_length, d_model),
        )
        # A position past the table (possible in KV-cache decoding, where each call is short)
        # reads NaN instead of silently clamping to the last row.
        code = jnp.take(table, positions, axis=0, mode="fill", fill_value=jnp.nan)
        return x + code.astype(x.dtype)  # -> [batch, length, d_model]

    def max_position(self) -> int:
        return self.max_length - 1
