"""A tile-bias jaxpr evaluated on arrays padded to the shapes Triton (Pallas on GPU) accepts.

Triton holds only tensors whose sizes are powers of two, and its `dot` needs every matrix
dimension >= 16. A bias tile's computation has dimensions that are neither: the heads (3 in the
tests, 12 in the paper), ALiBi's slopes `[heads]`, T5's table `[32, heads]`, FIRE's output layer
`[width, heads]`. So every array of it is carried padded: each dimension d > 1 becomes
`padded_dim(d)`, the next power of two >= max(d, 16); size-1 dimensions stay 1, so broadcasting
is unchanged. The logical entries sit at the front of each axis; the padding holds arbitrary
values (zeros in the consts, `pad_const`; whatever elementwise ops make of them after).

That is sound for elementwise ops, broadcasts, transposes, squeezes and iotas as they are. A
contraction (`dot_general`) or a reduction over a padded axis first masks the padding (zero,
or the reduction's identity); contractions become one 2-D dot (Triton's only form) or, when a
side is a vector, a multiply and a sum. Outer products and small-table lookups (T5) are
rewritten as in `tile_bias` (broadcast multiply; one-hot contraction at HIGHEST precision, exact).
A reshape that merges or splits padded axes has no padded form; it and every primitive not
listed here raise UnsupportedTileOp, which `pallas_gpu` answers by running the blockwise kernel.
"""

import math

import jax
import jax.numpy as jnp

from lenggen.model.attention import tile_bias

# Triton's dot (tl.dot) takes M, N, K >= 16.
MIN_DIM = 16

_ELEMENTWISE = frozenset(
    """abs neg sign floor ceil round exp exp2 expm1 log log1p log2 sqrt rsqrt cbrt square tanh
    logistic sin cos tan erf erf_inv integer_pow pow atan2 add sub mul div rem max min nextafter
    and or xor not eq ne lt le gt ge select_n clamp convert_element_type is_finite copy
    squeeze transpose""".split()
)
_REDUCTIONS = ("reduce_sum", "reduce_prod", "reduce_max", "reduce_min", "reduce_and", "reduce_or")


class UnsupportedTileOp(ValueError):
    """An equation of a bias tile that has no padded form."""


def padded_dim(size: int) -> int:
    """1 stays 1 (a broadcast axis); d > 1 -> the next power of two >= max(d, MIN_DIM)."""
    return 1 if size == 1 else max(MIN_DIM, 1 << (size - 1).bit_length())


def padded_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(padded_dim(d) for d in shape)


def pad_const(array: jax.Array) -> jax.Array:
    """`array` zero-padded at the end of every axis to `padded_shape`."""
    array = jnp.asarray(array)
    if array.ndim == 0:
        return array
    return jnp.pad(array, [(0, p - d) for d, p in zip(array.shape, padded_shape(array.shape))])


def _identity(reduction: str, dtype):
    """The value that leaves `reduction` unchanged, in `dtype`."""
    if reduction in ("reduce_max", "reduce_min"):
        if jnp.issubdtype(dtype, jnp.floating):
            low, high = -jnp.inf, jnp.inf
        else:
            low, high = jnp.iinfo(dtype).min, jnp.iinfo(dtype).max
        return low if reduction == "reduce_max" else high
    return {"reduce_sum": 0, "reduce_prod": 1, "reduce_and": True, "reduce_or": False}[reduction]


def _mask(x: jax.Array, logical: tuple[int, ...], axes, fill) -> jax.Array:
    """`x` with its padding along `axes` replaced by `fill`."""
    keep = None
    for axis in axes:
        if x.shape[axis] != logical[axis]:
            inside = jax.lax.broadcasted_iota(jnp.int32, x.shape, axis) < logical[axis]
            keep = inside if keep is None else keep & inside
    return x if keep is None else jnp.where(keep, x, jnp.asarray(fill, x.dtype))


