"""Memory-efficient attention: a scan over key blocks with an online softmax.

The same function as `reference.attend` (T5 convention: no 1/sqrt(head_dim); causal by
position; masked logits take `reference.MASK_VALUE`, so a query with no visible key gets the
reference's uniform row over the real keys), computed one block of `block_k` keys at a time
(Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"; Rabe & Staats 2021,
"Self-attention does not need O(n^2) memory"), for one chunk of `block_q` queries at a time.
The PE's `bias_fn` is called on each (query chunk, key block) pair of positions, so neither the
`[batch, heads, q_len, k_len]` scores nor the bias are ever built: the score temporaries are
`[batch, heads, block_q, block_k]` whatever the length, the others are the size of q, k, v and
the output, so peak memory grows linearly in the length
(benchmarks/results/attention_memory_t5.md).

Keys are padded up to a multiple of `block_k`; the padded slots get -inf logits so, unlike
masked real keys, they never enter the uniform row of a query with no visible key. The running
maximum starts at MASK_VALUE rather than -inf, so a row whose keys are all masked or padded
never computes exp(-inf - -inf).

A contextual hook (`positional.base.ContextualLogits`, CoPE) counts gates over the keys after
each one: the key blocks are then scanned last to first, the carry holding each query's gate
sum over the blocks already seen.

Attention dropout IS supported (training): the keep mask of key block `n` in query chunk `c`
is drawn from `fold_in(fold_in(dropout_rng, c), n)`, so it is a valid Bernoulli mask but not
bit-identical to the reference kernel's. The block body is rematerialised (`jax.checkpoint`)
in the backward pass: gradients store one `(max, sum, accumulator)` carry per key block, not
the block's scores.
"""

import jax
import jax.numpy as jnp

from lenggen.model.attention import reference
from lenggen.model.positional.base import ContextualLogits, TileBias, block_counts

# Score tiles of [batch, heads, 128, 128]: 1/256 of the full scores at length 2048. Larger
# tiles were no faster on the CPU (cache-bound); see benchmarks/results/attention_speed_t5.md.
DEFAULT_BLOCK_Q = 128
DEFAULT_BLOCK_K = 128


def _pad_keys(array: jax.Array, padded_len: int, fill) -> jax.Array:
    """Pads axis 1 of `array [batch, len, ...]` with `fill` up to `padded_len`."""
    pad = [(0, 0)] * array.ndim
    pad[1] = (0, padded_len - array.shape[1])
    return jnp.pad(array, pad, constant_values=fill)


