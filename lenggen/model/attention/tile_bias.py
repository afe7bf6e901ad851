"""A PE's bias hook as a jaxpr that a Pallas kernel can evaluate on one tile of positions.

A Pallas kernel may not capture arrays, but `bias_fn` closes over parameters (T5's table) and
constants (ALiBi's slopes). `trace` turns it into a jaxpr at tile shape plus those arrays (its
consts), which the kernel receives as inputs; `hoist` moves the work on the consts alone (FIRE's
|c|, a table built with jnp) out of the tile; `evaluate` runs the jaxpr on a tile.

`evaluate` is `jax.core.eval_jaxpr` with two rewrites for compiled kernels, each giving the same
array:
  * a `dot_general` without contracting dimensions (an outer product, which is what
    `jnp.einsum('h,bqk->bhqk', ...)` becomes) is a broadcast multiply: Mosaic (TPU) cannot
    lower a dot with no contraction, nor can Triton (GPU);
  * a row lookup `table[indices]` (T5's bucket table: a `gather`) in a table of at most
    ONE_HOT_MAX_ROWS rows is a one-hot compare contracted with the table, at HIGHEST precision
    so every row of a finite table comes out exact: Mosaic lowers only take_along_axis-like
    gathers and Triton none. This is `jnp.take_along_axis(..., mode='one_hot')`'s method,
    applied to the traced jaxpr, so no PE needs to know about kernels. The reference and
    blockwise kernels never see it: they call `bias_fn` (a cheap gather).
Other primitives run as they are. `keeps_gather` reports a gather the rewrite does not cover.

`as_bias_fn` turns the tile jaxpr back into a bias hook over whole query rows, for code outside
the kernel that must see the same function of the same arrays (pallas_flash's custom VJP).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp

from lenggen.model.attention import reference

# T5 has 32 buckets (facts.md); the one-hot costs one multiply-add per row per output entry.
ONE_HOT_MAX_ROWS = 256

# Primitives whose sub-jaxpr is evaluated in place: jit-wrapped jnp functions, remat, and
# custom derivatives (jax.nn.relu is a custom_jvp), whose rules a kernel's forward never needs.
CALL_PRIMITIVES = (
    "jit", "pjit", "closed_call", "core_call", "remat", "checkpoint",
    "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
)  # fmt: skip

Jaxpr = jax.extend.core.Jaxpr
Rule = Callable[[Any, list], list | None]


def trace(
    bias_fn: reference.BiasFn, block_q: int, block_k: int
) -> tuple[jax.extend.core.ClosedJaxpr | None, list[jax.Array]]:
    """`bias_fn` at tile shape as a jaxpr plus the arrays it closes over.

    Returns:
      (jaxpr, consts): the jaxpr maps `q_positions [1, block_q]`, `k_positions [1, block_k]`
      int32 to `[1 | 1, heads | 1, block_q, block_k]`; (None, []) when `bias_fn` returns None.
    """
    q_spec = jax.ShapeDtypeStruct((1, block_q), jnp.int32)
    k_spec = jax.ShapeDtypeStruct((1, block_k), jnp.int32)
    closed, shape = jax.make_jaxpr(bias_fn, return_shape=True)(q_spec, k_spec)
    if shape is None:
        return None, []
    if not isinstance(shape, jax.ShapeDtypeStruct) or shape.ndim != 4:
        raise ValueError(f"bias_fn must return [batch, heads, q_len, k_len] or None, got {shape}")
    return closed, [jnp.asarray(c) for c in closed.consts]


def sub_jaxprs(eqn) -> list:
    return [p for p in eqn.params.values() if isinstance(p, jax.extend.core.ClosedJaxpr)] + [
        p for p in eqn.params.values() if isinstance(p, jax.extend.core.Jaxpr)
    ]


def bind(eqn, values: list) -> list:
    """`eqn`'s primitive applied to `values`, as `jax.core.eval_jaxpr` does it."""
    with eqn.ctx.manager:
        outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
    return list(outs) if eqn.primitive.multiple_results else [outs]


