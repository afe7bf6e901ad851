import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lenggen.train import optimizer


def _train_config(**overrides):
    values = dict(
        num_steps=100, learning_rate=3e-5, end_learning_rate=1e-7, warmup_fraction=0.06,
        weight_decay=0.05, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8, grad_clip_norm=1.0,
    )
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def test_schedule_warms_up_linearly_then_decays_to_the_end_rate():
    schedule = optimizer.learning_rate_schedule(_train_config())
    # 6% of 100 steps = 6 warmup steps: lr(t) = 3e-5 * t / 6.
    np.testing.assert_allclose(float(schedule(0)), 0.0)
    np.testing.assert_allclose(float(schedule(3)), 1.5e-5, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(6)), 3e-5, rtol=1e-6)
    # Then linear over the remaining 94 steps from 3e-5 to 1e-7.
    np.testing.assert_allclose(float(schedule(53)), 3e-5 + (1e-7 - 3e-5) * 47 / 94, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(100)), 1e-7, rtol=1e-5)


def test_weight_decay_skips_norm_scales_and_biases_only():
    params = {
        "block_0": {"pre_attention_norm": {"scale": jnp.ones(3)}, "query": {"kernel": jnp.ones(3)}},
        "pe": {"hidden_bias": jnp.ones(3)},
    }
    tx = optimizer.make_optimizer(_train_config(learning_rate=1.0, warmup_fraction=0.0,
                                                end_learning_rate=1.0))
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    # With zero gradients Adam's update is 0, so only decoupled weight decay moves a parameter:
    # -lr * wd * p = -0.05 for the kernel, and nothing for the norm scale.
    np.testing.assert_allclose(updates["block_0"]["query"]["kernel"], -0.05 * np.ones(3), rtol=1e-6)
    np.testing.assert_allclose(updates["block_0"]["pre_attention_norm"]["scale"], np.zeros(3))
    np.testing.assert_allclose(updates["pe"]["hidden_bias"], np.zeros(3))
