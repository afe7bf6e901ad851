"""Attention through `jax.nn.dot_product_attention` (XLA, or cuDNN flash attention on GPU).

The PE's bias (if any) and the positional causal mask are passed as `bias` and `mask`, both
built at full `[batch, heads | 1, q_len, k_len]` size: this kernel saves no memory over the
reference; it buys speed where cuDNN applies. T5 convention (docs/paper.md "Model"): `scale=1.0`, no
1/sqrt(head_dim). Masked logits take a large negative value in both implementations, so a query
with no visible key gets the reference's uniform row. cuDNN's output agrees on such rows, but
its q, k and v gradients do not: on an H200 one such query put them 230-280% off
(benchmarks/results/gpu_session_h200.md). The loader makes no such query (rows are
right-padded; tests/data/test_loader.py checks it), and with its padding cuDNN's gradients
match the reference to 4e-3 in bfloat16, as the other kernels do.

cuDNN is chosen when compiling for a GPU (`platform`, the mesh's) for bfloat16/float16 inputs
(it supports no float32); if it rejects the shapes at trace time, XLA is used. Everything else
(CPU, TPU, float32) uses 'xla'.

Attention dropout: `jax.nn.dot_product_attention` has none, so a call with `dropout_rng` and
`dropout_rate > 0` (training) falls back to `blockwise.attend`, which draws the dropout inside
its blocks; evaluation and decoding (no dropout) always run here.
"""

import jax
import jax.numpy as jnp
from absl import logging

from lenggen.model.attention import auto, blockwise, reference
from lenggen.model.positional.base import ContextualLogits, TileBias

CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def implementation(backend: str, dtype: jnp.dtype) -> str:
    """The `jax.nn.dot_product_attention` implementation to try first: 'cudnn' or 'xla'."""
    return "cudnn" if backend == "gpu" and dtype in CUDNN_DTYPES else "xla"


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_positions: jax.Array,
    k_positions: jax.Array,
    k_valid: jax.Array,
    bias_fn: reference.BiasFn,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    tile_bias: TileBias | None = None,
    contextual: ContextualLogits | None = None,
    platform: str | None = None,
) -> jax.Array:
    """`jax.nn.dot_product_attention` with the PE bias; same contract as `reference.attend`.

    Args:
      q: `[batch, q_len, heads, head_dim]`.
      k, v: `[batch, k_len, heads, head_dim]`.
      q_positions: `[batch, q_len]` int32.
      k_positions: `[batch, k_len]` int32.
      k_valid: `[batch, k_len]` bool.
      bias_fn: the PE's `bias` hook (may return None).
      dropout_rate, dropout_rng: as in `reference.attend`; with dropout the call is
        `blockwise.attend`.
      tile_bias: unused (the bias comes from `bias_fn`); see `reference.attend`.
      contextual: the PE's `contextual_logits` hook (see `reference.attend`): computed here
        from an extra q.k einsum, at full size, and passed to jax.nn in the bias.
      platform: the platform the program is compiled for ('cpu', 'gpu', 'tpu'); None: this
        process's default backend.
    Returns:
      `[batch, q_len, heads, head_dim]` in v's dtype.
    """
    del tile_bias
    reference.check_dropout_rate(dropout_rate)
    if dropout_rng is not None and dropout_rate > 0.0:
        logging.info("dot_product: attention dropout has no jax.nn form; running blockwise")
        return blockwise.attend(
            q,
            k,
            v,
            q_positions,
            k_positions,
            k_valid,
            bias_fn,
            dropout_rate=dropout_rate,
            dropout_rng=dropout_rng,
            contextual=contextual,
        )
    bias = bias_fn(q_positions, k_positions)  # -> [batch, heads, q_len, k_len] | None
    if bias is not None:
        bias = bias.astype(jnp.float32)
    mask = reference.causal_mask(q_positions, k_positions, k_valid)  # -> [b, 1, q_len, k_len]
    if contextual is not None:
        # The gates need q.k before the softmax: one more einsum, the term joins the bias.
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        term = contextual.dense(q, logits, mask)
        bias = term if bias is None else bias + term
    # Same dtype for q, k, v (the function checks it); the output is cast back to v's dtype.
    q, k = q.astype(v.dtype), k.astype(v.dtype)
    if implementation(auto.resolve(platform), v.dtype) == "cudnn":
        try:  # cuDNN takes the bias in the input dtype and checks shapes at trace time.
            cudnn_bias = None if bias is None else bias.astype(v.dtype)
            return jax.nn.dot_product_attention(
                q, k, v, cudnn_bias, mask, scale=1.0, implementation="cudnn"
            )
        except (ValueError, NotImplementedError, RuntimeError) as error:
            # An unsupported shape or cuDNN version: XLA accepts everything.
            logging.info("dot_product: cuDNN rejected the call (%s); running XLA", error)
    return jax.nn.dot_product_attention(q, k, v, bias, mask, scale=1.0, implementation="xla")
