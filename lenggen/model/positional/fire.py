"""FIRE (Li et al. 2023, "Functional Interpolation for Relative Positions Improves Long Context
Transformers"): a learned attention-logit bias from progressively normalised distances.

    b[h, i, j] = f_h( psi(i - j) / psi(max(L, i)) ),   psi(x) = log(1 + c x),

i the query position, j the key position (i >= j: causal), f a ReLU MLP 1 -> width -> heads, c
and L learned. Dividing by psi(i) maps every distance of a query into [0, 1], whatever the
sequence length: the idea behind FIRE's length generalisation. The threshold L stops short
contexts (i < L) from being stretched: there the normaliser is the constant psi(L) and the bias
depends on i - j only.

Parametrisation, as the paper's reference listing (its appendix): c and L enter through
absolute values, |c| and |L| = |m| * init_threshold with a learned multiplier m (init 1) and the
fixed init_threshold, so both stay positive whatever the optimiser does; eps is added to the
normaliser. Inits as the listing: c = 0.1, init_threshold = 512, MLP width 32 with PyTorch's
default Linear init U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.

As the T5 bias here, one FIRE module is shared by every layer (the Decoder builds one PE).
Memory: the MLP's hidden activations are `[batch, q_len, k_len, width]`; positions are per
example, so the bias cannot be shared across the batch as in the listing.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lenggen.model.positional.base import PositionalEncoding, TileBias


def fire_psi(x: jax.Array, c: jax.Array) -> jax.Array:
    """psi(x) = log(1 + |c| * |x|), elementwise, float32 (|x|: the listing's form; masked
    future keys get finite values)."""
    return jnp.log1p(jnp.abs(c) * jnp.abs(x.astype(jnp.float32)))


def fire_normalized_distance(
    q_positions: jax.Array,
    k_positions: jax.Array,
    c: jax.Array,
    threshold: jax.Array,
    eps: float,
) -> jax.Array:
    """psi(i - j) / (psi(max(|threshold|, i)) + eps).

    Args:
      q_positions: `[..., q_len]` int (leading batch axes optional).
      k_positions: `[..., k_len]` int.
      c, threshold: scalars or `[1]` (absolute values are taken).
      eps: added to the normaliser (keeps i = 0 finite).
    Returns:
      `[..., q_len, k_len]` float32, in [0, 1] for causal pairs (0 <= j <= i).
    """
    q = q_positions.astype(jnp.float32)
    distance = q[..., :, None] - k_positions.astype(jnp.float32)[..., None, :]  # [.., q, k]
    normalizer = fire_psi(jnp.maximum(q, jnp.abs(threshold)), c) + eps  # -> [..., q_len]
    return fire_psi(distance, c) / normalizer[..., :, None]


def _torch_linear_init(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's nn.Linear default for weight and bias."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class FIRE(PositionalEncoding):
    """`bias[b, h, i, j] = MLP(psi(i - j) / psi(max(L, i)))[h]` (module docstring).

    Parameters (logical axis names for sharding): `c`, `threshold_multiplier` `[1]` (None,);
    `hidden_kernel`, `hidden_bias` `[width]` ('fire_mlp',); `output_kernel` `[width, heads]`
    ('fire_mlp', 'heads'); `output_bias` `[heads]` ('heads',).

    Attributes:
      mlp_width: hidden units of f (paper: 32).
      init_c: initial c (paper: 0.1).
      init_threshold: L = |threshold_multiplier| * init_threshold, the multiplier starting at 1
        (paper: 512).
      eps: added to the normaliser psi(max(L, i)) (paper: 1e-6).
    """

    mlp_width: int = 32
    init_c: float = 0.1
    init_threshold: float = 512.0
    eps: float = 1e-6

    def __post_init__(self):
        if self.mlp_width < 1:
            raise ValueError(f"fire mlp_width must be >= 1, got {self.mlp_width}")
        if self.init_c <= 0.0:
            raise ValueError(f"fire init_c must be > 0, got {self.init_c}")
        if self.init_threshold <= 0.0:
            raise ValueError(f"fire init_threshold must be > 0, got {self.init_threshold}")
        if self.eps < 0.0:
            raise ValueError(f"fire eps must be >= 0, got {self.eps}")
        super().__post_init__()

    def setup(self):
        width, heads = self.mlp_width, self.num_heads

        def param(name, init, shape, axes):
            return self.param(name, nn.with_logical_partitioning(init, axes), shape)

        # The scalars are stored as [1] (never sharded), like every other parameter at least 1-d.
        self.c = param("c", nn.initializers.constant(self.init_c), (1,), (None,))
        self.threshold_multiplier = param(
            "threshold_multiplier", nn.initializers.ones, (1,), (None,)
        )
        self.hidden_kernel = param("hidden_kernel", _torch_linear_init(1), (width,), ("fire_mlp",))
        self.hidden_bias = param("hidden_bias", _torch_linear_init(1), (width,), ("fire_mlp",))
        self.output_kernel = param(
            "output_kernel", _torch_linear_init(width), (width, heads), ("fire_mlp", "heads")
        )
        self.output_bias = param("output_bias", _torch_linear_init(width), (heads,), ("heads",))

    def tile_bias(self) -> TileBias:
        """`(params, q_positions [tq], k_positions [tk]) -> [heads, tq, tk]`, params `(c [1],
        threshold_multiplier [1], hidden_kernel [width], hidden_bias [width], output_kernel
        [width, heads], output_bias [heads])`. Zero-padded hidden units stay 0 after the ReLU
        and meet zero rows of output_kernel, so padding changes no head."""
        init_threshold, eps = self.init_threshold, self.eps

        def hidden_units(params, q_positions, k_positions):
            c, multiplier, w_hidden, b_hidden = params[:4]
            x = fire_normalized_distance(
                q_positions, k_positions, c, multiplier * init_threshold, eps
            )  # -> [tq, tk]
            return jnp.maximum(x[:, :, None] * w_hidden + b_hidden, 0.0)  # ReLU; [tq, tk, width]

        def tile(params, q_positions, k_positions):
            # A matmul per query row, batched over the leading axis, then a swap of the two
            # leading axes: no reshape splits the lane (last) axis (Mosaic on TPU v4).
            w_out, b_out = params[4:]
            hidden = hidden_units(params, q_positions, k_positions)
            (tq, _, width), heads = hidden.shape, w_out.shape[1]
            out = jax.lax.dot_general(
                jnp.broadcast_to(w_out.T[None], (tq, heads, width)),
                hidden,
                (((2,), (2,)), ((0,), (0,))),
                preferred_element_type=jnp.float32,
            )  # -> [tq, heads, tk]
            return jnp.swapaxes(out + b_out[None, :, None], 0, 1)  # -> [heads, tq, tk]

        def triton_tile(params, q_positions, k_positions):
            # One 2-D matmul over every (query, key) pair (Triton has no batched dot_general).
            w_out, b_out = params[4:]
            hidden = hidden_units(params, q_positions, k_positions)
            (tq, tk, width), heads = hidden.shape, w_out.shape[1]
            out = jnp.dot(hidden.reshape(tq * tk, width), w_out, preferred_element_type=jnp.float32)
            return (out + b_out).T.reshape(heads, tq, tk)  # out: [tq * tk, heads]

        params = (
            self.c,
            self.threshold_multiplier,
            self.hidden_kernel,
            self.hidden_bias,
            self.output_kernel,
            self.output_bias,
        )
        return TileBias(tile, params, triton_fn=triton_tile)