def _to_blocks(array: jax.Array, block_k: int) -> jax.Array:
    """`[batch, num_blocks * block, ...]` -> `[num_blocks, batch, block, ...]` (scan axis 0)."""
    batch, padded_len = array.shape[:2]
    blocks = array.reshape(batch, padded_len // block_k, block_k, *array.shape[2:])
    return jnp.moveaxis(blocks, 1, 0)  # -> [num_blocks, batch, block_k, ...]


def _attend_keys(
    q,
    k,
    v,
    q_positions,
    k_positions,
    k_valid,
    bias_fn,
    dropout_rate,
    dropout_rng,
    block_k: int,
    contextual: ContextualLogits | None = None,
) -> jax.Array:
    """One query chunk against all keys, block by block; arguments as in `attend`.

    With `contextual`, the key blocks go last to first, the carry holding each query's gate sum
    over the blocks already seen (`block_counts`); the online softmax is order-free."""
    batch, q_len, heads, head_dim = q.shape
    k_len = k.shape[1]
    num_blocks = -(-k_len // block_k)
    padded_len = num_blocks * block_k
    in_range = _pad_keys(jnp.ones((batch, k_len), jnp.bool_), padded_len, False)
    xs = (
        jnp.arange(num_blocks),
        _to_blocks(_pad_keys(k, padded_len, 0), block_k),
        _to_blocks(_pad_keys(v, padded_len, 0), block_k),
        _to_blocks(_pad_keys(k_positions, padded_len, 0), block_k),
        _to_blocks(_pad_keys(k_valid, padded_len, False), block_k),
        _to_blocks(in_range, block_k),
    )

    q_heads = None if contextual is None else jnp.einsum("bqhd->bhqd", q).astype(jnp.float32)

    @jax.checkpoint
    def step(carry, block):
        # [b, h, q], [b, h, q], [b, q, h, d], [b, h, q, 1] (contextual) float32
        row_max, row_sum, acc, later = carry
        index, k_block, v_block, k_pos, k_ok, real = block
        logits = jnp.einsum(
            "bqhd,bkhd->bhqk", q, k_block, preferred_element_type=jnp.float32
        )  # -> [batch, heads, q_len, block_k]
        # Padded slots are invalid keys (k_ok False), so this also masks them for the gates.
        visible = reference.causal_mask(q_positions, k_pos, k_ok)
        if contextual is not None:
            gates = jnp.where(visible, contextual.gate_fn(contextual.params, logits), 0.0)
            counts, later = block_counts(gates, later)
            term = contextual.term_fn(contextual.params, q_heads, counts)
        bias = bias_fn(q_positions, k_pos)
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)
        if contextual is not None:
            logits = logits + term
        logits = jnp.where(visible, logits, reference.MASK_VALUE)
        logits = jnp.where(real[:, None, None, :], logits, -jnp.inf)
        new_max = jnp.maximum(row_max, logits.max(axis=-1))
        probs = jnp.exp(logits - new_max[..., None])  # -> [batch, heads, q_len, block_k]
        rescale = jnp.exp(row_max - new_max)
        row_sum = rescale * row_sum + probs.sum(axis=-1)
        if dropout_rng is not None:
            # Dropout acts on the normalised weights; the normaliser (row_sum) keeps every key.
            keep = jax.random.bernoulli(
                jax.random.fold_in(dropout_rng, index), 1.0 - dropout_rate, probs.shape
            )
            probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
        update = jnp.einsum(
            "bhqk,bkhd->bqhd", probs.astype(v.dtype), v_block, preferred_element_type=jnp.float32
        )
        acc = jnp.einsum("bhq,bqhd->bqhd", rescale, acc) + update
        return (new_max, row_sum, acc, later), None

    init = (
        jnp.full((batch, heads, q_len), reference.MASK_VALUE, jnp.float32),
        jnp.zeros((batch, heads, q_len), jnp.float32),
        jnp.zeros((batch, q_len, heads, head_dim), jnp.float32),
        jnp.zeros((batch, heads, q_len, 1), jnp.float32),
    )
    (_, row_sum, acc, _), _ = jax.lax.scan(step, init, xs, reverse=contextual is not None)
    # row_sum >= 1: the row's maximum key contributes exp(0).
    return jnp.einsum("bqhd,bhq->bqhd", acc, 1.0 / row_sum).astype(v.dtype)


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
    block_q: int = DEFAULT_BLOCK_Q,
    block_k: int = DEFAULT_BLOCK_K,
) -> jax.Array:
    """Blockwise attention; same contract as `reference.attend`.

    Args:
      q: `[batch, q_len, heads, head_dim]`.
      k, v: `[batch, k_len, heads, head_dim]`.
      q_positions: `[batch, q_len]` int32.
      k_positions: `[batch, k_len]` int32.
      k_valid: `[batch, k_len]` bool.
      bias_fn: the PE's `bias` hook, called as `bias_fn(q_positions [batch, block_q],
        k_positions [batch, block_k]) -> [batch, heads, block_q, block_k] | None` per block.
      dropout_rate: dropout on the attention probabilities.
      dropout_rng: PRNG key; None means no dropout.
      tile_bias: unused (the bias comes from `bias_fn` per block); see `reference.attend`.
      contextual: the PE's `contextual_logits` hook (see `reference.attend`); its counts are
        carried across key blocks taken last to first.
      block_q: queries per chunk (clipped to q_len: a decoding step is one chunk).
      block_k: keys per block (clipped to k_len).
    Returns:
      `[batch, q_len, heads, head_dim]` in v's dtype.
    """
    del tile_bias
    reference.check_dropout_rate(dropout_rate)
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if size < 1:
            raise ValueError(f"{name} must be >= 1, got {size}")
    batch, q_len = q.shape[:2]
    block_q, block_k = min(block_q, q_len), min(block_k, k.shape[1])
    if dropout_rng is None or dropout_rate == 0.0:
        dropout_rng = None
    keys = (k, v, k_positions, k_valid)
    if block_q == q_len:
        return _attend_keys(
            q,
            *keys[:2],
            q_positions,
            *keys[2:],
            bias_fn,
            dropout_rate,
            dropout_rng,
            block_k,
            contextual,
        )

    # Query chunks one after another (lax.map): only one chunk's score blocks are alive.
    num_chunks = -(-q_len // block_q)
    padded_len = num_chunks * block_q
    chunks = (
        jnp.arange(num_chunks),
        _to_blocks(_pad_keys(q, padded_len, 0), block_q),
        _to_blocks(_pad_keys(q_positions, padded_len, 0), block_q),
    )

    def one_chunk(chunk):
        index, q_chunk, q_pos = chunk
        rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng, index)
        return _attend_keys(
            q_chunk,
            k,
            v,
            q_pos,
            k_positions,
            k_valid,
            bias_fn,
            dropout_rate,
            rng,
            block_k,
            contextual,
        )

    out = jax.lax.map(one_chunk, chunks)  # -> [num_chunks, batch, block_q, heads, head_dim]
    out = jnp.moveaxis(out, 0, 1).reshape(batch, padded_len, *q.shape[2:])
    return out[:, :q_len]  # -> [batch, q_len, heads, head_dim]