def hoist(jaxpr: Jaxpr, consts: list) -> tuple[Jaxpr, list]:
    """Evaluates, here and once, the equations that read consts and literals only.

    Returns:
      (tile_jaxpr, tile_consts): the same function of the positions, of the remaining
      (position-dependent) equations; its inputs are the vars of tile_consts (the values those
      equations and the outputs read), then the positions, as `evaluate` takes them.
    """
    known = dict(zip(jaxpr.all_invars[: len(consts)], consts, strict=True))
    kept = []
    for eqn in jaxpr.eqns:
        if not eqn.effects and all(
            isinstance(v, jax.extend.core.Literal) or v in known for v in eqn.invars
        ):
            values = [v.val if isinstance(v, jax.extend.core.Literal) else known[v]
                      for v in eqn.invars]  # fmt: skip
            known.update(zip(eqn.outvars, bind(eqn, values), strict=True))
        else:
            kept.append(eqn)
    read = [v for eqn in kept for v in eqn.invars] + list(jaxpr.outvars)
    frontier = list(dict.fromkeys(v for v in read if not isinstance(v, jax.extend.core.Literal)
                                  and v in known))  # fmt: skip
    positions = jaxpr.all_invars[len(consts) :]
    tile = jaxpr.replace(constvars=frontier, invars=positions, eqns=kept)
    return tile, [jnp.asarray(known[v]) for v in frontier]


def is_row_lookup(eqn) -> bool:
    """Whether `eqn` is `table[indices]` on a floating table of <= ONE_HOT_MAX_ROWS rows (the
    gather of `jnp.take(table, indices, axis=0)` and `table[indices]`)."""
    if eqn.primitive.name != "gather":
        return False
    table, indices = (v.aval for v in eqn.invars)
    numbers = eqn.params["dimension_numbers"]
    rest = table.ndim - 1
    return (
        jnp.issubdtype(table.dtype, jnp.floating)
        and 1 <= table.shape[0] <= ONE_HOT_MAX_ROWS
        and indices.shape[-1:] == (1,)
        and numbers.start_index_map == (0,)
        and numbers.collapsed_slice_dims == (0,)
        and not numbers.operand_batching_dims
        and tuple(eqn.params["slice_sizes"]) == (1, *table.shape[1:])
        and tuple(numbers.offset_dims) == tuple(range(indices.ndim - 1, indices.ndim - 1 + rest))
    )


def keeps_gather(jaxpr: Jaxpr) -> bool:
    """Whether `evaluate` still gathers: `jaxpr` (or one nested in it) holds a gather that is
    not a row lookup."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "gather" and not is_row_lookup(eqn):
            return True
        for sub in sub_jaxprs(eqn):
            if keeps_gather(getattr(sub, "jaxpr", sub)):
                return True
    return False


def lookup_indices(indices: jax.Array, rows: int, mode) -> tuple[jax.Array, jax.Array | None]:
    """The row index of each lookup `indices [..., 1]` -> `[...]`, clamped as the gather's mode
    does (CLIP; PROMISE_IN_BOUNDS, which XLA clamps), and for FILL_OR_DROP the mask of the
    in-range lookups (the others take the fill value)."""
    index = indices.reshape(indices.shape[:-1])  # -> [...]
    if mode == jax.lax.GatherScatterMode.FILL_OR_DROP:
        return index, (index >= 0) & (index < rows)
    return jnp.clip(index, 0, rows - 1), None


def fill(values: jax.Array, in_range: jax.Array | None, fill_value) -> jax.Array:
    """`values [..., rest...]` where `in_range [...]`, else the gather's fill (NaN if None)."""
    if in_range is None:
        return values
    fill_value = jnp.nan if fill_value is None else fill_value
    # Reshaped and broadcast as int32, compared at full shape: Mosaic reshapes no booleans
    # ("non-noop i1 reshape is unsupported", compiling T5's lookup for a TPU).
    mask = in_range.astype(jnp.int32).reshape(in_range.shape + (1,) * (values.ndim - in_range.ndim))
    mask = jnp.broadcast_to(mask, values.shape) != 0
    return jnp.where(mask, values, jnp.asarray(fill_value, values.dtype))


def _one_hot_lookup(eqn, table: jax.Array, indices: jax.Array) -> jax.Array:
    """`table [rows, rest...]` at `indices [..., 1]` -> `[..., rest...]`, without a gather."""
    rows = table.shape[0]
    index, in_range = lookup_indices(indices, rows, eqn.params["mode"])
    one_hot = (index[..., None] == jax.lax.broadcasted_iota(jnp.int32, (*index.shape, rows),
                                                            index.ndim))  # fmt: skip
    values = jax.lax.dot_general(
        one_hot.astype(table.dtype),
        table,
        (((index.ndim,), (0,)), ((), ())),
        precision=jax.lax.Precision.HIGHEST,
        preferred_element_type=table.dtype,
    )  # -> [..., rest...]; one nonzero product per entry, so exact
    return fill(values, in_range, eqn.params["fill_value"])


