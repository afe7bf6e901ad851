r"""Theorems 1 and 2 of the paper, built by hand in this repository's own Decoder.

Theorem 1 (a NoPE decoder recovers absolute positions in its first layer): the sequence starts
with a constant token whose embedding carries an indicator dimension; with W_Q = W_K = 0 causal
attention is uniform, so position t (0-based, t + 1 visible keys) reads 1 / (t + 1) of the
indicator; the feed-forward layer maps that to t.
Theorem 2 (given absolute positions, a later layer realises a relative PE): layer 2's queries
and keys read (1, t), so its attention logits are -m_h (i - j): ALiBi's bias, a function of the
relative distance only.

`build(T)` returns a 2-layer NoPE Decoder (lenggen.model.decoder, unchanged) and hand-set
parameters for which, at every position t <= T, the hidden state after layer 1 holds t in
coordinate POSITION_DIM (to float32 rounding), whatever the tokens after the first. docs/
theorems.md gives the derivation; the numbers the construction rests on:

* RMSNorm (pre-norm, which the paper's proof does not model) is made a fixed linear map: every
  token embedding has a large constant coordinate CONSTANT = 2^k, and every other coordinate is
  so small that its square vanishes below half an ulp of CONSTANT^2 in float32, so each RMSNorm
  divides by the same power of two at every position; its scale parameters then bring the small
  coordinates back to unit size.
* The feed-forward layer (ReLU, no biases: the constant coordinate serves as the bias input)
  computes the piecewise-linear interpolant of u -> 1/u - 1 through the knots u_m = 1/(m + 1):
  f(u) = sum_{m < T} 2 (m + 1) relu(u_m - u), so f(1 / (t + 1)) = t exactly for t <= T. All
  coefficients are positive (the target is convex), so float32 sums do not cancel.

  python -m lenggen.analysis.theorems --max_position=1000
"""

import dataclasses
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from lenggen import quiet_logs
from lenggen.model import positional
from lenggen.model.decoder import Decoder

# Coordinates of the residual stream.
CONSTANT_DIM = 0  # CONSTANT in every token embedding
INDICATOR_DIM = 1  # 1 in the first token's embedding only
ATTENDED_DIM = 2  # layer 1's attention writes 1 / (t + 1) here
POSITION_DIM = 3  # layer 1's feed-forward writes t here
TOKEN_DIMS = slice(4, None)  # a one-hot of the token (content the construction ignores)
D_MODEL = 16  # a power of 4: RMSNorm's mean of squares is then CONSTANT^2 / 16, a square
FIRST_TOKEN = 0  # any fixed id: the paper's prompts open with a fixed word ("Solve:")
VOCAB_SIZE = 1 + D_MODEL - 4  # the first token and one token per TOKEN_DIMS coordinate


@dataclasses.dataclass(frozen=True)
class Construction:
    """A Decoder and parameters realising Theorems 1 and 2 up to position `max_position`.

    Attributes:
      model: a 2-layer NoPE Decoder (reference attention, no dropout).
      params: its parameters, set by hand (float32).
      max_position: the largest position t recovered exactly.
      slopes: layer 2's per-head relative slopes m_h (ALiBi's series for the head count).
      constant: the constant coordinate of every embedding.
    """

    model: Decoder
    params: dict
    max_position: int
    slopes: tuple[float, ...]
    constant: float


@dataclasses.dataclass(frozen=True)
class Trace:
    """What the construction computes on `[batch, length]` tokens (positions 0..length-1).

    Attributes:
      hidden: `[batch, length, d_model]` residual stream after layer 1.
      layer1_weights: `[batch, heads, length, length]` layer 1's attention probabilities.
      layer2_input: `[batch, length, d_model]` layer 2's normalised attention input.
      layer2_weights: `[batch, heads, length, length]` layer 2's attention probabilities.
    """

    hidden: np.ndarray
    layer1_weights: np.ndarray
    layer2_input: np.ndarray
    layer2_weights: np.ndarray


