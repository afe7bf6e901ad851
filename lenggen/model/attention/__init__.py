"""Attention kernels, found by name (`config.model.attention_impl`).

Every kernel has the signature of `reference.attend`:

    attend(q, k, v, q_positions, k_positions, k_valid, bias_fn, *, dropout_rate=0.0,
           dropout_rng=None) -> [batch, q_len, heads, head_dim]

with q `[batch, q_len, heads, head_dim]`, k/v `[batch, k_len, heads, head_dim]`, positions
`[batch, len]` int32, k_valid `[batch, k_len]` bool and `bias_fn` the PE's bias hook. A kernel
takes the hooks, never a PE name, and must agree with `reference` for every PE. A kernel that
cannot drop attention probabilities raises ValueError when given a dropout_rng with
dropout_rate > 0.
"""

from collections.abc import Callable

import jax

from lenggen.model.attention import reference

Kernel = Callable[..., jax.Array]

_KERNELS: dict[str, Kernel] = {
    "reference": reference.attend,
}


def names() -> tuple[str, ...]:
    """The registered kernel names."""
    return tuple(_KERNELS)


def get(name: str) -> Kernel:
    """The kernel registered as `name`."""
    if name not in _KERNELS:
        raise ValueError(f"unknown attention kernel {name!r}; valid names: {names()}")
    return _KERNELS[name]
