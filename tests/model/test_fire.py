"""Tests of lenggen/model/positional/fire.py: psi, the normalised distance, the MLP bias with
hand-set parameters, what shifting positions does, init and option checks.

Tolerance: float32 values computed from logs agree with float64 numpy to 1e-6.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model import positional
from lenggen.model.decoder import Decoder
from lenggen.model.positional.fire import FIRE, fire_normalized_distance, fire_psi
from tests.model import tiny

# A hand-set MLP, width 2, 3 heads: hidden = relu(x * [1, -1] + [0, 0.5]).
HAND = dict(
    c=np.array([1.0]),
    threshold_multiplier=np.array([4.0 / 512.0]),  # L = 4 with the default init_threshold 512
    hidden_kernel=np.array([1.0, -1.0]),
    hidden_bias=np.array([0.0, 0.5]),
    output_kernel=np.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]]),
    output_bias=np.array([0.1, 0.2, 0.3]),
)


def _params(**overrides):
    return {"params": {k: jnp.asarray(v, jnp.float32) for k, v in dict(HAND, **overrides).items()}}


def _bias(q_positions, k_positions, pe=None, **overrides):
    pe = pe or FIRE(num_heads=3, mlp_width=2, eps=0.0)
    q, k = jnp.asarray(q_positions, jnp.int32), jnp.asarray(k_positions, jnp.int32)
    return np.asarray(pe.apply(_params(**overrides), q, k, method="bias"))


def _numpy_fire(q_positions, k_positions, params, eps):
    """The paper's formula written independently in float64 numpy: [batch, heads, q, k]."""
    q = np.asarray(q_positions, np.float64)[:, :, None]
    k = np.asarray(k_positions, np.float64)[:, None, :]
    c = abs(params["c"][0])
    threshold = abs(params["threshold_multiplier"][0] * 512.0)
    x = np.log(1 + c * np.abs(q - k)) / (np.log(1 + c * np.maximum(q, threshold)) + eps)
    hidden = np.maximum(x[..., None] * params["hidden_kernel"] + params["hidden_bias"], 0.0)
    out = hidden @ params["output_kernel"] + params["output_bias"]  # -> [b, q, k, heads]
    return np.transpose(out, (0, 3, 1, 2))


def test_psi_hand_worked():
    x = jnp.array([0, 10, 30, -10])
    np.testing.assert_allclose(
        fire_psi(x, 0.1), [0.0, math.log(2), math.log(4), math.log(2)], rtol=1e-6
    )
    # |c| is used: a negative c gives the same transform.
    np.testing.assert_allclose(fire_psi(x, -0.1), fire_psi(x, 0.1))


def test_normalized_distance_hand_worked():
    # c = 1, L = 4: psi(d) = log(1 + d), normaliser log(1 + max(4, i)).
    q = jnp.array([[0, 3, 7, 7]])
    k = jnp.array([[0, 1, 3, 0]])
    x = np.asarray(fire_normalized_distance(q, k, jnp.float32(1.0), jnp.float32(4.0), 0.0))
    assert x.shape == (1, 4, 4)
    assert x[0, 0, 0] == 0.0  # i = j = 0
    np.testing.assert_allclose(x[0, 1, 1], math.log(3) / math.log(5), rtol=1e-6)  # i=3 < L
    np.testing.assert_allclose(x[0, 2, 2], math.log(5) / math.log(8), rtol=1e-6)  # i=7 > L
    np.testing.assert_allclose(x[0, 2, 0], 1.0, rtol=1e-6)  # the first key of i >= L
    np.testing.assert_allclose(x[0, 3, 2], math.log(5) / math.log(8), rtol=1e-6)
    # eps is added to the normaliser: it keeps i = 0, L = 0 finite.
    at_zero = fire_normalized_distance(q[:, :1], k[:, :1], jnp.float32(1.0), jnp.float32(0.0), 1e-6)
    assert float(at_zero[0, 0, 0]) == 0.0


def test_bias_hand_worked_values():
    # x = 0 (j = i): hidden [0, 0.5] -> out [0, 0.5, -0.5] + b = [0.1, 0.7, -0.2].
    # x = 1 (i = 7 >= L, j = 0): hidden [1, 0] -> out [1, 2, 0] + b = [1.1, 2.2, 0.3].
    bias = _bias([[7, 7]], [[7, 0, 3]])
    assert bias.shape == (1, 3, 2, 3) and bias.dtype == np.float32
    np.testing.assert_allclose(bias[0, :, 0, 0], [0.1, 0.7, -0.2], atol=1e-6)
    np.testing.assert_allclose(bias[0, :, 0, 1], [1.1, 2.2, 0.3], atol=1e-6)
    # x = log 5 / log 8 = 0.774: hidden [0.774, 0] -> [0.874, 1.748, 0.3].
    x = math.log(5) / math.log(8)
    np.testing.assert_allclose(bias[0, :, 1, 2], [x + 0.1, 2 * x + 0.2, 0.3], atol=1e-6)


