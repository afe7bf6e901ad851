"""Greedy decoding, with the KV cache and by full recomputation (the baseline it must equal).

Prompts are LEFT-padded (`prompt_valid` False on the pads) so every example's next token goes
in the same column. Positions follow each token's rank r among its example's real tokens
(prompt, then generated): r itself, so each example's first real token is position 0 whatever
its padding, or `position_table[b, r]` with a table: by default, for a model trained with
randomized positions, the table its evaluation uses
(lenggen.model.positional.randomized.decoding_table), so greedy decoding and teacher forcing
(lenggen.evaluate.steps) give every token the same position. After an example emits EOS it keeps
emitting EOS. Both functions are jitted with `model` and `max_new_tokens` static (`eos_id` is
traced: a new EOS id does not recompile), and stop early once every example has emitted EOS
(the rest of the output is EOS). The two agree exactly as long as no two real tokens of an
example share a position (a table with distinct entries for every rank decoding reaches):
otherwise the recomputation lets an earlier token attend to a later one at its position.

`params` is the 'params' collection of `model.init(...)` (boxed or unboxed).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from lenggen.model import kv_cache
from lenggen.model.positional import randomized


def prompt_positions(valid: jax.Array, position_table: jax.Array | None = None) -> jax.Array:
    """`[batch, length]` bool -> `[batch, length]` int32: each token's rank cumsum(valid) - 1,
    pads clipped to rank 0, mapped through `position_table` `[batch, width]` when given
    (`randomized.positions_from_table`).

    Clipping keeps pad positions inside every PE's range (a learned table reads NaN below 0);
    pads are never attended to, so their position is otherwise irrelevant.
    """
    if position_table is not None:
        return randomized.positions_from_table(position_table, valid)
    return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=-1) - 1, 0)


def _check(
    prompt_tokens: jax.Array,
    prompt_valid: jax.Array,
    max_new_tokens: int,
    position_table: jax.Array | None,
) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt_tokens.ndim != 2 or prompt_tokens.shape != prompt_valid.shape:
        raise ValueError(
            "prompt_tokens and prompt_valid must both be [batch, length], got "
            f"{prompt_tokens.shape} and {prompt_valid.shape}"
        )
    if position_table is not None and (
        position_table.ndim != 2
        or position_table.shape[0] != prompt_tokens.shape[0]
        or position_table.shape[1] < 1
        or not jnp.issubdtype(position_table.dtype, jnp.integer)
    ):
        raise ValueError(
            f"position_table must be an integer [batch={prompt_tokens.shape[0]}, width >= 1] "
            f"array, got {position_table.dtype} {position_table.shape}"
        )


def _table(
    model: nn.Module,
    prompt_tokens: jax.Array,
    prompt_valid: jax.Array,
    max_new_tokens: int,
    position_table: jax.Array | None,
) -> jax.Array | None:
    """The checked arguments' position table: `position_table`, or the model's randomized
    `decoding_table` (None: positions 0, 1, ...)."""
    max_position = randomized.max_position_of(model.pe)
    if position_table is None and max_position > 0:
        position_table = randomized.decoding_table(
            prompt_tokens, prompt_valid, max_position, max_new_tokens
        )
    _check(prompt_tokens, prompt_valid, max_new_tokens, position_table)
    return position_table


def _next_token(logits: jax.Array, done: jax.Array, eos_id: jax.Array) -> jax.Array:
    """Argmax of `logits [batch, vocab]`, EOS where the example is `done [batch]`."""
    return jnp.where(done, eos_id, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens"))
def greedy_decode(
    model: nn.Module,
    params,
    prompt_tokens: jax.Array,
    prompt_valid: jax.Array,
    max_new_tokens: int,
    eos_id: int | jax.Array,
    position_table: jax.Array | None = None,
) -> jax.Array:
    """Greedy decoding with the KV cache: one prefill call, then single-token steps.

    Args:
      model: a Decoder.
      params: its parameters.
      prompt_tokens: `[batch, prompt_len]` int32, left-padded.
      prompt_valid: `[batch, prompt_len]` bool, False on the pads.
      max_new_tokens: tokens to generate (static).
      eos_id: end-of-sequence token id.
      position_table: `[batch, width]` int, the position of each example's r-th real token
        (its last entry for r >= width); None means the model's own: its randomized
        `decoding_table` when its PE config sets `randomized_max_position`, else 0, 1, ...
    Returns:
      `[batch, max_new_tokens]` int32.
    """
    position_table = _table(model, prompt_tokens, prompt_valid, max_new_tokens, position_table)
    batch, prompt_len = prompt_tokens.shape
    # The last new token is never fed back, so prompt_len + max_new_tokens - 1 slots suffice.
    cache = kv_cache.init_cache(model, batch, prompt_len + max_new_tokens - 1)
    logits, state = model.apply(
        {"params": params, "cache": cache},
        prompt_tokens,
        prompt_positions(prompt_valid, position_table),
        prompt_valid,
        decode=True,
        mutable=["cache"],
    )
    token = _next_token(logits[:, -1], jnp.zeros((batch,), jnp.bool_), eos_id)
    output = jnp.full((batch, max_new_tokens), eos_id, jnp.int32).at[:, 0].set(token)
    # Each example's first new token comes right after its last real prompt token: its rank
    # is the prompt's count of real tokens.
    rank = prompt_valid.sum(axis=-1, dtype=jnp.int32)[:, None]  # -> [batch, 1]

    def cond(carry):
        step, _, _, done, _, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        step, token, rank, done, cache, output = carry
        position = (
            rank if position_table is None else randomized.position_of_rank(position_table, rank)
        )  # -> [batch, 1]
        logits, state = model.apply(
            {"params": params, "cache": cache},
            token[:, None],
            position,
            jnp.ones((batch, 1), jnp.bool_),
            decode=True,
            mutable=["cache"],
        )
        token = _next_token(logits[:, 0], done, eos_id)
        output = jax.lax.dynamic_update_slice(output, token[:, None], (0, step))
        return step + 1, token, rank + 1, done | (token == eos_id), state["cache"], output

    carry = (jnp.int32(1), token, rank, token == eos_id, state["cache"], output)
    return jax.lax.while_loop(cond, body, carry)[-1]


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens"))
def full_recompute_greedy_decode(
    model: nn.Module,
    params,
    prompt_tokens: jax.Array,
    prompt_valid: jax.Array,
    max_new_tokens: int,
    eos_id: int | jax.Array,
    position_table: jax.Array | None = None,
) -> jax.Array:
    """Greedy decoding without a cache: every step re-runs the whole sequence.

    Same contract as `greedy_decode`. The sequence buffer holds prompt + max_new_tokens slots;
    slots not yet generated are invalid keys, so earlier outputs never see them.
    """
    position_table = _table(model, prompt_tokens, prompt_valid, max_new_tokens, position_table)
    batch, prompt_len = prompt_tokens.shape
    tokens = jnp.concatenate(
        [prompt_tokens.astype(jnp.int32), jnp.zeros((batch, max_new_tokens), jnp.int32)], axis=1
    )  # -> [batch, prompt_len + max_new_tokens]
    valid = jnp.concatenate([prompt_valid, jnp.zeros((batch, max_new_tokens), jnp.bool_)], axis=1)
    output = jnp.full((batch, max_new_tokens), eos_id, jnp.int32)

    def cond(carry):
        step, _, _, done, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        step, tokens, valid, done, output = carry
        positions = prompt_positions(valid, position_table)
        logits = model.apply({"params": params}, tokens, positions, valid)
        last = jax.lax.dynamic_index_in_dim(logits, prompt_len + step - 1, axis=1, keepdims=False)
        token = _next_token(last, done, eos_id)
        tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, prompt_len + step))
        valid = jax.lax.dynamic_update_slice(
            valid, jnp.ones((batch, 1), jnp.bool_), (0, prompt_len + step)
        )
        output = jax.lax.dynamic_update_slice(output, token[:, None], (0, step))
        return step + 1, tokens, valid, done | (token == eos_id), output

    carry = (jnp.int32(0), tokens, valid, jnp.zeros((batch,), jnp.bool_), output)
    return jax.lax.while_loop(cond, body, carry)[-1]
