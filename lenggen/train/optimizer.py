"""AdamW with the paper's schedule (docs/paper.md, "Training").

HF's Trainer, which the paper used, applies weight decay to every parameter except biases and
LayerNorm weights; T5 blocks have no biases, so that is the RMSNorm scales and the biases of
PEs that have them (FIRE's MLP).
"""

import jax
import ml_collections
import optax


def learning_rate_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0 over `warmup_fraction` of the steps, then linear decay to the end
    learning rate at `num_steps`."""
    warmup_steps = int(round(train.warmup_fraction * train.num_steps))
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, train.learning_rate, max(warmup_steps, 1)),
            optax.linear_schedule(
                train.learning_rate,
                train.end_learning_rate,
                max(train.num_steps - warmup_steps, 1),
            ),
        ],
        boundaries=[warmup_steps],
    )


def _decay_mask(params):
    """True for parameters that get weight decay: all but normalisation scales and biases."""

    def decays(path, _):
        names = [str(getattr(entry, "key", "")).lower() for entry in path]
        return not any("norm" in name or "bias" in name for name in names)

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(train.grad_clip_norm),
        optax.adamw(
            learning_rate_schedule(train),
            b1=train.adam_b1,
            b2=train.adam_b2,
            eps=train.adam_eps,
            weight_decay=train.weight_decay,
            mask=_decay_mask,
        ),
    )