def test_bias_matches_independent_numpy_formula():
    # Unequal sizes (batch 2, q 5, k 7) so a transposed axis fails; positions below and above L.
    rng = np.random.default_rng(0)
    params = dict(
        c=np.array([0.3]),
        threshold_multiplier=np.array([-6.0 / 512.0]),  # |L| = 6
        hidden_kernel=rng.standard_normal(4),
        hidden_bias=rng.standard_normal(4),
        output_kernel=rng.standard_normal((4, 3)),
        output_bias=rng.standard_normal(3),
    )
    q = np.array([[0, 2, 5, 9, 40], [3, 3, 7, 100, 1000]])
    k = np.array([[0, 1, 2, 5, 9, 30, 40], [0, 3, 3, 7, 50, 100, 999]])
    pe = FIRE(num_heads=3, mlp_width=4)
    got = _bias(q, k, pe=pe, **params)
    expected = _numpy_fire(q, k, params, eps=1e-6)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_shift_invariant_below_the_threshold():
    # While every query is below L, the normaliser is the constant psi(L): only i - j matters.
    q, k = np.array([[1, 2, 5]]), np.array([[0, 1, 2, 5]])
    params = dict(threshold_multiplier=np.array([100.0 / 512.0]))  # L = 100
    np.testing.assert_allclose(_bias(q + 37, k + 37, **params), _bias(q, k, **params), atol=1e-6)


def test_not_shift_invariant_beyond_the_threshold():
    # L = 4: queries >= 4 normalise by psi(i), so a shift changes off-diagonal values...
    q, k = np.array([[5, 6]]), np.array([[0, 3, 5]])
    base, shifted = _bias(q, k), _bias(q + 20, k + 20)
    assert np.abs(base[0, :, 0, 1] - shifted[0, :, 0, 1]).max() > 1e-2
    # ...while distance 0 always maps to x = 0 and the first key (position 0) to x = 1:
    # progressive interpolation puts the whole context of any query into [0, 1].
    for i in (4, 50, 5000):
        bias = _bias([[i]], [[i, 0]])
        np.testing.assert_allclose(bias[0, :, 0, 0], [0.1, 0.7, -0.2], atol=1e-6)
        np.testing.assert_allclose(bias[0, :, 0, 1], [1.1, 2.2, 0.3], atol=1e-5)


def test_init_as_the_paper():
    pe = FIRE(num_heads=5, d_model=16)
    positions = jnp.arange(3)[None]
    boxed = pe.init(jax.random.key(0), positions, positions, method="bias")["params"]
    names = {k: v.names for k, v in boxed.items()}
    assert names == {
        "c": (None,),
        "threshold_multiplier": (None,),
        "hidden_kernel": ("fire_mlp",),
        "hidden_bias": ("fire_mlp",),
        "output_kernel": ("fire_mlp", "heads"),
        "output_bias": ("heads",),
    }
    params = nn.unbox(boxed)
    assert float(params["c"][0]) == pytest.approx(0.1)
    assert float(params["threshold_multiplier"][0]) == 1.0  # L = 512
    assert params["output_kernel"].shape == (32, 5)
    # PyTorch's Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in 1 then 32.
    assert np.abs(params["hidden_kernel"]).max() <= 1.0
    assert np.abs(params["output_kernel"]).max() <= 32**-0.5
    assert np.abs(params["output_kernel"]).max() > 0.8 * 32**-0.5  # not a smaller scale


def test_gradients_reach_c_and_the_threshold():
    q = jnp.array([[3, 6]])  # below L = 8: the threshold sets the normaliser

    def total(params):
        return (
            FIRE(num_heads=3, mlp_width=2, init_threshold=8.0)
            .apply({"params": params}, q, q, method="bias")
            .sum()
        )

    params = dict(_params()["params"], threshold_multiplier=jnp.ones(1))
    grads = jax.grad(total)(params)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert abs(float(grads["c"][0])) > 0 and abs(float(grads["threshold_multiplier"][0])) > 0


def test_registered_with_its_defaults():
    assert positional.get("fire") is FIRE
    assert positional.default_options("fire") == {
        "mlp_width": 32,
        "init_c": 0.1,
        "init_threshold": 512.0,
        "eps": 1e-6,
    }
    assert FIRE(num_heads=2).max_position() is None


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(mlp_width=0), "fire mlp_width must be >= 1, got 0"),
        (dict(init_c=0.0), "fire init_c must be > 0, got 0.0"),
        (dict(init_threshold=-1.0), "fire init_threshold must be > 0, got -1.0"),
        (dict(eps=-1e-6), "fire eps must be >= 0, got -1e-06"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        FIRE(num_heads=2, **options)


def test_one_module_shared_by_all_layers():
    sizes = dict(tiny.SIZES, num_layers=3)
    model = Decoder(vocab_size=7, pe=tiny.pe_config("fire"), **sizes)
    tokens = jnp.zeros((1, 4), jnp.int32)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens, tokens >= 0))
    paths = [
        "/".join(p.key for p in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(nn.unbox(abstract["params"]))[0]
    ]
    assert sorted(p for p in paths if "hidden_kernel" in p) == ["pe/hidden_kernel"]
    assert not any("block" in p and ("/c" in p or "output_bias" in p) for p in paths)
