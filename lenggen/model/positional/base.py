"""The positional-encoding interface: three hooks, each a no-op unless a PE overrides it.

DESIGN.md: a PE may act at any of three points of the decoder and does nothing at the others:
  1. `embed`  — add a position code to the token embeddings (absolute PEs);
  2. `rotate` — transform queries and keys by their positions (rotary);
  3. `bias`   — an additive attention-logit bias b[h, i, j] from query/key positions (T5, ALiBi).
Positions are always explicit int32 arrays, never implied by array index, so training, padded
batches, left-padded KV-cache decoding and randomized positions share one code path. Attention
kernels receive these hooks, never a PE name.
"""

import flax.linen as nn
import jax


class PositionalEncoding(nn.Module):
    """Base class of every PE. Subclasses add their options as dataclass fields WITH defaults
    (the paper's settings); `positional.default_options` reads them from there.

    A PE that owns parameters creates them inside the one hook that uses them (`nn.compact`
    on that hook), so the Decoder creates the module once and every layer shares it.

    Attributes:
      num_heads: attention heads (a bias PE returns one bias per head).
      d_model: model width; only initialisers that scale with it use it (T5's table).
    """

    num_heads: int
    d_model: int | None = None

    def embed(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        """Adds a position code to token embeddings.

        Args:
          x: `[batch, length, d_model]` token embeddings.
          positions: `[batch, length]` int32.
        Returns:
          `[batch, length, d_model]`, same dtype as `x`.
        """
        del positions
        return x

    def rotate(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        """Transforms queries or keys (called on each separately; keys before caching).

        Args:
          x: `[batch, length, heads, head_dim]`.
          positions: `[batch, length]` int32.
        Returns:
          `[batch, length, heads, head_dim]`, same dtype as `x`.
        """
        del positions
        return x

    def bias(self, q_positions: jax.Array, k_positions: jax.Array) -> jax.Array | None:
        """The additive attention-logit bias, or None when the PE adds none.

        Args:
          q_positions: `[batch, q_len]` int32.
          k_positions: `[batch, k_len]` int32.
        Returns:
          `[batch, heads, q_len, k_len]` float32, or None.
        """
        del q_positions, k_positions
        return None

    def check_widths(self, d_model: int, head_dim: int) -> None:
        """Raises ValueError when this PE cannot act on a model of these widths (checked with
        the config, before anything is built); a PE with width constraints overrides it."""
        del d_model, head_dim

    def max_position(self) -> int | None:
        """The largest position this PE can represent (None: unbounded).

        The config validation calls this on an unbound module to reject a test length up front.
        """
        return None
