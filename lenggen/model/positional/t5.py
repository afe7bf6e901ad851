"""T5 relative position bias: one learned scalar per (distance bucket, head).

As in the paper (docs/paper.md, "Positional encodings"): ONE table of 32 buckets x heads,
shared by all layers; unidirectional (causal) buckets: distances 0..15 exact, then log-spaced
up to max distance 128, every distance >= 128 in the last bucket (how it reaches unseen
lengths). Bucketing follows Mesh-TF / HF T5
`_relative_position_bucket(bidirectional=False)`, computed in float32 like both.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lenggen.model.positional.base import PositionalEncoding, TileBias


def t5_relative_bucket(
    relative_position: jax.Array, num_buckets: int = 32, max_distance: int = 128
) -> jax.Array:
    """The causal T5 bucket of each relative position.

    Args:
      relative_position: `[...]` int, key position - query position. Positive values (keys in
        the future, masked anyway) fall in bucket 0, like distance 0.
      num_buckets: buckets; the first num_buckets // 2 hold distances 0, 1, ... exactly.
      max_distance: distances >= this share the last bucket.
    Returns:
      `[...]` int32 buckets in [0, num_buckets).
    """
    distance = jnp.maximum(-relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # log(0) is avoided with max(.., 1); those entries take the exact branch anyway.
    safe = jnp.maximum(distance, 1).astype(jnp.float32)
    log_ratio = jnp.log(safe / max_exact) / math.log(max_distance / max_exact)
    if_large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
    if_large = jnp.minimum(if_large, num_buckets - 1)
    return jnp.where(is_small, distance, if_large).astype(jnp.int32)


class T5RelativeBias(PositionalEncoding):
    """`bias[b, h, i, j] = table[bucket(k_pos[b, j] - q_pos[b, i]), h]`.

    The table is N(0, d_model^-0.5) like HF T5's `relative_attention_bias` init.

    Attributes:
      num_buckets: rows of the table (paper: 32).
      max_distance: distances >= this share the last bucket (paper: 128).
    """

    num_buckets: int = 32
    max_distance: int = 128

    def __post_init__(self):
        if self.num_buckets < 2:
            raise ValueError(f"t5 num_buckets must be >= 2, got {self.num_buckets}")
        if self.max_distance <= self.num_buckets // 2:
            raise ValueError(
                f"t5 max_distance must exceed num_buckets // 2 = {self.num_buckets // 2}, "
                f"got {self.max_distance}"
            )
        super().__post_init__()

    def setup(self):
        if self.d_model is None:
            raise ValueError(
                "t5 bias needs d_model (its table init is N(0, d_model^-0.5)), got None"
            )
        self.table = self.param(
            "rel_embedding",
            nn.with_logical_partitioning(
                nn.initializers.normal(self.d_model**-0.5), ("relpos_buckets", "heads")
            ),
            (self.num_buckets, self.num_heads),
        )  # -> [num_buckets, heads]

    def bias(self, q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
        """`q_positions [batch, q_len]`, `k_positions [batch, k_len]`
        -> `[batch, heads, q_len, k_len]` float32; the table read by a gather."""
        relative = k_positions[:, None, :] - q_positions[:, :, None]  # -> [batch, q_len, k_len]
        buckets = t5_relative_bucket(relative, self.num_buckets, self.max_distance)
        values = jnp.take(self.table, buckets, axis=0)  # -> [batch, q_len, k_len, heads]
        return jnp.einsum("bqkh->bhqk", values).astype(jnp.float32)

    def tile_bias(self) -> TileBias:
        """`([table [num_buckets, heads]], q_positions [tq], k_positions [tk])
        -> [heads, tq, tk]`: the table read as a one-hot over buckets (no gather)."""
        num_buckets, max_distance = self.num_buckets, self.max_distance

        def tile(params, q_positions, k_positions):
            (table,) = params  # -> [rows >= num_buckets, heads]; padded rows are never selected
            (tq,), (tk,), (rows, heads) = q_positions.shape, k_positions.shape, table.shape
            relative = k_positions[None, :] - q_positions[:, None]  # -> [tq, tk]
            buckets = t5_relative_bucket(relative, num_buckets, max_distance)
            one_hot = buckets[:, None, :] == jax.lax.broadcasted_iota(jnp.int32, (tq, rows, tk), 1)
            # A matmul per query row, batched over the leading axis, then a swap of the two
            # leading axes: no reshape splits the lane (last) axis, which Mosaic rejects on
            # TPU v4. One nonzero product per entry and HIGHEST precision: every entry is exact.
            values = jax.lax.dot_general(
                jnp.broadcast_to(table.T[None], (tq, heads, rows)),
                one_hot.astype(table.dtype),
                (((2,), (1,)), ((0,), (0,))),
                precision=jax.lax.Precision.HIGHEST,
                preferred_element_type=jnp.float32,
            )  # -> [tq, heads, tk]
            return jnp.swapaxes(values, 0, 1)  # -> [heads, tq, tk]

        def triton_tile(params, q_positions, k_positions):
            # One 2-D matmul over every (query, key) pair (Triton has no batched dot_general).
            (table,) = params
            (tq,), (tk,), (rows, heads) = q_positions.shape, k_positions.shape, table.shape
            relative = k_positions[None, :] - q_positions[:, None]  # -> [tq, tk]
            buckets = t5_relative_bucket(relative, num_buckets, max_distance)
            one_hot = buckets[:, :, None] == jax.lax.broadcasted_iota(jnp.int32, (tq, tk, rows), 2)
            values = jnp.dot(
                one_hot.astype(table.dtype).reshape(tq * tk, rows),
                table,
                precision=jax.lax.Precision.HIGHEST,
                preferred_element_type=jnp.float32,
            )  # -> [tq * tk, heads]
            return values.T.reshape(heads, tq, tk)

        return TileBias(tile, (self.table,), triton_fn=triton_tile)
