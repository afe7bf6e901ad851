"""Tests of lenggen/model/positional/kerple.py: the log-variant bias against hand-worked
values, shift invariance, the init range, the eps floor and its gradient, option checks.

Tolerance: float32 logs agree with float64 to 1e-6 relative.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model import positional
from lenggen.model.positional.kerple import KERPLE, kerple_log_bias

# 3 heads, hand-set: r1 = [1, 2, 0.5], r2 = [1, 0.5, 3].
R1, R2 = np.array([1.0, 2.0, 0.5]), np.array([1.0, 0.5, 3.0])


def _bias(q_positions, k_positions, r1=R1, r2=R2, pe=None):
    pe = pe or KERPLE(num_heads=3)
    params = {"params": {"r1": jnp.asarray(r1, jnp.float32), "r2": jnp.asarray(r2, jnp.float32)}}
    q, k = jnp.asarray(q_positions, jnp.int32), jnp.asarray(k_positions, jnp.int32)
    return np.asarray(pe.apply(params, q, k, method="bias"))


def test_hand_worked_values():
    # Query at 5, keys at 5, 4, 2, 0: distances 0, 1, 3, 5.
    bias = _bias([[5]], [[5, 4, 2, 0]])
    assert bias.shape == (1, 3, 1, 4) and bias.dtype == np.float32
    expected = [
        [0.0, -math.log(2), -math.log(4), -math.log(6)],  # r1 1, r2 1: -log(1 + d)
        [0.0, -2 * math.log(1.5), -2 * math.log(2.5), -2 * math.log(3.5)],  # -2 log(1 + d / 2)
        [0.0, -0.5 * math.log(4), -0.5 * math.log(10), -0.5 * math.log(16)],  # -log(1 + 3d) / 2
    ]
    np.testing.assert_allclose(bias[0, :, 0], expected, rtol=1e-6)
    # |i - j|: a future key at distance 3 gets the past key's value (the mask removes it).
    np.testing.assert_allclose(_bias([[5]], [[8]])[0, :, 0, 0], bias[0, :, 0, 2], rtol=1e-6)


def test_pure_function_matches_numpy():
    q, k = np.array([4, 0, 6, 2, 150]), np.array([6, 1, 3, 0, 5, 2, 4])
    got = kerple_log_bias(jnp.asarray(q), jnp.asarray(k), jnp.asarray(R1), jnp.asarray(R2))
    distance = np.abs(q[:, None] - k[None, :]).astype(np.float64)
    expected = -R1[:, None, None] * np.log(1 + R2[:, None, None] * distance)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_shift_invariant():
    q = np.array([[0, 3, 7, 9, 12]])
    k = np.array([[1, 2, 3, 5, 8, 13, 21]])
    np.testing.assert_allclose(_bias(q, k), _bias(q + 1000, k + 1000), rtol=1e-6)


def test_each_parameter_is_floored_at_eps_with_the_gradient_passing_through():
    # r1 = -1 and r2 = 0.001 act as eps = 0.01: -0.01 * log(1 + 0.01 * 4) at distance 4.
    bias = _bias([[4]], [[0]], r1=[-1.0, 1.0, 1.0], r2=[0.001, 1.0, 1.0])
    np.testing.assert_allclose(bias[0, 0, 0, 0], -0.01 * math.log(1.04), rtol=1e-6)
    pe = KERPLE(num_heads=3)

    def total(r1):
        params = {"params": {"r1": r1, "r2": jnp.ones(3)}}
        return pe.apply(params, jnp.array([[4]]), jnp.array([[0]]), method="bias").sum()

    # d/dr1 = -log(1 + 4) for every head, the floored one (r1 = -1) included.
    grad = jax.grad(total)(jnp.array([-1.0, 1.0, 0.5]))
    np.testing.assert_allclose(grad, [-math.log(5)] * 3, rtol=1e-6)


def test_init_draws_r1_from_0_to_2_and_r2_from_0_to_1_per_head():
    pe = KERPLE(num_heads=64)
    positions = jnp.zeros((1, 1), jnp.int32)
    params = pe.init(jax.random.key(0), positions, positions, method="bias")["params"]
    r1, r2 = (np.asarray(jax.tree.leaves(params[name])[0]) for name in ("r1", "r2"))
    assert r1.shape == r2.shape == (64,)
    assert 0.0 <= r1.min() and r1.max() < 2.0 and r1.max() > 1.5
    assert 0.0 <= r2.min() and r2.max() < 1.0 and r2.max() > 0.75


def test_registered_with_its_defaults():
    assert "kerple" in positional.names()
    assert positional.get("kerple") is KERPLE
    assert positional.default_options("kerple") == {
        "init_r1_max": 2.0,
        "init_r2_max": 1.0,
        "eps": 0.01,
    }


@pytest.mark.parametrize("name", ["init_r1_max", "init_r2_max", "eps"])
def test_bad_options_are_refused(name):
    with pytest.raises(ValueError, match=f"kerple {name} must be > 0, got 0.0"):
        KERPLE(num_heads=3, **{name: 0.0})
