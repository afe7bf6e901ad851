"""A PE's bias hook as a jaxpr that a Pallas kernel can evaluate on one tile of positions.

A Pallas kernel may not capture arrays, but `bias_fn` closes over parameters (T5's table) and
constants (ALiBi's slopes). `trace` turns it into a jaxpr at tile shape plus those arrays (its
consts), which the kernel receives as inputs; `evaluate` runs the jaxpr on a tile.

`evaluate` is `jax.core.eval_jaxpr` with one rewrite for compiled kernels: a `dot_general`
without contracting dimensions (an outer product, which is what `jnp.einsum('h,bqk->bhqk', ...)`
becomes) is computed as a broadcast multiply, because Mosaic (TPU) cannot lower a dot with no
contraction while it lowers elementwise products. The result is the same array.

`has_gather` reports a table lookup (T5), which Mosaic lowers only in take_along_axis form.
`as_bias_fn` turns the tile jaxpr back into a bias hook over whole query rows, for code outside
the kernel that must see the same function of the same arrays (pallas_flash's custom VJP).
"""

from typing import Any

import jax
import jax.extend
import jax.numpy as jnp

from lenggen.model.attention import reference

# Primitives whose sub-jaxpr is evaluated in place: jit-wrapped jnp functions, remat, and
# custom derivatives (jax.nn.relu is a custom_jvp), whose rules a kernel's forward never needs.
_CALL_PRIMITIVES = (
    "jit", "pjit", "closed_call", "core_call", "remat", "checkpoint",
    "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
)  # fmt: skip


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


def _sub_jaxprs(eqn) -> list:
    return [p for p in eqn.params.values() if isinstance(p, jax.extend.core.ClosedJaxpr)] + [
        p for p in eqn.params.values() if isinstance(p, jax.extend.core.Jaxpr)
    ]


def has_gather(jaxpr: jax.extend.core.Jaxpr) -> bool:
    """Whether `jaxpr` (or a jaxpr nested in it) gathers."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "gather":
            return True
        for sub in _sub_jaxprs(eqn):
            if has_gather(getattr(sub, "jaxpr", sub)):
                return True
    return False


def _outer_product(lhs: jax.Array, rhs: jax.Array, batch_dims, preferred) -> jax.Array:
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


def evaluate(jaxpr: jax.extend.core.Jaxpr, consts: list, *args: Any) -> list:
    """Evaluates `jaxpr` like `jax.core.eval_jaxpr`, outer-product dots as multiplies."""
    env = {}

    def read(var):
        return var.val if isinstance(var, jax.extend.core.Literal) else env[var]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        values = [read(var) for var in eqn.invars]
        name, params = eqn.primitive.name, eqn.params
        if name == "dot_general" and not any(params["dimension_numbers"][0]):
            outs = [
                _outer_product(
                    *values, params["dimension_numbers"][1], params["preferred_element_type"]
                )
            ]
        elif name in _CALL_PRIMITIVES and _sub_jaxprs(eqn):
            sub = _sub_jaxprs(eqn)[0]
            if isinstance(sub, jax.extend.core.ClosedJaxpr):
                outs = evaluate(sub.jaxpr, list(sub.consts), *values)
            else:
                outs = evaluate(sub, [], *values)
        else:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(var) for var in jaxpr.outvars]


def as_bias_fn(
    jaxpr: jax.extend.core.ClosedJaxpr | None, consts: list, block_q: int
) -> reference.BiasFn:
    """A bias hook `(q_positions [batch, q_len], k_positions [batch, block_k]) ->
    [batch, heads, q_len, block_k]` that evaluates the tile jaxpr of `trace` on every
    (example, query tile); `consts` may differ from the traced ones (e.g. be tracers).

    Exact for biases whose entry [b, h, i, j] depends only on q_positions[b, i] and
    k_positions[b, j], the contract of every blocked kernel.
    """
    if jaxpr is None:
        return lambda q_positions, k_positions: None

    def tile(q_tile, k_row):  # [1, block_q], [1, block_k] -> [1, heads, block_q, block_k]
        return jax.core.eval_jaxpr(jaxpr.jaxpr, consts, q_tile, k_row)[0]

    def bias_fn(q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
        batch, q_len = q_positions.shape
        num_tiles = -(-q_len // block_q)
        padded = jnp.pad(q_positions, ((0, 0), (0, num_tiles * block_q - q_len)))
        tiles = padded.reshape(batch, num_tiles, 1, block_q)
        per_tile = jax.vmap(jax.vmap(tile, in_axes=(0, None)))(tiles, k_positions[:, None, :])
        # per_tile: [batch, num_tiles, 1, heads, block_q, block_k]
        heads, block_k = per_tile.shape[3], per_tile.shape[5]
        bias = jnp.einsum("bnhqk->bhnqk", per_tile[:, :, 0])
        bias = bias.reshape(batch, heads, num_tiles * block_q, block_k)
        return bias[:, :, :q_len]  # -> [batch, heads, q_len, block_k]

    return bias_fn
