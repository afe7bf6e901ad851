"""The pure train and evaluation steps. They are jitted with explicit shardings by the loop.

Batches follow lenggen.data.loader: `tokens`, `positions`, `valid` `[batch, length]` and
`loss_mask` `[batch, length]`, 1 where the TOKEN is a target token or EOS. Logits at t predict
the token at t + 1, so the loss pairs `logits[:, :-1]` with `tokens[:, 1:]` under
`loss_mask[:, 1:]`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


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


def train_step(
    state: dict, batch: dict, dropout_key: jax.Array, *, model: nn.Module,
    optimizer: optax.GradientTransformation, schedule: optax.Schedule,
) -> tuple[dict, dict]:
    """One AdamW step on `state = {step, params, opt_state}`; returns the new state and metrics.

    Dropout randomness is `fold_in(dropout_key, step)`, so a resumed run draws the same masks.
    """
    step_key = jax.random.fold_in(dropout_key, state["step"])

    def loss_fn(params):
        logits = model.apply(
            {"params": params}, batch["tokens"], batch["positions"], batch["valid"],
            deterministic=False, rngs={"dropout": step_key},
        )
        return loss_and_metrics(logits, batch)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics.update(grad_norm=optax.tree.norm(grads), learning_rate=schedule(state["step"]))
    new_state = dict(step=state["step"] + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def teacher_forced_correct(params: Any, batch: dict, *, model: nn.Module) -> jax.Array:
    """Whether greedy decoding would reproduce each target exactly: `[batch]` bool.

    Greedy decoding writes the gold target iff, given the gold prefix, the argmax at every
    target position (EOS included) is the gold token (DESIGN.md, "Evaluation"), so one parallel
    forward pass decides sequence exact match.
    """
    logits = model.apply({"params": params}, batch["tokens"], batch["positions"], batch["valid"])
    _, correct, mask = next_token_terms(logits, batch)
    return jnp.all(correct | (mask == 0), axis=-1)
