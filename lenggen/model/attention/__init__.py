"""Attention kernels, found by name (`config.model.attention_impl`).

Every kernel has the signature of `reference.attend`:

    attend(q, k, v, q_positions, k_positions, k_valid, bias_fn, *, dropout_rate=0.0,
           dropout_rng=None, tile_bias=None, contextual=None)
        -> [batch, q_len, heads, head_dim]

with q `[batch, q_len, heads, head_dim]`, k/v `[batch, k_len, heads, head_dim]`, positions
`[batch, len]` int32, k_valid `[batch, k_len]` bool, `bias_fn` the PE's bias hook and
`tile_bias` the same bias in the form a fused kernel calls inside its tile
(`positional.base.TileBias`), and `contextual` a logit term from q.k itself (CoPE;
`positional.base.ContextualLogits`, its counts summed over keys last to first). A kernel takes
the hooks, never a PE name, and must agree with `reference` for every PE. Kernels that work
in blocks call the bias on blocks of positions, so entry [b, h, i, j] of a bias must depend
on q_positions[b, i] and k_positions[b, j] only (true of every relative PE). A kernel that
cannot run a call itself (dropout, a bias without a tile form) runs blockwise and logs one
line saying why.

  reference     dense einsums; the ground truth. Dropout: yes.
  blockwise     scan over key blocks, online softmax, bias per block; memory linear in the
                length. Dropout: yes (its own Bernoulli draws).
  dot_product   jax.nn.dot_product_attention (cuDNN on GPU for half precision, else XLA).
                Dropout: falls back to blockwise.
  pallas_flash  Pallas flash kernel, the bias computed in the tile by the PE's `tile_bias`
                hook: Mosaic on TPU, Triton on GPU (`pallas_gpu`), interpret mode on CPU.
                Dropout, or a bias without a tile form: falls back to blockwise.
  auto          one of the above per platform and key length (see `auto.choose`).

The platform is that of the devices the program is compiled for (`get(name, platform)`; the
decoder passes its mesh's), not necessarily this process's backend: compiling for a TPU
topology from a CPU host (lenggen.plan) must build the TPU kernels, not the CPU ones.
"""

import functools
from collections.abc import Callable

import jax

from lenggen.model.attention import auto, blockwise, dot_product, pallas_flash, reference
from lenggen.model.positional.base import ContextualLogits, TileBias

Kernel = Callable[..., jax.Array]


def _auto_attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_positions: jax.Array,
    k_positions: jax.Array,
    k_valid: jax.Array,
    bias_fn: reference.BiasFn,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    tile_bias: TileBias | None = None,
    contextual: ContextualLogits | None = None,
    platform: str | None = None,
) -> jax.Array:
    """The kernel `auto.choose(platform, k_len)` names; same contract as `reference.attend`."""
    platform = auto.resolve(platform)
    return get(auto.choose(platform, k.shape[1]), platform)(
        q,
        k,
        v,
        q_positions,
        k_positions,
        k_valid,
        bias_fn,
        dropout_rate=dropout_rate,
        dropout_rng=dropout_rng,
        tile_bias=tile_bias,
        contextual=contextual,
    )


_KERNELS: dict[str, Kernel] = {
    "reference": reference.attend,
    "blockwise": blockwise.attend,
    "dot_product": dot_product.attend,
    "pallas_flash": pallas_flash.attend,
    "auto": _auto_attend,
}
# Kernels whose program depends on the platform: they take it as a `platform` argument.
_PLATFORM_DEPENDENT = ("dot_product", "pallas_flash", "auto")


def names() -> tuple[str, ...]:
    """The registered kernel names (every valid `config.model.attention_impl`)."""
    return tuple(_KERNELS)


def get(name: str, platform: str | None = None) -> Kernel:
    """The kernel registered as `name`, built for `platform` ('cpu', 'gpu', 'tpu'; None: this
    process's default backend, looked up when the kernel is traced)."""
    if name not in _KERNELS:
        raise ValueError(f"unknown attention kernel {name!r}; valid names: {names()}")
    if platform is not None:
        auto.resolve(platform)  # raises on an unknown platform
    kernel = _KERNELS[name]
    if name in _PLATFORM_DEPENDENT and platform is not None:
        return functools.partial(kernel, platform=platform)
    return kernel
