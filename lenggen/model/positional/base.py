"""The positional-encoding interface: four hooks, each a no-op unless a PE overrides it.

A PE may act at any of four points of the decoder and does nothing at the others:
  1. `embed`  — add a position code to the token embeddings (absolute PEs);
  2. `rotate` — transform queries and keys by their positions (rotary);
  3. `bias`   — an additive attention-logit bias b[h, i, j] from query/key positions (T5, ALiBi,
     FIRE), in two forms: `bias` over whole position arrays, and `tile_bias`, the same function
     for one example's tile of positions, which a fused kernel (pallas_flash) evaluates inside
     its tile;
  4. `contextual_logits` — a logit term that depends on the queries and keys themselves, not
     only on positions (CoPE): `ContextualLogits`, which every kernel evaluates on the logits
     it has already computed, block by block.
Positions are always explicit int32 arrays, never implied by array index, so training, padded
batches, left-padded KV-cache decoding and randomized positions share one code path. Attention
kernels receive these hooks, never a PE name.
"""

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp


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

    Mosaic (TPU v4 in particular) rejects a reshape that splits the last axis, and Triton a
    batched `lax.dot_general`; where a PE's natural form needs one of them, `fn` takes the
    Mosaic-safe form and `triton_fn` the same function in the Triton-safe one.

    Attributes:
      fn: `(params, q_positions [tq], k_positions [tk]) -> [heads, tq, tk]` float32.
      params: the arrays `fn` reads; gradients reach them through every kernel.
      triton_fn: `fn` in a form Triton lowers, for the GPU kernel; None: `fn` itself.
    """

    fn: Callable[[tuple[jax.Array, ...], jax.Array, jax.Array], jax.Array]
    params: tuple[jax.Array, ...] = ()
    triton_fn: Callable[[tuple[jax.Array, ...], jax.Array, jax.Array], jax.Array] | None = None

    def __call__(self, q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
        """The dense form, `fn` per example: `q_positions [batch, q_len]`, `k_positions
        [batch, k_len]` -> `[batch, heads, q_len, k_len]` float32."""
        return jax.vmap(self.fn, in_axes=(None, 0, 0))(self.params, q_positions, k_positions)


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """A parameter a hook needs in every attention layer (created there, one per layer).

    Attributes:
      name: the parameter's name in the attention layer's scope.
      shape: its shape.
      init: a Flax initialiser `(key, shape, dtype) -> array`.
      axes: logical axis names (for sharding), one per dimension.
    """

    name: str
    shape: tuple[int, ...]
    init: Callable
    axes: tuple[str | None, ...]


@dataclasses.dataclass(frozen=True)
class ContextualLogits:
    """A logit term computed from the attention logits themselves (contextual positions).

    With `s[i, j] = q_i . k_j` the logits a kernel computes (float32, before any bias), every
    kernel adds, for each head, query i and visible key j:

        g[i, t] = gate_fn(params, s)[i, t] on keys t visible to query i, else 0
        c[i, j] = sum over keys t at or after j (in key-array order) of g[i, t]
        logits[i, j] = s[i, j] + bias[i, j] + term_fn(params, q, c)[i, j]

    The count runs in key-array order: every caller stores a sequence's valid keys in position
    order (padding and empty cache slots are invalid, so gate 0), so "at or after j" is "from
    j up to the query". A kernel computes `c` without the `[q_len, k_len]` array when it must:
    over key blocks taken last to first, carrying the gate sum of the blocks already seen
    (`block_counts`). Parameters are per attention layer: the layer creates `specs` in its own
    scope and binds them (`with_params`).

    Attributes:
      gate_fn: `(params, s [..., q, k]) -> [..., q, k]` float32, elementwise.
      term_fn: `(params, q [..., q, head_dim], c [..., q, k]) -> [..., q, k]` float32, any
        jnp ops (the dense and blockwise kernels).
      tile_term_fn: the same function for one tile, `q [heads, tq, head_dim]`, `c [heads, tq,
        tk]` (TPU form) or one head's `q [tq, head_dim]`, `c [tq, tk]` (GPU form), written as
        `TileBias.fn` must be (gather-free, 2-D dots, unchanged by zero-padded params), for the
        Pallas kernels.
      specs: the parameters, in the order of `params`.
      params: the bound parameters (empty until `with_params`).
    """

    gate_fn: Callable[[tuple[jax.Array, ...], jax.Array], jax.Array]
    term_fn: Callable[[tuple[jax.Array, ...], jax.Array, jax.Array], jax.Array]
    tile_term_fn: Callable[[tuple[jax.Array, ...], jax.Array, jax.Array], jax.Array]
    specs: tuple[ParamSpec, ...] = ()
    params: tuple[jax.Array, ...] = ()

    def with_params(self, params: tuple[jax.Array, ...]) -> "ContextualLogits":
        """This hook with `params` (one array per spec) bound."""
        if len(params) != len(self.specs):
            raise ValueError(f"expected {len(self.specs)} contextual params, got {len(params)}")
        return dataclasses.replace(self, params=tuple(params))

    def dense(self, q: jax.Array, logits: jax.Array, visible: jax.Array) -> jax.Array:
        """The term for whole arrays.

        Args:
          q: `[batch, q_len, heads, head_dim]`.
          logits: `[batch, heads, q_len, k_len]` float32, `q . k`.
          visible: `[batch, 1 | heads, q_len, k_len]` bool (the causal mask).
        Returns:
          `[batch, heads, q_len, k_len]` float32.
        """
        gates = jnp.where(visible, self.gate_fn(self.params, logits), 0.0)
        # Suffix sums over keys: c[.., j] = sum_{t >= j} g[.., t].
        counts = jnp.flip(jnp.cumsum(jnp.flip(gates, -1), axis=-1), -1)
        q_heads = jnp.einsum("bqhd->bhqd", q).astype(jnp.float32)
        return self.term_fn(self.params, q_heads, counts)


def block_counts(gates: jax.Array, later: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Contextual counts of one key block, the blocks after it already summed.

    Args:
      gates: `[..., q, block_k]` float32, 0 on keys not visible.
      later: `[..., q, 1]` float32, the gate sum over the keys after this block.
    Returns:
      (`c [..., q, block_k]`: `later` plus the block's gates at or after each key, as a
      product with a triangular ones matrix (no scan, no gather), `later + the block's gate
      sum` `[..., q, 1]`, the carry for the block before this one).
    """
    block_k = gates.shape[-1]
    index = jax.lax.broadcasted_iota(jnp.int32, (block_k, block_k), 0)
    at_or_after = (index >= jax.lax.broadcasted_iota(jnp.int32, (block_k, block_k), 1)).astype(
        jnp.float32
    )  # [t, j] = 1 where t >= j
    flat = gates.reshape(-1, block_k)
    suffix = jnp.dot(
        flat, at_or_after, precision="highest", preferred_element_type=jnp.float32
    ).reshape(gates.shape)
    return later + suffix, later + gates.sum(axis=-1, keepdims=True)


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

    def contextual_logits(self, head_dim: int) -> ContextualLogits | None:
        """A logit term from the queries and keys themselves (`ContextualLogits`, its params
        not yet bound: each attention layer creates its own from `specs`), or None."""
        del head_dim
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
