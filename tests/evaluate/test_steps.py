"""Tests of lenggen/evaluate/steps.py's `target_correct`: logits at t predict token t + 1, and
only target tokens (loss_mask) count. Teacher forcing against greedy decoding, per example:
tests/evaluate/test_exact_match.py and tests/model/test_randomized.py."""

import jax.numpy as jnp
import numpy as np

from lenggen.evaluate import steps


def test_target_correct_hand_worked():
    # Tokens [7, 2, 5, 1]; the argmax at t is [2, 2, 1, 0]: right at t = 0 (2) and t = 2 (1).
    tokens = jnp.array([[7, 2, 5, 1]])
    logits = jnp.asarray(np.eye(8, dtype=np.float32)[[2, 2, 1, 0]][None])  # -> [1, 4, 8]
    loss_mask = jnp.array([[0, 0, 1, 1]])
    correct, mask = steps.target_correct(logits, dict(tokens=tokens, loss_mask=loss_mask))
    assert correct.tolist() == [[True, False, True]]
    assert mask.dtype == jnp.float32 and mask.tolist() == [[0.0, 1.0, 1.0]]
