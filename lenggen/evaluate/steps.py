"""The pure evaluation steps: teacher-forced exact match. The loop jits them with explicit
shardings; greedy decoding is `lenggen.model.decoding.greedy_decode`.

Batches follow lenggen.data.loader: `tokens`, `positions`, `valid` and `loss_mask`
`[batch, length]` (1 where the TOKEN is a target token or EOS); logits at t predict the token at
t + 1. With randomized positions (lenggen.model.positional.randomized), teacher forcing and
greedy decoding take each example's positions from one table drawn from a fixed key and its
prompt tokens, so both give every token the same position and agree on every example.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lenggen.model.positional import randomized


def target_correct(logits: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Whether the argmax is the next token, and the mask of target tokens.

    Args:
      logits: `[batch, length, vocab]`.
      batch: with `tokens` and `loss_mask` `[batch, length]`.
    Returns:
      (correct bool, mask float32), each `[batch, length - 1]`.
    """
    correct = jnp.argmax(logits[:, :-1], axis=-1) == batch["tokens"][:, 1:]
    return correct, batch["loss_mask"][:, 1:].astype(jnp.float32)


def teacher_forced_correct(
    params: Any, batch: dict, *, model: nn.Module, max_new_tokens: int | None = None
) -> jax.Array:
    """Whether greedy decoding would reproduce each target exactly: `[batch]` bool.

    Greedy decoding of `max_new_tokens` tokens writes the gold target iff the target and its
    EOS fit in them and, given the gold prefix, the argmax at every target position (EOS
    included) is the gold token, so one parallel forward pass decides sequence exact match.
    `max_new_tokens=None` sets no budget (the argmax alone decides). With randomized positions
    this pass uses the positions `decoding.greedy_decode` gives each token
    (`randomized.model_positions`, which needs `max_new_tokens` and `batch["source_length"]`
    then).
    """
    positions = randomized.model_positions(model.pe, batch, None, max_new_tokens=max_new_tokens)
    logits = model.apply({"params": params}, batch["tokens"], positions, batch["valid"])
    correct, mask = target_correct(logits, batch)
    verdict = jnp.all(correct | (mask == 0), axis=-1)
    if max_new_tokens is None:
        return verdict
    # A target whose tokens and EOS outnumber the budget is cut short by greedy decoding, however
    # right the model is at every position.
    return verdict & (mask.sum(axis=-1) <= max_new_tokens)
