"""Abacus embeddings (McLeish et al. 2024, "Transformers Can Do Arithmetic with the Right
Embeddings"): each digit is embedded by its place within its number.

docs/methods/abacus.md. With `runs[b, t]` the index of token t within its run of digits (1 for
the first digit written, 2 for the next, ...; 0 for every non-digit: lenggen.model.digit_runs):

    x[b, t] <- x[b, t] + E[runs[b, t] + offset[b] * (runs[b, t] > 0)]

with E a learned [max_k, d_model] table. In training each example draws one offset uniformly
from 0..offset_max (the paper's k = 100), so the rows of E past the training widths are trained
too and a test operand longer than any training one still reads trained rows; at evaluation the
offset is 0. Numbers written least-significant digit first (lenggen.tasks.addition's
`digit_order="lsb_first"`, the paper's format) give digits of equal significance equal indices.

The PE only adds to the input embeddings; attention has no positional term (the paper's
"Abacus + NoPE"), so every attention kernel and the KV cache serve it unchanged. Which tokens
are digits comes from the task's vocabulary (`Tokenizer.digit_ids`, passed to the Decoder); the
decoder computes the run indices, incrementally in KV-cache decoding.

"In training" is "the 'dropout' rng stream is present": the train step always passes it (even
with a dropout rate of 0) and evaluation and decoding never do.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from lenggen.model.positional.base import PositionalEncoding

# The rng stream the training offset is drawn from (the one the train step passes).
OFFSET_RNG = "dropout"


def offset_indices(runs: jax.Array, offsets: jax.Array) -> jax.Array:
    """`runs [batch, length]` with `offsets [batch]` added to the digits (runs > 0) only."""
    return jnp.where(runs > 0, runs + offsets[:, None], 0).astype(jnp.int32)


def training_offsets(module: nn.Module, batch: int, offset_max: int) -> jax.Array:
    """`[batch]` int32: uniform in 0..offset_max while training (module doc), else zeros."""
    if offset_max == 0 or not module.has_rng(OFFSET_RNG):
        return jnp.zeros((batch,), jnp.int32)
    key = module.make_rng(OFFSET_RNG)
    return jax.random.randint(key, (batch,), 0, offset_max + 1, dtype=jnp.int32)


class Abacus(PositionalEncoding):
    """Adds a learned embedding of each digit's index within its number (module doc).

    Attributes:
      max_k: rows of the table (index 0 is every non-digit); an index past it (a number of
        max_k or more digits, offset included) reads NaN rather than a silently clamped row.
        It must exceed the longest training number's digits + offset_max.
      offset_max: the largest training offset (0: none).
    """

    embed_input = "digit_runs"

    max_k: int = 256
    offset_max: int = 100

    def __post_init__(self):
        if self.max_k < 2:
            raise ValueError(f"abacus max_k must be >= 2 (row 0 and one digit), got {self.max_k}")
        if not 0 <= self.offset_max < self.max_k - 1:
            raise ValueError(
                f"abacus offset_max must be in [0, max_k - 2] = [0, {self.max_k - 2}], got "
                f"{self.offset_max}"
            )
        super().__post_init__()

    @nn.compact
    def embed(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        """`x [batch, length, d_model]` + E[`positions` (digit runs) [batch, length] + offset]."""
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("positions", "embed")),
            (self.max_k, x.shape[-1]),
        )
        offsets = training_offsets(self, x.shape[0], self.offset_max)
        indices = offset_indices(positions, offsets)  # -> [batch, length]
        code = jnp.take(table, indices, axis=0, mode="fill", fill_value=jnp.nan)
        return x + code.astype(x.dtype)  # -> [batch, length, d_model]
