"""Rotary position embedding (Su et al. 2021), GPT-J style, on part of each head, with optional
context extension (position interpolation, NTK-aware scaling, YaRN).

docs/paper.md ("Positional encodings"): GPT-J style (rotate every two: interleaved pairs (x0,
x1), (x2, x3), ...), base 10000, applied to the first 25% of each head's dimensions (16 of 64);
the official code hard-coded the fraction, here it is an option.

Context extension (docs/methods/rotary_scaling.md) changes the frequencies theta_k = base^(-2k/d)
of the d rotated dims (k = 0 .. d/2 - 1) by a factor s >= 1, so that a model trained on short
sequences meets no unseen angles on longer ones; it may be switched on at evaluation only:
  * linear (Chen et al. 2023, position interpolation): theta_k / s, i.e. positions divided by s;
  * ntk (NTK-aware scaling, bloc97 2023): base' = base * s^(d / (d - 2)), which leaves the
    fastest pair (k = 0) unchanged and divides the slowest (k = d/2 - 1) by exactly s;
  * yarn (Peng et al. 2023, "YaRN"): per pair, r = L / lambda_k, lambda_k = 2 pi / theta_k the
    wavelength and L the original (training) context; gamma = clip((r - beta_slow) /
    (beta_fast - beta_slow), 0, 1); theta'_k = (1 - gamma) theta_k / s + gamma theta_k (pairs
    turning many times within L keep their frequency, those turning less than once are
    interpolated). Logits are divided by a temperature t with sqrt(1/t) = 0.1 ln(s) + 1: the
    whole query and key (every head dim, not only the rotated ones) are multiplied by
    sqrt(1/t), so every logit is multiplied by 1/t as the paper's softmax(q.k / t) asks.
"""

import math

import jax
import jax.numpy as jnp

from lenggen.config_defaults import ROTARY_SCALING as NO_SCALING
from lenggen.model.positional.base import PositionalEncoding

SCALINGS = ("none", "linear", "ntk", "yarn")


def rotate_every_two(x: jax.Array) -> jax.Array:
    """`[..., d]` -> `[..., d]`: [a, b, c, d] -> [-b, a, -d, c]."""
    pairs = jnp.stack([-x[..., 1::2], x[..., 0::2]], axis=-1)  # -> [..., d / 2, 2]
    return pairs.reshape(x.shape)  # -> [..., d]


def rotary_frequencies(
    dim: int,
    base: float,
    scaling: str = "none",
    factor: float = 1.0,
    original_max_position: int = 0,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
) -> jax.Array:
    """The angle per position of each rotated pair, after context extension (module docstring).

    A pure function of the options (no Flax), so tests can pin it by hand; float32, computed
    for scaling='none' exactly as before the scalings existed (same checkpoints, same angles).

    Args:
      dim: rotated dims d (even, >= 2; ntk needs >= 4).
      base: frequency base.
      scaling: one of SCALINGS; factor: s >= 1.
      original_max_position, beta_fast, beta_slow: YaRN's L, beta and alpha.
    Returns:
      `[dim / 2]` float32 frequencies theta'_k.
    """
    if scaling == "ntk":
        base = base * factor ** (dim / (dim - 2))
    theta = 1.0 / (base ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))  # -> [dim / 2]
    if scaling == "linear":
        return theta / factor
    if scaling == "yarn":
        ratio = original_max_position * theta / (2 * math.pi)  # L / wavelength
        gamma = jnp.clip((ratio - beta_slow) / (beta_fast - beta_slow), 0.0, 1.0)
        return (1.0 - gamma) * theta / factor + gamma * theta
    return theta


def yarn_query_key_scale(factor: float) -> float:
    """sqrt(1/t) = 0.1 ln(s) + 1: YaRN's multiplier of q and k (logits times its square)."""
    return 0.1 * math.log(factor) + 1.0


def results_name(pe_config) -> str:
    """The PE name a run's results carry: `pe_config.name`, or `rotary+<scaling>` (e.g.
    `rotary+yarn`) when rotary is scored with context extension, so that the report shows a
    scaled evaluation beside the plain one (as it shows `<pe>+randomized`).

    Args:
      pe_config: a run's `model.pe` (a ConfigDict or mapping); a config from before the
        scalings existed has no `scaling` key and means 'none'.
    """
    name = pe_config["name"]
    scaling = (pe_config.get("rotary") or {}).get("scaling", NO_SCALING["scaling"])
    return f"{name}+{scaling}" if name == "rotary" and scaling != "none" else name


