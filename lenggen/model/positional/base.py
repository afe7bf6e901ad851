"""The positional-encoding interface: three hooks, each a no-op unless a PE overrides it.

A PE may act at any of three points of the decoder and does nothing at the others:
  1. `embed`  — add a position code to the token embeddings (absolute PEs);
  2. `rotate` — transform queries and keys by their positions (rotary);
  3. `bias`   — an additive attention-logit bias b[h, i, j] from query/key positions (T5, ALiBi,
     FIRE), in two forms: `bias` over whole position arrays, and `tile_bias`, the same function
     for one example's tile of positions, which a fused kernel (pallas_flash) evaluates inside
     its tile.
Positions are always explicit int32 arrays, never implied by array index, so training, padded
batches, left-padded KV-cache decoding and randomized positions share one code path. Attention
kernels receive these hooks, never a PE name.
"""

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax


@dataclasses.dataclass(frozen=True)
class TileBias:
    """A bias hook a kernel can call inside its tile: `fn(params, q_positions, k_positions)`.

    `fn` maps the arrays `params` and one example's `q_positions [tq]`, `k_positions [tk]`
    int32 to `[heads, tq, tk]` float32. A Pallas kernel may not capture arrays, so `params`
    (parameters and constants) travel as explicit kernel inputs and `fn` gets them back, loaded
    from the kernel's refs. What `fn` may use, so that it lowers in Mosaic (TPU) and Triton
    (GPU) kernels: elementwise ops, broadcasts, iotas, reductions, transposes, reshapes that
    merge or split leading axes, and 2-D `jnp.dot`; no gather (a small table is read as a
    one-hot contraction) and no slicing.

    Triton holds only power-of-two shapes, so the GPU kernel zero-pads every axis of every
    array in `params` (`pallas_gpu`): `fn` must give the same first `heads` rows, `[:heads,
    :tq, :tk]`, on params zero-padded along any axis. That holds when padded entries only
    produce extra output heads or multiply into zeros (a padded table row no bucket selects,
    a padded hidden unit whose weights are all zero).

    Attributes:
      fn: `(params, q_positions [tq], k_positions [tk]) -> [heads, tq, tk]` float32.
      params: the arrays `fn` reads; gradients reach them through every kernel.
    """

    fn: Callable[[tuple[jax.Array, ...], jax.Array, jax.Array], jax.Array]
    params: tuple[jax.Array, ...] = ()

    def __call__(self, q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
        """The dense form, `fn` per example: `q_positions [batch, q_len]`, `k_positions
        [batch, k_len]` -> `[batch, heads, q_len, k_len]` float32."""
        return jax.vmap(self.fn, in_axes=(None, 0, 0))(self.params, q_positions, k_positions)


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

    # What `embed` receives as `positions`: "positions", the token positions every hook gets;
    # or "digit_runs", each token's index within its number (lenggen.model.digit_runs), for the
    # arithmetic PEs that embed a digit's place in its number instead of its position.
    embed_input: ClassVar[str] = "positions"

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

        By default `tile_bias()` applied per example; a PE overrides it where a whole-array
        form is cheaper (T5's gather, where the tile form contracts a one-hot).

        Args:
          q_positions: `[batch, q_len]` int32.
          k_positions: `[batch, k_len]` int32.
        Returns:
          `[batch, heads, q_len, k_len]` float32, or None.
        """
        tile = self.tile_bias()
        return None if tile is None else tile(q_positions, k_positions)

    def tile_bias(self) -> TileBias | None:
        """The same bias as `bias`, in the form a fused kernel evaluates in its tile (see
        `TileBias`), or None when the PE adds no bias."""
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