def _constant_for(max_position: int) -> float:
    """A power of two whose square's half-ulp in float32 exceeds every other squared coordinate
    of the stream (max_position^2 is the largest): 2^14 * 2^ceil(log2(T + 1)); see docs."""
    return float(2 ** (14 + math.ceil(math.log2(max_position + 1))))


def _model(max_position: int, num_heads: int) -> Decoder:
    options = {name: positional.default_options(name) for name in positional.names()}
    return Decoder(
        vocab_size=VOCAB_SIZE,
        num_layers=2,
        d_model=D_MODEL,
        num_heads=num_heads,
        d_kv=2,
        d_ff=max_position,
        dropout_rate=0.0,
        pe=ml_collections.ConfigDict(dict(name="nope", **options)),
    )


def build(max_position: int = 1000, num_heads: int = 2) -> Construction:
    """The hand-set 2-layer NoPE decoder of Theorems 1 and 2.

    Args:
      max_position: T, the largest position recovered exactly (the feed-forward width).
      num_heads: heads of each layer; layer 2's head h uses ALiBi's slope m_h.
    """
    if max_position < 1 or num_heads < 1:
        raise ValueError(
            f"expected max_position >= 1 and num_heads >= 1, got {max_position}, {num_heads}"
        )
    model = _model(max_position, num_heads)
    constant = _constant_for(max_position)
    # Every RMSNorm sees sum of squares CONSTANT^2 (the rest rounds away), so it multiplies by
    # exactly sqrt(D_MODEL) / CONSTANT = 4 / CONSTANT.
    norm = math.sqrt(D_MODEL) / constant
    slopes = positional.alibi_slopes(num_heads)
    t_max, d = max_position, D_MODEL
    shapes = jax.eval_shape(
        lambda: model.init(
            jax.random.key(0), *(jnp.zeros((1, 1), jnp.int32),) * 2, jnp.ones((1, 1), bool)
        )
    )
    params = jax.tree.map(lambda s: np.zeros(s.shape, np.float64), nn.unbox(shapes["params"]))

    # Embeddings: CONSTANT everywhere; the first token's indicator; a one-hot per other token.
    embedding = params["embedding"]
    embedding[:, CONSTANT_DIM] = constant
    embedding[FIRST_TOKEN, INDICATOR_DIM] = 1.0
    others = [token for token in range(VOCAB_SIZE) if token != FIRST_TOKEN]
    embedding[others, np.arange(TOKEN_DIMS.start, d)] = 1.0

    # Layer 1, attention: W_Q = W_K = 0 (uniform causal attention); head 0's value reads the
    # normalised indicator (1 * norm) and the output writes it, rescaled to 1, to ATTENDED_DIM.
    block = params["block_0"]
    block["attention_norm"]["scale"][:] = 1.0
    block["attention"]["value"][INDICATOR_DIM, 0, 0] = 1.0 / norm
    block["attention"]["out"][0, 0, ATTENDED_DIM] = 1.0
    # Layer 1, feed-forward: normalised input has y_c = 1 (CONSTANT_DIM) and y_a = 1 / (t + 1)
    # (ATTENDED_DIM); unit m computes relu(1/(m + 1) - y_a) and adds 2 (m + 1) of it to t.
    block["ffn_norm"]["scale"][:] = 1.0
    block["ffn_norm"]["scale"][CONSTANT_DIM] = 1.0 / (norm * constant)
    block["ffn_norm"]["scale"][ATTENDED_DIM] = 1.0 / norm
    units = np.arange(t_max)
    block["ffn"]["wi"][CONSTANT_DIM, :] = 1.0 / (units + 1)
    block["ffn"]["wi"][ATTENDED_DIM, :] = -1.0
    block["ffn"]["wo"][:, POSITION_DIM] = 2.0 * (units + 1)

    # Layer 2, attention: normalised input y_c = 1, y_t = t; q_i = (m_h, -m_h i), k_j = (j, 1),
    # so the logit is m_h j - m_h i = -m_h (i - j). Values, output and feed-forward stay 0.
    block = params["block_1"]
    block["attention_norm"]["scale"][:] = 1.0
    block["attention_norm"]["scale"][CONSTANT_DIM] = 1.0 / (norm * constant)
    block["attention_norm"]["scale"][POSITION_DIM] = 1.0 / norm
    block["ffn_norm"]["scale"][:] = 1.0
    for head, slope in enumerate(slopes):
        block["attention"]["query"][CONSTANT_DIM, head, 0] = slope
        block["attention"]["query"][POSITION_DIM, head, 1] = -slope
        block["attention"]["key"][POSITION_DIM, head, 0] = 1.0
        block["attention"]["key"][CONSTANT_DIM, head, 1] = 1.0
    params["final_norm"]["scale"][:] = 1.0

    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    return Construction(model, params, max_position, tuple(slopes), constant)


