"""The pure train step and its loss. It is jitted with explicit shardings by the loop
(train/state.py); the evaluation steps are in lenggen/evaluate/steps.py.

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

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lenggen.evaluate import steps as eval_steps
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
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(predicted_logits, labels)
    correct, mask = eval_steps.target_correct(logits, batch)
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


def train_step(
    state: dict,
    batch: dict,
    dropout_key: jax.Array,
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
) -> tuple[dict, dict]:
    """One AdamW step on `state = {step, params, opt_state}`; returns the new state and metrics.

    Dropout randomness is `fold_in(dropout_key, step)`, so a resumed run draws the same masks;
    randomized positions (if on) come from `fold_in(that key, POSITIONS_STREAM)`.
    """
    step_key = jax.random.fold_in(dropout_key, state["step"])
    positions = randomized.model_positions(
        model.pe, batch, jax.random.fold_in(step_key, POSITIONS_STREAM)
    )

    def loss_fn(params):
        logits = model.apply(
            {"params": params},
            batch["tokens"],
            positions,
            batch["valid"],
            deterministic=False,
            rngs={"dropout": step_key},
        )
        return loss_and_metrics(logits, batch)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics.update(grad_norm=optax.tree.norm(grads), learning_rate=schedule(state["step"]))
    new_state = dict(step=state["step"] + 1, params=params, opt_state=opt_state)
    return new_state, metrics
