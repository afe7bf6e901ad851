"""A Pallas flash-attention kernel that computes the PE bias inside each tile, for TPU and GPU.

Two forms of one kernel, picked by `target` (by default the platform's: that of the devices the
program is compiled for, so a CPU host compiling for a TPU topology builds the Mosaic form):
  * tpu (here, Mosaic): the grid is `(batch, query blocks, key blocks)`, key blocks innermost
    (Dao et al. 2022, FlashAttention; the layout of jax.experimental.pallas.ops.tpu.
    flash_attention). Each program holds one `[heads, block_q, head_dim]` query tile and one
    `[heads, block_k, head_dim]` key/value tile, computes the PE bias of that tile from the
    tile's positions, and updates the online softmax carried in scratch memory across key
    blocks.
  * gpu (`pallas_gpu`, Triton): one program per (query block, example) looping over the key
    blocks with the online softmax in the loop carry, every head in the program.
No `[q_len, k_len]` array exists anywhere, in HBM or in a kernel.

The bias in the tile: the PE's `tile_bias` hook (`positional.base.TileBias`), a jnp function
`fn(params, q_positions [tq], k_positions [tk]) -> [heads, tq, tk]` plus the arrays it reads.
A Pallas kernel may not capture arrays, so `params` are kernel inputs (whole, in every program)
and the kernel calls `fn` on them and the tile's positions. The hook is written for kernels
(gather-free: T5's table is a one-hot contraction), so ALiBi, T5 and FIRE all run in the tile,
compiled: checked with `jax.export(..., platforms=['tpu'])` (Mosaic lowering) and
`platforms=['cuda']` (Triton lowering) on a CPU; the Triton form also compiled and ran on an
H200 (benchmarks/results/gpu_session_h200.md). The
kernel stays PE-agnostic: a new PE needs no edit here. A bias without a tile hook, and any call
with attention dropout, runs `blockwise.attend` (the same math) and logs one line saying why.
On a CPU both forms run in interpret mode.

A contextual hook (`positional.base.ContextualLogits`, CoPE) runs in the tile too: the key
tiles are visited last to first (TPU: the index maps; GPU: the key loop), each query's gate sum
over the tiles already seen is carried (TPU: scratch memory; GPU: the loop carry), and the
hook's gather-free `tile_term_fn` gives the term.

Semantics equal `reference.attend` (no 1/sqrt(head_dim); causal by position; a query with no
visible key gets the uniform row over the real keys; padded tile slots get -inf). Every key
block is visited: causality is by position, so which blocks are fully masked is data, not
shape. Interpret mode on a CPU (`interpret=None` picks it) is how the tests check it.

Training: there is no Pallas backward kernel; a custom VJP gives the gradients of
`blockwise.attend` (recomputed block by block) on the same tile hook, so the PE's parameters
get their gradients through `params`; a call with attention dropout runs `blockwise.attend`
altogether.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from absl import logging
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.sharding import PartitionSpec as P

from lenggen.model.attention import auto, blockwise, pallas_gpu, reference
from lenggen.model.positional.base import ContextualLogits, TileBias, block_counts

TARGETS = ("tpu", "gpu")
# TPU tiles; compiled, multiples of 128 or the whole length (see `attend`).
DEFAULT_BLOCK_Q = 128
DEFAULT_BLOCK_K = 128


def _block(requested: int, length: int, name: str) -> int:
    """The tile size along an axis of `length`: `requested`, or the whole axis if shorter."""
    if requested < 1:
        raise ValueError(f"{name} must be >= 1, got {requested}")
    return min(requested, length)


def _pad(array: jax.Array, axis: int, padded_len: int) -> jax.Array:
    """Zero-pads `axis` of `array` up to `padded_len`."""
    pad = [(0, 0)] * array.ndim
    pad[axis] = (0, padded_len - array.shape[axis])
    return jnp.pad(array, pad)


def _kernel(
    q_pos_ref,
    q_pos_col_ref,
    k_pos_ref,
    k_valid_ref,
    q_ref,
    k_ref,
    v_ref,
    *refs,
    bias_tile_fn,
    param_shapes: tuple,
    contextual: ContextualLogits | None,
    contextual_shapes: tuple,
    k_len: int,
    block_k: int,
):
    """One (example, query tile, key tile) program; see the module docstring.

    Refs (tile shapes): q_pos `[1, 1, block_q]`, q_pos_col `[1, block_q, 1]`, k_pos and
    k_valid `[1, 1, block_k]` int32, q `[1, heads, block_q, head_dim]`, k and v
    `[1, heads, block_k, head_dim]`, the bias params (whole), then the output
    `[1, heads, block_q, head_dim]` and the scratch: running max and sum `[heads, block_q, 1]`,
    accumulator `[heads, block_q, head_dim]` (float32), and with `contextual` its params
    (whole, after the bias params) and the gate sum of the key tiles already seen `[heads,
    block_q, 1]`: the key tiles then come last to first (`_forward`'s index maps).
    """
    num_params, num_contextual = len(param_shapes), len(contextual_shapes)
    param_refs = refs[:num_params]
    contextual_refs = refs[num_params : num_params + num_contextual]
    o_ref, max_ref, sum_ref, acc_ref, *later_ref = refs[num_params + num_contextual :]
    key_block = pl.program_id(2)
    if contextual is not None:  # the tile's place in the key array
        key_block = pl.num_programs(2) - 1 - key_block

    @pl.when(pl.program_id(2) == 0)
    def _init():
        max_ref[...] = jnp.full(max_ref.shape, reference.MASK_VALUE, jnp.float32)
        sum_ref[...] = jnp.zeros(sum_ref.shape, jnp.float32)
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)
        for ref in later_ref:
            ref[...] = jnp.zeros(ref.shape, jnp.float32)

    q, k, v = q_ref[0], k_ref[0], v_ref[0]  # -> [heads, block_q | block_k, head_dim]
    logits = jnp.einsum("hqd,hkd->hqk", q, k, preferred_element_type=jnp.float32)
    k_pos = k_pos_ref[0]  # -> [1, block_k]
    visible = (k_pos <= q_pos_col_ref[0]) & (k_valid_ref[0] != 0)  # -> [block_q, block_k]
    if contextual is not None:
        cparams = tuple(
            ref[...].reshape(shape)
            for ref, shape in zip(contextual_refs, contextual_shapes, strict=True)
        )
        gates = jnp.where(visible[None], contextual.gate_fn(cparams, logits), 0.0)
        counts, later_ref[0][...] = block_counts(gates, later_ref[0][...])
        term = contextual.tile_term_fn(cparams, q.astype(jnp.float32), counts)
        logits = logits + term
    if bias_tile_fn is not None:
        params = tuple(
            ref[...].reshape(shape) for ref, shape in zip(param_refs, param_shapes, strict=True)
        )
        bias = bias_tile_fn(params, q_pos_ref[0, 0], k_pos[0])  # -> [heads, block_q, block_k]
        logits = logits + bias.astype(jnp.float32)
    logits = jnp.where(visible[None], logits, reference.MASK_VALUE)
    index = key_block * block_k + jax.lax.broadcasted_iota(jnp.int32, k_pos.shape, 1)
    logits = jnp.where((index < k_len)[None], logits, -jnp.inf)  # padded tile slots

    row_max = max_ref[...]
    new_max = jnp.maximum(row_max, logits.max(axis=-1, keepdims=True))  # -> [h, block_q, 1]
    probs = jnp.exp(logits - new_max)
    rescale = jnp.exp(row_max - new_max)
    sum_ref[...] = rescale * sum_ref[...] + probs.sum(axis=-1, keepdims=True)
    update = jnp.einsum(
        "hqk,hkd->hqd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32
    )
    acc_ref[...] = rescale * acc_ref[...] + update
    max_ref[...] = new_max

    @pl.when(pl.program_id(2) == pl.num_programs(2) - 1)
    def _finish():
        o_ref[0] = (acc_ref[...] / sum_ref[...]).astype(o_ref.dtype)


def _forward(
    q,
    k,
    v,
    q_positions,
    k_positions,
    k_valid,
    bias_tile_fn,
    params,
    contextual=None,
    contextual_params=(),
    *,
    block_q: int,
    block_k: int,
    interpret: bool,
) -> jax.Array:
    """The Mosaic `pallas_call`; arguments as in `attend`, the bias as a tile hook's `fn`
    (None: no bias) and `params`, the contextual hook (None: none) and its params apart."""
    batch, q_len, heads, head_dim = q.shape
    k_len = k.shape[1]
    q_padded, k_padded = pl.cdiv(q_len, block_q) * block_q, pl.cdiv(k_len, block_k) * block_k
    q_pos = _pad(q_positions.astype(jnp.int32), 1, q_padded)  # -> [batch, q_padded]
    k_pos = _pad(k_positions.astype(jnp.int32), 1, k_padded)  # -> [batch, k_padded]
    k_ok = _pad(k_valid.astype(jnp.int32), 1, k_padded)
    # [batch, len, heads, head_dim] -> [batch, heads, len, head_dim]: tiles are (len, head_dim).
    q_t = _pad(jnp.einsum("bqhd->bhqd", q), 2, q_padded)
    k_t = _pad(jnp.einsum("bkhd->bhkd", k), 2, k_padded)
    v_t = _pad(jnp.einsum("bkhd->bhkd", v), 2, k_padded)
    # Scalars and vectors as [1, n]: TPU tiles are at least 2-D.
    flat_params = [p.reshape(1, -1) if p.ndim < 2 else p for p in (*params, *contextual_params)]
    num_k_blocks = k_padded // block_k
    if contextual is None:
        key_tile = lambda j: j  # noqa: E731
    else:  # last to first: the contextual counts sum the keys after each one
        key_tile = lambda j: num_k_blocks - 1 - j  # noqa: E731

    def whole(array):
        return pl.BlockSpec(array.shape, lambda b, i, j: (0,) * array.ndim)

    row_q = pl.BlockSpec((1, 1, block_q), lambda b, i, j: (b, 0, i))
    row_k = pl.BlockSpec((1, 1, block_k), lambda b, i, j: (b, 0, key_tile(j)))
    tile_q = pl.BlockSpec((1, heads, block_q, head_dim), lambda b, i, j: (b, 0, i, 0))
    tile_k = pl.BlockSpec((1, heads, block_k, head_dim), lambda b, i, j: (b, 0, key_tile(j), 0))
    kernel = functools.partial(
        _kernel,
        bias_tile_fn=bias_tile_fn,
        param_shapes=tuple(jnp.shape(p) for p in params),
        contextual=contextual,
        contextual_shapes=tuple(jnp.shape(p) for p in contextual_params),
        k_len=k_len,
        block_k=block_k,
    )
    later = [] if contextual is None else [pltpu.VMEM((heads, block_q, 1), jnp.float32)]
    out = pl.pallas_call(
        kernel,
        grid=(batch, q_padded // block_q, num_k_blocks),
        in_specs=[
            row_q,
            pl.BlockSpec((1, block_q, 1), lambda b, i, j: (b, i, 0)),
            row_k,
            row_k,
            tile_q,
            tile_k,
            tile_k,
            *(whole(p) for p in flat_params),
        ],
        out_specs=tile_q,
        out_shape=jax.ShapeDtypeStruct((batch, heads, q_padded, head_dim), v.dtype),
        scratch_shapes=[
            pltpu.VMEM((heads, block_q, 1), jnp.float32),
            pltpu.VMEM((heads, block_q, 1), jnp.float32),
            pltpu.VMEM((heads, block_q, head_dim), jnp.float32),
            *later,
        ],
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "arbitrary")
        ),
        interpret=interpret,
    )(
        q_pos[:, None, :],
        q_pos[:, :, None],
        k_pos[:, None, :],
        k_ok[:, None, :],
        q_t,
        k_t,
        v_t,
        *flat_params,
    )
    return jnp.einsum("bhqd->bqhd", out[:, :, :q_len])  # -> [batch, q_len, heads, head_dim]


def _target(target: str | None, interpret: bool, platform: str) -> str:
    """The kernel form to run: `target`, or the platform's ('gpu' on a GPU, else 'tpu')."""
    if target is None:
        target = "gpu" if platform == "gpu" else "tpu"
    if target not in TARGETS:
        raise ValueError(f"unknown pallas_flash target {target!r}; expected one of {TARGETS}")
    if not interpret and platform in TARGETS and platform != target:
        raise ValueError(
            f"pallas_flash target {target!r} does not compile on the {platform} backend; use "
            f"target={platform!r} (the default) or interpret=True"
        )
    return target


def _fall_back(
    reason: str, q, k, v, q_positions, k_positions, k_valid, bias_fn, **options
) -> jax.Array:
    """`blockwise.attend` (the same function), after one log line saying why."""
    logging.info("pallas_flash: %s; running blockwise attention instead", reason)
    return blockwise.attend(q, k, v, q_positions, k_positions, k_valid, bias_fn, **options)


# The mesh axis batches are split over (lenggen.sharding's rules put "batch" on it).
DATA_AXIS = "data"


def _per_shard(forward, batch: int):
    """`forward` run on each shard of the batch under the current mesh (`jax.set_mesh`).

    XLA cannot partition a Mosaic or Triton kernel ("Mosaic kernels cannot be automatically
    partitioned"), so on a mesh of several devices the kernel runs inside `jax.shard_map`: each
    device on its rows of the batch (over DATA_AXIS when it divides the batch), the tile bias's
    params and any other mesh axis replicated. Without a mesh, `forward` as is.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return forward
    rows = (
        P(DATA_AXIS) if DATA_AXIS in mesh.axis_names and batch % mesh.shape[DATA_AXIS] == 0 else P()
    )
    return jax.shard_map(
        forward, mesh=mesh, in_specs=(rows,) * 6 + (P(),), out_specs=rows, check_vma=False
    )


def attend(
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
    block_q: int | None = None,
    block_k: int | None = None,
    interpret: bool | None = None,
    target: str | None = None,
    platform: str | None = None,
) -> jax.Array:
    """Flash attention with the PE bias computed per tile; same contract as `reference.attend`.

    Args:
      q: `[batch, q_len, heads, head_dim]`.
      k, v: `[batch, k_len, heads, head_dim]`.
      q_positions: `[batch, q_len]` int32.
      k_positions: `[batch, k_len]` int32.
      k_valid: `[batch, k_len]` bool.
      bias_fn: the PE's `bias` hook; consulted only when `tile_bias` is None (a bias without a
        tile form runs blockwise).
      dropout_rate, dropout_rng: as in `reference.attend`; with dropout the call is
        `blockwise.attend`.
      tile_bias: the PE's `tile_bias()` hook, the same bias as `bias_fn` in the form the tile
        evaluates; None when the PE adds no bias or has no tile form.
      contextual: the PE's `contextual_logits` hook (see `reference.attend`), evaluated in
        the tile (its `tile_term_fn`), the key tiles taken last to first.
      block_q, block_k: tile sizes; None means the target's defaults (tpu: DEFAULT_BLOCK_Q/K,
        clipped to the lengths, multiples of 128 or the whole length when compiled; gpu:
        `pallas_gpu.DEFAULT_BLOCK_Q/K`, powers of two >= 16).
      interpret: run in Pallas interpret mode; None means only when `platform` is 'cpu'.
      target: 'tpu' (Mosaic) or 'gpu' (Triton); None means 'gpu' on a GPU platform, else 'tpu'.
      platform: the platform the program is compiled for ('cpu', 'gpu', 'tpu'; the mesh's);
        None: this process's default backend.
    Returns:
      `[batch, q_len, heads, head_dim]` in v's dtype.
    """
    reference.check_dropout_rate(dropout_rate)
    args = (q, k, v, q_positions, k_positions, k_valid, bias_fn)
    if dropout_rng is not None and dropout_rate > 0.0:
        return _fall_back(
            "attention dropout has no Pallas form",
            *args,
            dropout_rate=dropout_rate,
            dropout_rng=dropout_rng,
            contextual=contextual,
        )
    if tile_bias is None and jax.eval_shape(bias_fn, q_positions, k_positions) is not None:
        return _fall_back(
            "the positional encoding's bias has no tile form (tile_bias)",
            *args,
            contextual=contextual,
        )
    platform = auto.resolve(platform)
    if interpret is None:
        interpret = platform == "cpu"
    target = _target(target, interpret, platform)
    gpu = target == "gpu"
    defaults = (
        (pallas_gpu.DEFAULT_BLOCK_Q, pallas_gpu.DEFAULT_BLOCK_K)
        if gpu
        else (DEFAULT_BLOCK_Q, DEFAULT_BLOCK_K)
    )
    sizes = []
    for name, size, default, length in zip(
        ("block_q", "block_k"), (block_q, block_k), defaults, (q.shape[1], k.shape[1])
    ):
        size = default if size is None else size
        sizes.append(
            pallas_gpu.block_size(size, length, name) if gpu else _block(size, length, name)
        )
    block_q, block_k = sizes
    forward = pallas_gpu.forward if gpu else _forward
    bias_tile_fn = None
    if tile_bias is not None:
        bias_tile_fn = tile_bias.triton_fn if gpu and tile_bias.triton_fn else tile_bias.fn
    bias_params = () if tile_bias is None else tuple(jnp.asarray(p) for p in tile_bias.params)
    num_bias = len(bias_params)
    # The bias's params, then the contextual hook's, in one tuple.
    params = bias_params + (
        () if contextual is None else tuple(jnp.asarray(p) for p in contextual.params)
    )

    def with_contextual(params):
        """(bias params, the contextual hook bound to its params from `params`, or None)."""
        if contextual is None:
            return params, None
        return params[:num_bias], dataclasses.replace(contextual, params=params[num_bias:])

    # The params are explicit arguments of the custom VJP, so it can return their gradients.
    def kernel(q, k, v, q_positions, k_positions, k_valid, params):
        bias_params, bound = with_contextual(params)
        # The kernel gets the hook's functions only: its params travel as kernel inputs.
        extra = (
            {}
            if bound is None
            else dict(
                contextual=dataclasses.replace(bound, params=()), contextual_params=bound.params
            )
        )
        return forward(
            q,
            k,
            v,
            q_positions,
            k_positions,
            k_valid,
            bias_tile_fn,
            bias_params,
            block_q=block_q,
            block_k=block_k,
            interpret=interpret,
            **extra,
        )

    if not interpret:
        kernel = _per_shard(kernel, q.shape[0])

    @jax.custom_vjp
    def flash(q, k, v, q_positions, k_positions, k_valid, params):
        return kernel(q, k, v, q_positions, k_positions, k_valid, params)

    def flash_forward(*args):
        return flash(*args), args

    def flash_backward(args, grad_out):
        # No Pallas backward kernel: the gradients are blockwise's (the same function), its
        # key blocks equal to our tiles, the bias the same tile hook applied per example.
        q, k, v, q_positions, k_positions, k_valid, params = args
        inexact = [jnp.issubdtype(p.dtype, jnp.inexact) for p in params]

        def differentiable(q, k, v, float_params):
            it = iter(float_params)
            full = tuple(
                next(it) if is_float else p for p, is_float in zip(params, inexact, strict=True)
            )
            bias_params, bound = with_contextual(full)
            bias = (
                (lambda qp, kp: None)
                if bias_tile_fn is None
                else TileBias(bias_tile_fn, bias_params)
            )
            return blockwise.attend(
                q,
                k,
                v,
                q_positions,
                k_positions,
                k_valid,
                bias,
                contextual=bound,
                block_k=block_k,
            )

        float_params = [p for p, is_float in zip(params, inexact, strict=True) if is_float]
        grads = jax.vjp(differentiable, q, k, v, float_params)[1](grad_out)
        it = iter(grads[3])
        grad_params = tuple(
            next(it) if is_float else jnp.zeros(p.shape, jax.dtypes.float0)
            for p, is_float in zip(params, inexact, strict=True)
        )
        return (*grads[:3], None, None, None, grad_params)

    flash.defvjp(flash_forward, flash_backward)
    return flash(q, k, v, q_positions, k_positions, k_valid, params)
