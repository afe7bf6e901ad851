"""Tests of lenggen/model/attention/auto.py and the `auto` entry of the kernel registry."""

import jax
import jax.numpy as jnp
import pytest

from lenggen.model import attention
from lenggen.model.attention import auto


@pytest.mark.parametrize(
    ("backend", "k_len", "expected"),
    [
        ("tpu", 16, "pallas_flash"),
        ("tpu", 4096, "pallas_flash"),
        ("gpu", 16, "dot_product"),
        ("gpu", 4096, "dot_product"),
        ("cpu", 1, "reference"),
        ("cpu", auto.CPU_REFERENCE_MAX_KEYS, "reference"),
        ("cpu", auto.CPU_REFERENCE_MAX_KEYS + 1, "blockwise"),
    ],
)
def test_choose(backend, k_len, expected):
    assert auto.choose(backend, k_len) == expected


def test_choose_rejects_bad_input():
    with pytest.raises(ValueError, match=r"unknown JAX backend 'metal'; expected one of"):
        auto.choose("metal", 8)
    with pytest.raises(ValueError, match="k_len must be >= 1, got 0"):
        auto.choose("cpu", 0)


@pytest.mark.parametrize("k_len", [3, auto.CPU_REFERENCE_MAX_KEYS + 1])
def test_auto_kernel_calls_the_choice(monkeypatch, k_len):
    """`auto` forwards every argument, dropout included, to the kernel `choose` names."""
    calls = []

    def recorder(name):
        def kernel(*args, **kwargs):
            calls.append((name, args, kwargs))
            return args[0]

        return kernel

    for name in ("reference", "blockwise"):
        monkeypatch.setitem(attention._KERNELS, name, recorder(name))
    q = jnp.zeros((1, 1, 2, 4))
    k = jnp.zeros((1, k_len, 2, 4))
    positions, valid = jnp.zeros((1, k_len), jnp.int32), jnp.ones((1, k_len), bool)
    key = jax.random.key(0)
    attention.get("auto")(
        q, k, k, positions[:, :1], positions, valid, None, dropout_rate=0.1, dropout_rng=key
    )
    assert [c[0] for c in calls] == [auto.choose(jax.default_backend(), k_len)]
    assert calls[0][2] == dict(dropout_rate=0.1, dropout_rng=key, tile_bias=None, contextual=None)
    assert calls[0][1][0] is q and calls[0][1][1] is k
