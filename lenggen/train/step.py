"""The pure train and evaluation steps. They are jitted with explicit shardings by the loop.

Batches follow lenggen.data.loader: `tokens`, `positions`, `valid` `[batch, length]` and
`loss_mask` `[batch, length]`, 1 where the TOKEN is a target token or EOS. Logits at t predict
the token at t + 1, so the loss pairs `logits[:, :-1]` with `tokens[:, 1:]` under
`loss_mask[:, 1:]`.

Randomized positions (lenggen.model.positional.randomized; on when the model's PE config sets
`randomized_max_position` M > 0) replace `batch["positions"]` in every step, as the reference
implementation samples them in training and at evaluation: a train step draws them from its step
key; teacher forcing and greedy decoding take them from one table per example, drawn from a fixed
key and the example's prompt tokens, so both give each token the same position and agree on
every example (`randomized.decoding_table`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lenggen.model import decoding
from lenggen.model.positional import randomized

# Key streams derived from the train step's key (dropout uses the step key itself).
POSITIONS_STREAM = 1


def next_token_terms(logits: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-token cross entropy, correctness and mask of the target tokens.

    Args:
      logits: `[batch, length, vocab]`.
      batch: with `tokens` and `loss_mask` `[batch, length]`.
    Returns:
      (cross_entropy, correct, mask), each `[batch, length - 1]`.
    """
    predicted_logits = logits[:, :-1].astype(jnp.float32)
    labels = batch["tokens"][:, 1:]
    mask = batch["loss_mask"][:, 1:].astype(jnp.float32)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(predicted_logits, labels)
    correct = jnp.argmax(predicted_logits, axis=-1) == labels
    return cross_entropy, correct, mask


def loss_and_metrics(logits: jax.Array, batch: dict) -> tuple[jax.Array, dict]:
    """Mean cross entropy over target tokens of the whole batch (as HF's loss), plus metrics."""
    cross_entropy, correct, mask = next_token_terms(logits, batch)
    num_tokens = jnp.maximum(mask.sum(), 1.0)
    loss = (cross_entropy * mask).sum() / num_tokens
    sequence_correct = jnp.all(correct | (mask == 0), axis=-1)
    metrics = dict(
        loss=loss,
        token_accuracy=(correct * mask).sum() / num_tokens,
        sequence_accuracy=sequence_correct.mean(),
        num_target_tokens=mask.sum(),
    )
    return loss, metrics


def model_positions(
    model: nn.Module, batch: dict, key: jax.Array | None, *, max_new_tokens: int | None = None
) -> jax.Array:
    """The positions the model sees: `batch["positions"]`, or randomized positions when the
    model's PE config asks for them.

    Args:
      model: a Decoder (its `pe` config holds `randomized_max_position`).
      batch: `positions`, `valid` `[batch, length]`; for evaluation with randomized positions
        also `tokens` `[batch, length]` and `source_length` `[batch]` (prompt tokens per row).
      key: the training draw's key; None for evaluation: the positions greedy decoding with a
        budget of `max_new_tokens` gives each token (`randomized.evaluation_positions`).
      max_new_tokens: the decoding budget (`config.eval.max_new_tokens`); needed for
        evaluation with randomized positions.
    Returns:
      `[batch, length]` int32.
    """
    max_position = randomized.max_position_of(model.pe)
    if max_position == 0:
        return batch["positions"]
    if key is not None:
        return randomized.sample_positions(key, batch["valid"], max_position)
    if max_new_tokens is None or "source_length" not in batch:
        raise ValueError(
            f"Evaluating with randomized positions (M={max_position}) needs max_new_tokens "
            f"(got {max_new_tokens!r}) and batch['source_length'] (batch keys: "
            f"{sorted(batch)}): each token's position comes from the table greedy decoding "
            "draws for its prompt and budget."
        )
    columns = jnp.arange(batch["valid"].shape[1])[None, :]  # -> [1, length]
    prompt_valid = batch["valid"] & (columns < batch["source_length"][:, None])
    return randomized.evaluation_positions(
        batch["tokens"], batch["valid"], prompt_valid, max_position, max_new_tokens
    )


def train_step(
    state: dict, batch: dict, dropout_key: jax.Array, *, model: nn.Module,
    optimizer: optax.GradientTransformation, schedule: optax.Schedule,
) -> tuple[dict, dict]:
    """One AdamW step on `state = {step, params, opt_state}`; returns the new state and metrics.

    Dropout randomness is `fold_in(dropout_key, step)`, so a resumed run draws the same masks;
    randomized positions (if on) come from `fold_in(that key, POSITIONS_STREAM)`.
    """
    step_key = jax.random.fold_in(dropout_key, state["step"])
    positions = model_positions(model, batch, jax.random.fold_in(step_key, POSITIONS_STREAM))

    def loss_fn(params):
        logits = model.apply(
            {"params": params}, batch["tokens"], positions, batch["valid"],
            deterministic=False, rngs={"dropout": step_key},
        )
        return loss_and_metrics(logits, batch)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics.update(grad_norm=optax.tree.norm(grads), learning_rate=schedule(state["step"]))
    new_state = dict(step=state["step"] + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def teacher_forced_correct(
    params: Any, batch: dict, *, model: nn.Module, max_new_tokens: int | None = None
) -> jax.Array:
    """Whether greedy decoding would reproduce each target exactly: `[batch]` bool.

    Greedy decoding writes the gold target iff, given the gold prefix, the argmax at every
    target position (EOS included) is the gold token (DESIGN.md, "Evaluation"), so one parallel
    forward pass decides sequence exact match. With randomized positions this pass uses the
    positions `greedy_decode` gives each token (`model_positions`, which needs `max_new_tokens`
    and `batch["source_length"]` then).
    """
    positions = model_positions(model, batch, None, max_new_tokens=max_new_tokens)
    logits = model.apply({"params": params}, batch["tokens"], positions, batch["valid"])
    _, correct, mask = next_token_terms(logits, batch)
    return jnp.all(correct | (mask == 0), axis=-1)


def greedy_decode(
    params: Any, prompt_tokens: jax.Array, prompt_valid: jax.Array, *, model: nn.Module,
    max_new_tokens: int, eos_id: int | jax.Array,
) -> jax.Array:
    """KV-cache greedy decoding at the positions the model is evaluated on.

    Args:
      prompt_tokens, prompt_valid: `[batch, prompt_len]` left-padded prompts.
    Returns:
      `[batch, max_new_tokens]` int32; positions 0, 1, ... per example, or with randomized
      positions each example's `randomized.decoding_table` (the positions teacher forcing
      gives the same tokens).
    """
    max_position = randomized.max_position_of(model.pe)
    table = None
    if max_position > 0:
        table = randomized.decoding_table(
            prompt_tokens, prompt_valid, max_position, max_new_tokens
        )
    return decoding.greedy_decode(
        model, params, prompt_tokens, prompt_valid, max_new_tokens, eos_id, position_table=table
    )
