"""The all-PE config and tiny decoder sizes the model tests share.

`pe_config(variant)` is shaped as the config a run gets (`config_schema.pe_section`: every PE's
default options, randomized positions off), for every registered PE plus the variant
"ape_learned" (the learned APE with 64 positions, whose outputs change with any position
error); an unregistered name passes through, for the tests of its rejection.
"""

import jax
import jax.numpy as jnp
import ml_collections

from lenggen.model import kv_cache, positional
from lenggen.model.positional import randomized

VARIANTS = positional.names() + ("ape_learned",)
# Odd, unequal sizes so a transposed axis fails; 3 heads (not a power of two). Ids 3-8 are
# digits (for the PEs that embed a digit's place in its number: abacus, coupling), so random
# token sequences hold runs of digits.
SIZES = dict(
    num_layers=2,
    d_model=16,
    num_heads=3,
    d_kv=8,
    d_ff=24,
    dropout_rate=0.1,
    digit_ids=(3, 4, 5, 6, 7, 8),
)


def pe_config(variant: str, *, max_position: int = 0, **options) -> ml_collections.ConfigDict:
    """The PE config of `variant` (a PE name or "ape_learned"), with `options` overriding that
    PE's defaults and randomized positions from [0, max_position) (0: off)."""
    name = "ape" if variant == "ape_learned" else variant
    sections = {pe: positional.default_options(pe) for pe in positional.names()}
    if variant == "ape_learned":
        sections["ape"].update(kind="learned", max_length=64)
    if options:
        sections[name].update(options)
    return ml_collections.ConfigDict(
        dict(name=name, **sections, **{randomized.CONFIG_KEY: max_position})
    )


def cached_logits(model, params, tokens, positions, valid, chunks, max_length):
    """The logits of `tokens [batch, length]` fed through the KV cache (`decode=True`) in
    consecutive pieces of the lengths `chunks` (a prefill, then more), `[batch, length, vocab]`:
    the tests compare them with one full forward pass."""

    @jax.jit
    def decode(cache, tokens, positions, valid):
        variables = {"params": params, "cache": cache}
        logits, state = model.apply(
            variables, tokens, positions, valid, decode=True, mutable=["cache"]
        )
        return logits, state["cache"]

    cache, pieces, start = kv_cache.init_cache(model, tokens.shape[0], max_length), [], 0
    for length in chunks:
        chunk = slice(start, start + length)
        logits, cache = decode(cache, tokens[:, chunk], positions[:, chunk], valid[:, chunk])
        pieces.append(logits)
        start += length
    return jnp.concatenate(pieces, axis=1)