def _dot(lhs, rhs, lhs_logical, rhs_logical, params) -> jax.Array:
    """A padded `dot_general` (batch dims only in an outer product): padded output, in
    dot_general's order (batch, lhs free, rhs free)."""
    (lhs_contract, rhs_contract), batch = params["dimension_numbers"]
    if not lhs_contract:
        return tile_bias.outer_product(lhs, rhs, batch, params["preferred_element_type"])
    if any(batch):
        raise UnsupportedTileOp(f"dot_general with batch dims {batch} has no Triton form")
    lhs = _mask(lhs, lhs_logical, lhs_contract, 0)
    rhs = _mask(rhs, rhs_logical, rhs_contract, 0)
    lhs_free = [d for d in range(lhs.ndim) if d not in lhs_contract]
    rhs_free = [d for d in range(rhs.ndim) if d not in rhs_contract]
    out_shape = tuple(lhs.shape[d] for d in lhs_free) + tuple(rhs.shape[d] for d in rhs_free)
    m = math.prod(lhs.shape[d] for d in lhs_free)
    n = math.prod(rhs.shape[d] for d in rhs_free)
    contract = math.prod(lhs.shape[d] for d in lhs_contract)
    lhs = jnp.transpose(lhs, (*lhs_free, *lhs_contract)).reshape(m, contract)
    rhs = jnp.transpose(rhs, (*rhs_contract, *rhs_free)).reshape(contract, n)
    dtype = params["preferred_element_type"] or jnp.result_type(lhs, rhs)
    if min(m, n, contract) >= MIN_DIM:
        out = jax.lax.dot_general(
            lhs,
            rhs,
            (((1,), (0,)), ((), ())),
            precision=params["precision"],
            preferred_element_type=dtype,
        )
    else:  # a matrix-vector product (m or n is 1): no tl.dot, and small
        out = (lhs[:, :, None].astype(dtype) * rhs[None].astype(dtype)).sum(axis=1)
    return out.reshape(out_shape)  # -> [lhs free..., rhs free...]


def _reshape(x: jax.Array, logical_in, logical_out) -> jax.Array:
    """A reshape that only adds or drops size-1 axes keeps the padded layout; one on unpadded
    arrays is a plain reshape; any other would move the padding into the entries."""
    if [d for d in logical_in if d != 1] == [d for d in logical_out if d != 1]:
        return x.reshape(padded_shape(logical_out))
    if padded_shape(logical_in) == tuple(logical_in) and (
        padded_shape(logical_out) == tuple(logical_out)
    ):
        return x.reshape(logical_out)
    raise UnsupportedTileOp(f"reshape {logical_in} -> {logical_out} merges padded axes")


def _lookup(eqn, table: jax.Array, indices: jax.Array) -> jax.Array:
    """`tile_bias`'s one-hot row lookup on padded arrays (padding rows never match)."""
    rows = eqn.invars[0].aval.shape[0]
    index, in_range = tile_bias.lookup_indices(indices, rows, eqn.params["mode"])
    hot_shape = (*index.shape, table.shape[0])
    one_hot = index[..., None] == jax.lax.broadcasted_iota(jnp.int32, hot_shape, index.ndim)
    logical_index = eqn.invars[1].aval.shape[:-1]
    params = dict(
        dimension_numbers=(((index.ndim,), (0,)), ((), ())),
        precision=jax.lax.Precision.HIGHEST,
        preferred_element_type=table.dtype,
    )
    values = _dot(one_hot.astype(table.dtype), table, (*logical_index, rows),
                  eqn.invars[0].aval.shape, params)  # fmt: skip
    return tile_bias.fill(values, in_range, eqn.params["fill_value"])


def padded_rule(eqn, values: list) -> list | None:
    """`tile_bias.evaluate`'s rule for padded arrays (module docstring)."""
    name, params = eqn.primitive.name, eqn.params
    shapes = [getattr(v.aval, "shape", ()) for v in eqn.invars]
    if name in _ELEMENTWISE:
        return None
    if name in tile_bias.CALL_PRIMITIVES and tile_bias.sub_jaxprs(eqn):
        sub = tile_bias.sub_jaxprs(eqn)[0]
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
            consts = [pad_const(c) for c in sub.consts]
            return tile_bias.evaluate(sub.jaxpr, consts, *values, rule=padded_rule)
        return None
    if name == "broadcast_in_dim":
        x = values[0]
        return [jax.lax.broadcast_in_dim(x, padded_shape(params["shape"]),
                                         params["broadcast_dimensions"])]  # fmt: skip
    if name == "reshape" and params.get("dimensions") is None:
        return [_reshape(values[0], shapes[0], tuple(params["new_sizes"]))]
    if name == "iota":
        shape = padded_shape(params["shape"])
        return [jax.lax.broadcasted_iota(params["dtype"], shape, params["dimension"])]
    if name == "dot_general":
        return [_dot(*values, *shapes, params)]
    if name in _REDUCTIONS:
        fill = _identity(name, values[0].dtype)
        masked = _mask(values[0], shapes[0], params["axes"], fill)
        return tile_bias.bind(eqn, [masked])
    if tile_bias.is_row_lookup(eqn):
        return [_lookup(eqn, *values)]
    raise UnsupportedTileOp(f"primitive {name!r} has no padded (Triton) form in a bias tile")


def evaluate(jaxpr: tile_bias.Jaxpr, consts: list, *args: jax.Array) -> list:
    """`jaxpr` on padded arrays: `consts` padded by `pad_const`, `args` of power-of-two sizes
    >= MIN_DIM (tile positions); returns the outputs padded (`padded_shape` of each)."""
    return tile_bias.evaluate(jaxpr, consts, *args, rule=padded_rule)