def outer_product(lhs: jax.Array, rhs: jax.Array, batch_dims, preferred) -> jax.Array:
    """`dot_general(lhs, rhs)` with no contracting dims, as a broadcast multiply.

    dot_general's output order is (batch dims, lhs free dims, rhs free dims).
    """
    (lhs_batch, rhs_batch) = batch_dims
    lhs_free = [d for d in range(lhs.ndim) if d not in lhs_batch]
    rhs_free = [d for d in range(rhs.ndim) if d not in rhs_batch]
    lhs = jnp.transpose(lhs, (*lhs_batch, *lhs_free))
    rhs = jnp.transpose(rhs, (*rhs_batch, *rhs_free))
    lhs = lhs.reshape(lhs.shape + (1,) * len(rhs_free))  # -> [batch..., lhs free..., 1...]
    rhs = rhs.reshape(
        rhs.shape[: len(rhs_batch)] + (1,) * len(lhs_free) + rhs.shape[len(rhs_batch) :]
    )  # -> [batch..., 1..., rhs free...]
    dtype = preferred or jnp.result_type(lhs, rhs)
    return lhs.astype(dtype) * rhs.astype(dtype)


def kernel_rule(eqn, values: list) -> list | None:
    """The two rewrites of the module docstring; None leaves `eqn` as it is."""
    params = eqn.params
    if eqn.primitive.name == "dot_general" and not any(params["dimension_numbers"][0]):
        return [outer_product(*values, params["dimension_numbers"][1],
                              params["preferred_element_type"])]  # fmt: skip
    if is_row_lookup(eqn):
        return [_one_hot_lookup(eqn, *values)]
    return None


def evaluate(jaxpr: Jaxpr, consts: list, *args: Any, rule: Rule = kernel_rule) -> list:
    """Evaluates `jaxpr` like `jax.core.eval_jaxpr`, each equation (nested ones included) first
    offered to `rule`, which returns its outputs or None to run it as it is."""
    env = {}

    def read(var):
        return var.val if isinstance(var, jax.extend.core.Literal) else env[var]

    # all_invars: the consts' vars (attached by `trace`, leading inputs after `hoist`), then
    # the positions.
    env.update(zip(jaxpr.all_invars, [*consts, *args], strict=True))
    for eqn in jaxpr.eqns:
        values = [read(var) for var in eqn.invars]
        outs = rule(eqn, values)
        if outs is None and eqn.primitive.name in CALL_PRIMITIVES and sub_jaxprs(eqn):
            sub = sub_jaxprs(eqn)[0]
            if isinstance(sub, jax.extend.core.ClosedJaxpr):
                outs = evaluate(sub.jaxpr, list(sub.consts), *values, rule=rule)
            else:
                outs = evaluate(sub, [], *values, rule=rule)
        elif outs is None:
            outs = bind(eqn, values)
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(var) for var in jaxpr.outvars]


def as_bias_fn(jaxpr: Jaxpr | jax.extend.core.ClosedJaxpr | None, consts: list) -> reference.BiasFn:
    """A bias hook `(q_positions [batch, q_len], k_positions [batch, k_len]) ->
    [batch, heads, q_len, k_len]` that evaluates a tile jaxpr (of `trace` or `hoist`) on every
    (example, query tile), for `k_len` up to the tile's keys; `consts` may differ from the
    traced ones (e.g. be tracers). Plain `eval_jaxpr`: a table lookup stays a gather.

    Exact for biases whose entry [b, h, i, j] depends only on q_positions[b, i] and
    k_positions[b, j], the contract of every blocked kernel.
    """
    if jaxpr is None:
        return lambda q_positions, k_positions: None
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    block_q, block_k = (v.aval.shape[1] for v in jaxpr.all_invars[-2:])

    def tile(q_tile, k_row):  # [1, block_q], [1, block_k] -> [1, heads, block_q, block_k]
        return jax.core.eval_jaxpr(jaxpr, consts, q_tile, k_row)[0]

    def bias_fn(q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
        (batch, q_len), k_len = q_positions.shape, k_positions.shape[1]
        if k_len > block_k:
            raise ValueError(f"k_positions has {k_len} keys, more than the tile's {block_k}")
        num_tiles = -(-q_len // block_q)
        padded = jnp.pad(q_positions, ((0, 0), (0, num_tiles * block_q - q_len)))
        tiles = padded.reshape(batch, num_tiles, 1, block_q)
        k_rows = jnp.pad(k_positions, ((0, 0), (0, block_k - k_len)))[:, None, :]
        per_tile = jax.vmap(jax.vmap(tile, in_axes=(0, None)))(tiles, k_rows)
        # per_tile: [batch, num_tiles, 1, heads, block_q, block_k]
        heads = per_tile.shape[3]
        bias = jnp.einsum("bnhqk->bhnqk", per_tile[:, :, 0])
        bias = bias.reshape(batch, heads, num_tiles * block_q, block_k)
        return bias[:, :, :q_len, :k_len]  # -> [batch, heads, q_len, k_len]

    return bias_fn
