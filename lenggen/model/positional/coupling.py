"""Position coupling (Cho et al. 2024, "Position Coupling: Improving Length Generalization of
Arithmetic Transformers Using Task Structure"): tokens that play the same role share a position
id; for addition, digits of the same significance in both operands and the answer.

docs/methods/position_coupling.md. The ids feed an absolute position embedding, as in the
paper (a learned table by default, its choice; the sinusoidal code of APE as an option):

    id[b, t] = significance(t) + start[b]   for a digit (1 for the units, 2 for the tens, ...)
    id[b, t] = 0                             for every other token
    x[b, t] <- x[b, t] + P[id[b, t]]

In training `start` is drawn per example uniformly from 0..offset_max (the paper's random
starting id, so that ids beyond the training widths are trained); at evaluation it is 0.

Significance here is the digit's index within its number (lenggen.model.digit_runs), which IS
its significance when every number is written least-significant digit first: the task option
`digit_order="lsb_first"` of addition / long_addition. The paper reverses only the answer and
zero-pads the operands; an operand written most-significant first has a significance that
depends on the digits after it, known in the prompt but not for a generated token, so this
implementation takes the all-reversed format, where the id of every token, generated ones
included, follows from the tokens before it (KV-cache decoding equals recomputation).

Attention itself has no positional term (the causal mask still follows the token positions), so
every kernel serves it unchanged.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from lenggen.model.positional.abacus import offset_indices, training_offsets
from lenggen.model.positional.absolute import KINDS, sinusoidal_embedding
from lenggen.model.positional.base import PositionalEncoding


class PositionCoupling(PositionalEncoding):
    """An absolute position embedding of coupled position ids (module doc).

    Attributes:
      kind: 'learned' (the paper's) or 'sinusoidal' (APE's fixed code).
      max_position_id: the largest id the table holds (a learned table has max_position_id + 1
        rows; an id past it reads NaN). It must reach the longest number's digits +
        offset_max.
      offset_max: the largest random starting offset in training (0: none).
    """

    embed_input = "digit_runs"

    kind: str = "learned"
    max_position_id: int = 256
    offset_max: int = 100

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"coupling kind must be one of {KINDS}, got {self.kind!r}")
        if not 0 <= self.offset_max < self.max_position_id:
            raise ValueError(
                f"coupling offset_max must be in [0, max_position_id - 1] = [0, "
                f"{self.max_position_id - 1}], got {self.offset_max}"
            )
        super().__post_init__()

    def check_widths(self, d_model: int, head_dim: int) -> None:
        del head_dim
        if self.kind == "sinusoidal" and d_model % 2:
            raise ValueError(f"sinusoidal coupling needs an even d_model, got {d_model}")

    def coupled_ids(self, runs: jax.Array) -> jax.Array:
        """`runs [batch, length]` (digit runs) -> `[batch, length]` int32 ids, the training
        start added when the 'dropout' rng is present (abacus.training_offsets)."""
        return offset_indices(runs, training_offsets(self, runs.shape[0], self.offset_max))

    @nn.compact
    def embed(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        """`x [batch, length, d_model]` + P[coupled ids of `positions` (digit runs)]."""
        ids = self.coupled_ids(positions)  # -> [batch, length]
        if self.kind == "sinusoidal":
            code = sinusoidal_embedding(ids, x.shape[-1])
            code = jnp.where((ids <= self.max_position_id)[..., None], code, jnp.nan)
        else:
            table = self.param(
                "embedding",
                nn.with_logical_partitioning(nn.initializers.normal(1.0), ("positions", "embed")),
                (self.max_position_id + 1, x.shape[-1]),
            )
            code = jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)
        return x + code.astype(x.dtype)  # -> [batch, length, d_model]
