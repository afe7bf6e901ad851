"""Loss masking and teacher-forced verdicts on hand-made logits."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.train import step

# One sequence: prompt tokens [5, 6, 7], target [8, 9], EOS 1, then a pad. The loss covers the
# target tokens and EOS: positions 3, 4, 5 of `tokens`, predicted by logits 2, 3, 4.
TOKENS = np.array([[5, 6, 7, 8, 9, 1, 0]])
LOSS_MASK = np.array([[0, 0, 0, 1, 1, 1, 0]], np.float32)
VOCAB = 10


def _one_hot_logits(predicted: list[int]) -> jnp.ndarray:
    """Logits whose argmax at position t is predicted[t], with margin 10."""
    logits = np.zeros((1, len(predicted), VOCAB), np.float32)
    for t, token in enumerate(predicted):
        logits[0, t, token] = 10.0
    return jnp.asarray(logits)


def test_only_target_and_eos_predictions_enter_the_loss():
    batch = dict(tokens=TOKENS, loss_mask=LOSS_MASK)
    # Wrong everywhere except positions 2, 3, 4, which predict 8, 9, EOS: a perfect answer.
    logits = _one_hot_logits([0, 0, 8, 9, 1, 0, 0])
    loss, metrics = step.loss_and_metrics(logits, batch)
    # Each masked-in term is the cross entropy of a margin-10 one-hot: log(1 + 9 e^-10).
    expected = math.log(1 + 9 * math.exp(-10))
    assert float(loss) == pytest.approx(expected, rel=1e-3)  # fp32 log-sum-exp near 0
    assert float(metrics["token_accuracy"]) == 1.0
    assert float(metrics["sequence_accuracy"]) == 1.0
    assert float(metrics["num_target_tokens"]) == 3.0


def test_a_wrong_eos_prediction_fails_the_sequence():
    batch = dict(tokens=TOKENS, loss_mask=LOSS_MASK)
    logits = _one_hot_logits([0, 0, 8, 9, 4, 0, 0])  # writes 4 instead of EOS
    _, metrics = step.loss_and_metrics(logits, batch)
    assert float(metrics["token_accuracy"]) == pytest.approx(2 / 3)
    assert float(metrics["sequence_accuracy"]) == 0.0
    # The loss is the mean over the 3 target terms: two near-zero ones and one of margin -10.
    low = math.log(1 + 9 * math.exp(-10))
    high = math.log(math.exp(10) + 9)  # -log softmax of a logit 10 below the max
    loss, _ = step.loss_and_metrics(logits, batch)
    assert float(loss) == pytest.approx((2 * low + high) / 3, rel=1e-5)


def test_prompt_and_padding_predictions_do_not_matter():
    batch = dict(tokens=TOKENS, loss_mask=LOSS_MASK)
    a = _one_hot_logits([0, 0, 8, 9, 1, 0, 0])
    b = _one_hot_logits([3, 4, 8, 9, 1, 2, 7])
    np.testing.assert_allclose(
        step.loss_and_metrics(a, batch)[0], step.loss_and_metrics(b, batch)[0], rtol=1e-6
    )