class RotaryPositionalEncoding(PositionalEncoding):
    """Rotates pair k of the first `fraction` of each head by angle `position * theta'_k`
    (`rotary_frequencies`), the remaining dimensions unchanged; with scaling='yarn' the whole
    q and k are also multiplied by `yarn_query_key_scale`.

    Attributes:
      fraction: share of head_dim rotated (paper: 0.25); fraction * head_dim must be an even
        integer >= 2.
      base: frequency base (paper: 10000).
      scaling: context extension, one of SCALINGS ('none': the paper's rotary).
      scaling_factor: s >= 1, the ratio of the target to the original context; must be 1 with
        scaling='none'.
      original_max_position: yarn only: L, the training context in tokens (> 0 for yarn).
      beta_fast, beta_slow: yarn only: pairs with more than beta_fast turns within L keep their
        frequency, those with fewer than beta_slow are interpolated (YaRN: 32 and 1).
    """

    fraction: float = 0.25
    base: float = 10000.0
    scaling: str = NO_SCALING["scaling"]
    scaling_factor: float = NO_SCALING["scaling_factor"]
    original_max_position: int = NO_SCALING["original_max_position"]
    beta_fast: float = NO_SCALING["beta_fast"]
    beta_slow: float = NO_SCALING["beta_slow"]

    def __post_init__(self):
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"rotary fraction must be in (0, 1], got {self.fraction}")
        if self.base <= 1.0:
            raise ValueError(f"rotary base must be > 1, got {self.base}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"rotary scaling must be one of {SCALINGS}, got {self.scaling!r}")
        factor = self.scaling_factor
        if isinstance(factor, bool) or not isinstance(factor, int | float):
            raise ValueError(f"rotary scaling_factor must be a number >= 1, got {factor!r}")
        if not (math.isfinite(factor) and factor >= 1.0):
            raise ValueError(f"rotary scaling_factor must be a finite number >= 1, got {factor}")
        if self.scaling == "none" and factor != 1.0:
            raise ValueError(
                f"rotary scaling_factor={factor} has no effect with scaling='none': set "
                f"scaling to one of {SCALINGS[1:]}, or scaling_factor to 1"
            )
        if self.scaling == "yarn":
            if isinstance(self.original_max_position, bool) or not (
                isinstance(self.original_max_position, int) and self.original_max_position > 0
            ):
                raise ValueError(
                    "rotary scaling='yarn' needs original_max_position > 0 (the training "
                    f"context in tokens), got {self.original_max_position!r}"
                )
            if not 0.0 < self.beta_slow < self.beta_fast:
                raise ValueError(
                    "rotary yarn needs 0 < beta_slow < beta_fast, got beta_slow="
                    f"{self.beta_slow}, beta_fast={self.beta_fast}"
                )
        super().__post_init__()

    def check_widths(self, d_model: int, head_dim: int) -> None:
        del d_model
        self.rotary_dim(head_dim)

    def rotary_dim(self, head_dim: int) -> int:
        """How many leading dims of a head are rotated (the official code's int(0.25 * d))."""
        dim = int(head_dim * self.fraction)
        if dim < 2 or dim % 2:
            raise ValueError(
                f"rotary rotates int(fraction * head_dim) = int({self.fraction} * {head_dim}) = "
                f"{dim} dims; expected an even number >= 2"
            )
        if self.scaling == "ntk" and dim < 4:
            raise ValueError(
                f"rotary scaling='ntk' raises base to s^(d / (d - 2)), d the rotated dims "
                f"int({self.fraction} * {head_dim}) = {dim}; expected d >= 4 (raise fraction "
                "or d_kv)"
            )
        return dim

    def frequencies(self, head_dim: int) -> jax.Array:
        """`[rotary_dim / 2]` float32 angles per position (`rotary_frequencies`)."""
        return rotary_frequencies(
            self.rotary_dim(head_dim),
            self.base,
            self.scaling,
            self.scaling_factor,
            self.original_max_position,
            self.beta_fast,
            self.beta_slow,
        )

    def rotate(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        """`x [batch, length, heads, head_dim]`, `positions [batch, length]` -> like `x`."""
        dim = self.rotary_dim(x.shape[-1])
        x_rot, x_pass = x[..., :dim].astype(jnp.float32), x[..., dim:]
        inv_freq = self.frequencies(x.shape[-1])  # -> [dim / 2]
        angles = positions.astype(jnp.float32)[..., None] * inv_freq  # -> [batch, length, dim/2]
        # Each angle serves one interleaved pair: repeat [t0, t1] -> [t0, t0, t1, t1].
        angles = jnp.repeat(angles, 2, axis=-1)[:, :, None, :]  # -> [batch, length, 1, dim]
        rotated = x_rot * jnp.cos(angles) + rotate_every_two(x_rot) * jnp.sin(angles)
        out = jnp.concatenate([rotated.astype(x.dtype), x_pass], axis=-1)
        if self.scaling == "yarn":
            # sqrt(1/t) on q and on k: every logit q.k (all head dims) is multiplied by 1/t.
            out = (out * yarn_query_key_scale(self.scaling_factor)).astype(x.dtype)
        return out
