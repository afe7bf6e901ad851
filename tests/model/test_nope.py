"""Tests of lenggen/model/positional/nope.py: every hook is the identity."""

import jax
import numpy as np

from lenggen.model.positional.nope import NoPositionalEncoding


def test_hooks_do_nothing():
    pe = NoPositionalEncoding(num_heads=3)
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    qk = np.random.default_rng(1).standard_normal((2, 5, 3, 8)).astype(np.float32)
    positions = np.array([[0, 1, 2, 3, 4], [7, 3, 9, 0, 2]], np.int32)
    variables = pe.init(jax.random.key(2), x, positions, method="embed")
    assert variables == {}
    np.testing.assert_array_equal(pe.apply({}, x, positions, method="embed"), x)
    np.testing.assert_array_equal(pe.apply({}, qk, positions, method="rotate"), qk)
    assert pe.apply({}, positions, positions, method="bias") is None
    assert pe.max_position() is None
