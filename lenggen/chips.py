"""Published per-chip figures of TPU generations, and the roofline step time they imply.

Figures (Google Cloud's TPU system-architecture pages, per chip):

  generation  peak bf16 FLOP/s  HBM bandwidth  HBM
  v4          275e12            1,200 GB/s     32 GiB
  v5e         197e12              819 GB/s     16 GiB
  v5p         459e12            2,765 GB/s     95 GiB
  v6e         918e12            1,638 GB/s     32 GiB

A float32 matmul on the MXU runs as bfloat16 passes: one at precision 'default', three at
'high' and six at 'highest' (XLA's dot algorithms ALG_DOT_BF16_BF16_F32_X3 / _X6 name the number
of bfloat16 products per tile; JAX's "Matmul precision" guide). So the matmul peak of a float32
model is the bf16 peak divided by `passes(dtype, precision)`. A bfloat16 model's matmuls take
one pass at any precision (its inputs are already bfloat16).

The roofline bound of a program is max(FLOPs / peak, bytes accessed / bandwidth): what the chip
cannot beat. Real steps are slower (launch overheads, collectives, imperfect overlap), so it is
a lower bound on time and chip-hours, not a prediction.
"""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation's published figures, per chip."""

    name: str
    peak_bf16_flops: float  # FLOP/s
    hbm_bytes_per_second: float
    hbm_bytes: int
    # Both TensorCores of a chip act as one JAX device ("megacore", as a TPU VM runs v4 and
    # v5p): jax.make_mesh refuses a mesh holding each core separately.
    megacore: bool = False


CHIPS = {
    "v4": Chip("v4", 275e12, 1.2e12, 32 * 2**30, megacore=True),
    "v5e": Chip("v5e", 197e12, 0.819e12, 16 * 2**30),
    "v5p": Chip("v5p", 459e12, 2.765e12, 95 * 2**30, megacore=True),
    "v6e": Chip("v6e", 918e12, 1.638e12, 32 * 2**30),
}
# config.model.precision -> bfloat16 MXU passes per float32 matmul (module docstring).
FLOAT32_PASSES = {"default": 1, "high": 3, "highest": 6}


def passes(dtype: str, precision: str) -> int:
    """bfloat16 MXU passes per matmul for compute `dtype` at matmul `precision`."""
    if precision not in FLOAT32_PASSES:
        raise ValueError(
            f"unknown precision {precision!r}; expected one of {tuple(FLOAT32_PASSES)}"
        )
    return 1 if dtype == "bfloat16" else FLOAT32_PASSES[precision]


def chip_of_topology(topology: str) -> Chip:
    """The chip of a topology name such as 'v5e:2x2' (its generation before the colon)."""
    generation = topology.split(":", 1)[0]
    if generation not in CHIPS:
        raise ValueError(
            f"no published figures for TPU generation {generation!r} (topology {topology!r}); "
            f"known: {', '.join(CHIPS)}"
        )
    return CHIPS[generation]


def chips_in_topology(topology: str) -> int:
    """Chips in a topology name: the product of its dimensions ('v4:2x2x2' -> 8)."""
    dims = topology.split(":", 1)[1]
    return math.prod(int(d) for d in dims.split("x"))


def roofline_seconds(
    flops: float, bytes_accessed: float, chip: Chip, *, devices_per_chip: int, matmul_passes: int
) -> float:
    """Lower bound on one device's time for a program of `flops` and `bytes_accessed` (both per
    device), where a chip holds `devices_per_chip` devices sharing its compute and bandwidth.

    Every FLOP is priced at the matmul rate (`matmul_passes` bf16 passes each): the model's
    FLOPs are nearly all matmul FLOPs.
    """
    peak = chip.peak_bf16_flops / devices_per_chip / matmul_passes
    bandwidth = chip.hbm_bytes_per_second / devices_per_chip
    return max(flops / peak, bytes_accessed / bandwidth)