def example_tokens(length: int, batch: int = 1, seed: int = 0) -> np.ndarray:
    """`[batch, length]` int32: FIRST_TOKEN, then random other tokens."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(FIRST_TOKEN + 1, VOCAB_SIZE, size=(batch, length)).astype(np.int32)
    tokens[:, 0] = FIRST_TOKEN
    return tokens


def run(construction: Construction, tokens: np.ndarray) -> Trace:
    """Applies the construction's Decoder to `tokens [batch, length]` at positions 0..length-1
    and captures the hidden states and attention weights the theorems are about."""
    tokens = jnp.asarray(tokens, jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)

    @jax.jit
    def apply(params, tokens, positions):
        _, state = construction.model.apply(
            {"params": params},
            tokens,
            positions,
            jnp.ones(tokens.shape, bool),
            capture_intermediates=True,
            mutable=["intermediates"],
        )
        found = state["intermediates"]
        return (
            found["block_0"]["__call__"][0],
            found["block_0"]["attention"]["attention_weights"][0],
            found["block_1"]["attention_norm"]["__call__"][0],
            found["block_1"]["attention"]["attention_weights"][0],
        )

    return Trace(*(np.asarray(x) for x in apply(construction.params, tokens, positions)))


def recovered_positions(trace: Trace) -> np.ndarray:
    """`[batch, length]` float32: what layer 1 wrote to POSITION_DIM (Theorem 1: = t)."""
    return trace.hidden[..., POSITION_DIM]


def layer2_logits(construction: Construction, trace: Trace) -> np.ndarray:
    """`[batch, heads, length, length]`: layer 2's attention logits q_i . k_j (before the causal
    mask), computed from its normalised input as the Attention module does."""
    attention = construction.params["block_1"]["attention"]
    q = np.einsum("btd,dhk->bthk", trace.layer2_input, attention["query"])
    k = np.einsum("btd,dhk->bthk", trace.layer2_input, attention["key"])
    return np.einsum("bqhk,bshk->bhqs", q, k)


def _define_flags() -> None:
    """Command-line flags, defined only when run as a command (importing defines none)."""
    flags.DEFINE_integer("max_position", 1000, "Largest position to recover.")
    flags.DEFINE_integer("num_heads", 2, "Heads per layer (layer 2: ALiBi slopes).")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    quiet_logs.warnings_only_unless_asked()  # Orbax and JAX log dozens of INFO lines.
    construction = build(flags.FLAGS.max_position, flags.FLAGS.num_heads)
    length = construction.max_position + 1
    trace = run(construction, example_tokens(length))
    positions = recovered_positions(trace)[0]
    error = np.abs(positions - np.arange(length)).max()
    exact = (np.rint(positions) == np.arange(length)).all()
    logits = layer2_logits(construction, trace)[0]
    distance = np.arange(length)[:, None] - np.arange(length)[None, :]
    alibi = -np.asarray(construction.slopes)[:, None, None] * distance
    print(
        f"Theorem 1: positions 0..{length - 1} recovered after rounding: {exact} "
        f"(max |h_t - t| = {error:.2e})"
    )
    print(
        f"Theorem 2: layer-2 logits = -m_h (i - j), max deviation "
        f"{np.abs(logits - alibi).max():.2e} (slopes {construction.slopes})"
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
