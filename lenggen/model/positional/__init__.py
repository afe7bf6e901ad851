"""Positional encodings behind one interface (`base.PositionalEncoding`), found by name.

Adding a PE: write one module subclassing `PositionalEncoding` and add one line to `_REGISTRY`.
No attention kernel and no decoder code changes. A PE with a logit bias implements `tile_bias`
(`base.TileBias`: the bias of one tile of positions, gather-free), from which `bias` follows;
every kernel, the fused Pallas one included, then serves it. A PE whose term needs the
queries and keys themselves (CoPE) implements `contextual_logits` (`base.ContextualLogits`).

A PE config is an ml_collections ConfigDict holding `name` plus one sub-dict of options per PE:

    ConfigDict(dict(name='rotary', nope={}, ape=dict(kind='sinusoidal', max_length=16384),
                    t5=dict(num_buckets=32, max_distance=128), alibi={},
                    rotary=dict(fraction=0.25, base=10000.0)))
"""

import dataclasses
from typing import Any

from lenggen.model.positional.abacus import Abacus
from lenggen.model.positional.absolute import AbsolutePositionalEncoding
from lenggen.model.positional.alibi import ALiBi, alibi_slopes
from lenggen.model.positional.base import PositionalEncoding
from lenggen.model.positional.cope import CoPE
from lenggen.model.positional.coupling import PositionCoupling
from lenggen.model.positional.fire import FIRE
from lenggen.model.positional.kerple import KERPLE
from lenggen.model.positional.nope import NoPositionalEncoding
from lenggen.model.positional.rotary import RotaryPositionalEncoding
from lenggen.model.positional.t5 import T5RelativeBias, t5_relative_bucket

__all__ = [
    "PositionalEncoding",
    "alibi_slopes",
    "build",
    "default_options",
    "get",
    "names",
    "t5_relative_bucket",
]

_REGISTRY: dict[str, type[PositionalEncoding]] = {
    "nope": NoPositionalEncoding,
    "ape": AbsolutePositionalEncoding,
    "t5": T5RelativeBias,
    "alibi": ALiBi,
    "rotary": RotaryPositionalEncoding,
    "fire": FIRE,
    "kerple": KERPLE,
    "cope": CoPE,
    "abacus": Abacus,
    "coupling": PositionCoupling,
}

# Fields every PE has that are not options: set by `build` (num_heads, d_model) or by Linen.
_NOT_OPTIONS = frozenset(f.name for f in dataclasses.fields(PositionalEncoding))


def names() -> tuple[str, ...]:
    """The registered PE names: the paper's, in its order (NoPE, APE, T5, ALiBi, Rotary), then
    the follow-ups (FIRE, KERPLE, CoPE, and the arithmetic PEs abacus and coupling)."""
    return tuple(_REGISTRY)


def get(name: str) -> type[PositionalEncoding]:
    """The PE class registered as `name`."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown positional encoding {name!r}; valid names: {names()}")
    return _REGISTRY[name]


def default_options(name: str) -> dict[str, Any]:
    """The options of PE `name` and their defaults (the paper's settings), as plain values."""
    return {
        field.name: field.default
        for field in dataclasses.fields(get(name))
        if field.name not in _NOT_OPTIONS and field.default is not dataclasses.MISSING
    }


def build(
    pe_config: Any, num_heads: int, d_model: int | None = None, name: str | None = None
) -> PositionalEncoding:
    """The PE module `pe_config.name` with the options in `pe_config[pe_config.name]`.

    Args:
      pe_config: a ConfigDict (or mapping) shaped as in the module docstring; a missing options
        sub-dict means all defaults.
      num_heads: attention heads.
      d_model: model width (T5's table init needs it; the Decoder always passes it).
      name: the Linen module name (the Decoder uses 'pe').
    """
    pe_name = pe_config["name"]
    cls = get(pe_name)
    options = pe_config.get(pe_name) or {}
    options = dict(options.to_dict() if hasattr(options, "to_dict") else options)
    valid = default_options(pe_name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown options {unknown} for positional encoding {pe_name!r}; "
            f"valid options: {sorted(valid)}"
        )
    return cls(num_heads=num_heads, d_model=d_model, name=name, **options)
