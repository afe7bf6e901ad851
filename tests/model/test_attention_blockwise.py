"""Tests of lenggen/model/attention/blockwise.py beyond the shared kernel contract
(test_attention_kernels.py): attention dropout, memory vs length, bad block sizes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model.attention import blockwise, reference

B, Q, K, H, D = 2, 5, 7, 3, 8
RATE = 0.5


def _bias(q_positions, k_positions):
    distance = (q_positions[:, None, :, None] - k_positions[:, None, None, :]).astype(jnp.float32)
    return -0.3 * jnp.arange(1, H + 1, dtype=jnp.float32)[None, :, None, None] * distance


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((B, Q, H, D)).astype(np.float32)
    k = rng.standard_normal((B, K, H, D)).astype(np.float32)
    v = rng.standard_normal((B, K, H, D)).astype(np.float32)
    k_positions = np.broadcast_to(np.arange(K, dtype=np.int32), (B, K))
    # Query 0 sits at position 0 and sees key 0 only; the others see 3 to 7 keys.
    return q, k, v, k_positions[:, [0, 2, 4, 5, 6]], k_positions, np.ones((B, K), bool)


@pytest.fixture(scope="module")
def dropout_samples(inputs):
    """1,000 dropout draws (rbg keys: threefry compiles for seconds on a small CPU)."""

    @jax.jit
    def samples():
        def drop(key):
            return blockwise.attend(
                *inputs, _bias, dropout_rate=RATE, dropout_rng=key, block_q=2, block_k=3
            )

        return jax.vmap(drop)(jax.random.split(jax.random.key(4, impl="rbg"), 1000))

    return samples()


@pytest.fixture(scope="module")
def exact(inputs):
    """Blockwise without dropout, with dropout but no rng, and the reference."""
    return jax.jit(
        lambda: (
            blockwise.attend(*inputs, _bias, block_q=2, block_k=3),
            blockwise.attend(
                *inputs, _bias, dropout_rate=RATE, dropout_rng=None, block_q=2, block_k=3
            ),
            reference.attend(*inputs, _bias),
        )
    )()


def test_dropout_off_without_rng(exact):
    no_dropout, no_rng, expected = exact
    np.testing.assert_array_equal(no_rng, no_dropout)
    np.testing.assert_allclose(no_dropout, expected, atol=1e-5)


def test_dropout_is_unbiased_and_per_key(exact, dropout_samples):
    exact = exact[0]
    assert np.abs(dropout_samples[0] - exact).max() > 1e-2
    assert np.abs(dropout_samples[0] - dropout_samples[1]).max() > 1e-2
    np.testing.assert_allclose(dropout_samples.mean(axis=0), exact, atol=0.15)  # ~5 sigma


def test_dropout_acts_on_normalised_weights(inputs, dropout_samples):
    """Query 0 sees one key (weight exactly 1): each draw gives v / (1 - rate) or exactly 0,
    independently per head, each about half the time."""
    v = inputs[2]
    first = dropout_samples[:, :, 0]  # -> [draws, batch, heads, head_dim]
    kept = np.all(np.isclose(first, v[None, :, 0] / (1 - RATE), atol=1e-6), axis=-1)
    dropped = np.all(first == 0.0, axis=-1)
    assert np.all(kept ^ dropped)
    assert 0.4 < kept.mean() < 0.6


def _temp_bytes(kernel, length: int) -> int:
    """Compiled temporary memory of `kernel` on one example, q_len = k_len = length."""
    spec = jax.ShapeDtypeStruct
    args = (spec((1, length, H, 8), jnp.float32),) * 3 + (spec((1, length), jnp.int32),) * 2
    args += (spec((1, length), jnp.bool_),)
    compiled = jax.jit(functools.partial(kernel, bias_fn=_bias)).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_memory():
    """Doubling the length quadruples the reference's [q_len, k_len] temporaries; blockwise's
    double with key blocks only (their [q_len, block_k] scores) and stay flat once queries come
    in chunks too ([block_q, block_k] scores)."""
    dense = [_temp_bytes(reference.attend, n) for n in (512, 1024)]
    keys_only = functools.partial(blockwise.attend, block_q=4096, block_k=128)
    keys_only = [_temp_bytes(keys_only, n) for n in (512, 1024)]
    chunked = functools.partial(blockwise.attend, block_q=128, block_k=128)
    chunked = [_temp_bytes(chunked, n) for n in (512, 1024)]
    assert 3.6 < dense[1] / dense[0] < 4.4
    assert 1.8 < keys_only[1] / keys_only[0] < 2.2
    assert 0.95 < chunked[1] / chunked[0] < 1.05
    assert chunked[1] * 16 < keys_only[1] * 4 < dense[1]


@pytest.mark.parametrize("name", ["block_q", "block_k"])
def test_block_sizes_validated(inputs, name):
    with pytest.raises(ValueError, match=f"{name} must be >= 1, got 0"):
        blockwise.attend(*inputs, _bias, **{name: 0})
