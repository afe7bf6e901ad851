"""Tests of lenggen/evaluate/steps.py: `target_correct` (logits at t predict token t + 1, and
only target tokens (loss_mask) count) and `teacher_forced_correct`'s decoding budget (a target
and its EOS longer than max_new_tokens are never credited). Teacher forcing against greedy
decoding, per example: tests/evaluate/test_exact_match.py and tests/model/test_randomized.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.data import loader
from lenggen.evaluate import steps
from lenggen.model import decoding
from lenggen.model.decoder import Decoder
from tests.model import tiny


def test_target_correct_hand_worked():
    # Tokens [7, 2, 5, 1]; the argmax at t is [2, 2, 1, 0]: right at t = 0 (2) and t = 2 (1).
    tokens = jnp.array([[7, 2, 5, 1]])
    logits = jnp.asarray(np.eye(8, dtype=np.float32)[[2, 2, 1, 0]][None])  # -> [1, 4, 8]
    loss_mask = jnp.array([[0, 0, 1, 1]])
    correct, mask = steps.target_correct(logits, dict(tokens=tokens, loss_mask=loss_mask))
    assert correct.tolist() == [[True, False, True]]
    assert mask.dtype == jnp.float32 and mask.tolist() == [[0.0, 1.0, 1.0]]


# ---- teacher_forced_correct: the decoding budget.

VOCAB = 12
NEVER = VOCAB  # an EOS id no argmax can be, so greedy decoding writes its whole budget


@pytest.fixture(scope="module")
def decoded():
    """(model, params, prompt [3] tokens, the 6 tokens greedy decoding writes after it)."""
    model = Decoder(
        vocab_size=VOCAB,
        num_layers=1,
        d_model=16,
        num_heads=2,
        d_kv=8,
        d_ff=16,
        dropout_rate=0.0,
        pe=tiny.pe_config("nope"),
    )
    prompt = np.array([[5, 3, 9]], np.int32)
    valid = np.ones_like(prompt, bool)
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.key(0), prompt, jnp.zeros_like(prompt), valid)
    )
    rng = np.random.default_rng(1)
    params = jax.tree.map(
        lambda leaf: jnp.asarray(rng.standard_normal(leaf.shape), leaf.dtype),
        nn.unbox(abstract["params"]),
    )
    outputs = decoding.greedy_decode(model, params, prompt, valid, 6, NEVER)
    return model, params, prompt[0], np.asarray(outputs)[0]


def _forced(decoded, target_tokens: int, max_new_tokens: int | None) -> bool:
    """teacher_forced_correct on the prompt followed by greedy's first `target_tokens` outputs
    (the last of them in the role of EOS: every one is the model's own argmax)."""
    model, params, prompt, outputs = decoded
    record = dict(
        tokens=np.concatenate([prompt, outputs[:target_tokens]]),
        source_length=len(prompt),
        length=target_tokens - 1,
    )
    batch = {k: jnp.asarray(v) for k, v in loader.pack([record], [0], 12).items()}
    verdict = steps.teacher_forced_correct(
        params, batch, model=model, max_new_tokens=max_new_tokens
    )
    return bool(np.asarray(verdict)[0])


@pytest.mark.parametrize(
    "target_tokens, max_new_tokens, expected",
    [
        (5, 6, True),  # 4 target tokens + EOS, one slot to spare
        (6, 6, True),  # exactly the budget
        (6, 5, False),  # greedy decoding writes 5 tokens: never the 6th (EOS)
        (6, 3, False),
        (6, None, True),  # no budget given: every position's argmax decides
    ],
)
def test_teacher_forcing_credits_only_targets_that_fit_the_decoding_budget(
    decoded, target_tokens, max_new_tokens, expected
):
    # Every target token (and the stand-in EOS) is the model's argmax, so only the budget can
    # reject; greedy decoding with a budget of 5 writes exactly the first 5 of the 6.
    model, params, prompt, outputs = decoded
    shorter = decoding.greedy_decode(model, params, prompt[None], np.ones((1, 3), bool), 5, NEVER)
    assert np.asarray(shorter)[0].tolist() == outputs[:5].tolist()
    assert _forced(decoded, target_tokens, max_new_tokens) is expected
