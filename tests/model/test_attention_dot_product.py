"""Tests of lenggen/model/attention/dot_product.py beyond the shared kernel contract
(test_attention_kernels.py): the implementation choice and the dropout fallback."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model.attention import blockwise, dot_product

B, Q, K, H, D = 2, 5, 7, 3, 8


@pytest.mark.parametrize(
    ("backend", "dtype", "expected"),
    [
        ("gpu", jnp.bfloat16, "cudnn"),
        ("gpu", jnp.float16, "cudnn"),
        ("gpu", jnp.float32, "xla"),  # cuDNN flash attention has no float32
        ("cpu", jnp.bfloat16, "xla"),
        ("tpu", jnp.bfloat16, "xla"),
    ],
)
def test_implementation(backend, dtype, expected):
    assert dot_product.implementation(backend, dtype) == expected


def test_dropout_falls_back_to_blockwise(caplog):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((B, Q, H, D)).astype(np.float32)
    k, v = (rng.standard_normal((B, K, H, D)).astype(np.float32) for _ in range(2))
    positions = np.broadcast_to(np.arange(K, dtype=np.int32), (B, K))
    args = (q, k, v, positions[:, 2:], positions, np.ones((B, K), bool), lambda a, b: None)
    key = jax.random.key(3, impl="rbg")

    @jax.jit  # one compiled program instead of the scan's ops one by one
    def run(key):
        dropout = dict(dropout_rate=0.5, dropout_rng=key)
        return (
            dot_product.attend(*args, **dropout),
            blockwise.attend(*args, **dropout),
            dot_product.attend(*args),
        )

    with caplog.at_level("INFO"):
        dropped, expected, exact = run(key)
    np.testing.assert_array_equal(dropped, expected)
    assert np.abs(dropped - exact).max() > 1e-2  # dropout did act
    assert [r.getMessage() for r in caplog.records] == [
        "dot_product: attention dropout has no jax.nn form; running blockwise"
    ]
