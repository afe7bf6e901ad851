"""The GPU (Triton) form of the Pallas flash kernel, the PE bias computed inside each tile.

The layout of jax.experimental.pallas.ops.gpu.attention: one program per (query block,
example); inside it a `lax.fori_loop` over the key blocks carries the online softmax (Milakov &
Gimelshein 2018; Dao et al. 2022, FlashAttention). Every head of the example is in the program,
its loop unrolled: a bias hook returns all heads at once (`[1, heads, block_q, block_k]`), so a
program per head would compute each tile's bias `heads` times. Each head's q, k, v tile is
loaded from its ref (Triton's dot is 2-D) and the bias tile is split per head (`jnp.split`:
Triton has no slicing). No `[q_len, k_len]` array exists anywhere.

The bias is the PE's tile hook (`positional.base.TileBias`) called inside the program on its
params zero-padded to power-of-two shapes (`padded_dim`), Triton's only shapes; the hook's
contract is that such padding leaves its first `heads` rows unchanged, and the padded heads are
dropped. Tiles: block_q and block_k powers of two >= 16 (Triton's dot); head_dim is zero-padded
to `padded_dim`; query and key lengths are padded to whole blocks (padded keys get
-inf logits, padded queries are dropped). The defaults (16 queries x 32 keys) keep a program's
state, `heads x [block_q, head_dim]` float32 accumulators plus the `[heads, block_q, block_k]`
bias, within a 4-warp register file for the paper's 12 heads of 64 dims. Correct on an H200
but not fast: 134 ms for a bfloat16 T5 forward at batch 64 x 2,048 tokens, 6.4x XLA's
reference and 13x cuDNN (benchmarks/results/gpu_session_h200.md), so `auto` does not pick it.

A contextual hook (`positional.base.ContextualLogits`, CoPE): the key loop runs last to first,
each head's carry holding its queries' gate sum over the key blocks already seen; its params
are zero-padded like the bias's (the hook's contract: padding changes nothing it returns).

Semantics equal `reference.attend` (no 1/sqrt(head_dim); causal by position; a query with no
visible key gets the uniform row over the real keys). Under precision 'highest' the float32
kernel equals the reference to 2e-7 on an H200 (not TF32's ~3e-4).

Checked without a GPU: interpret mode equals the reference; `jax.export(...,
platforms=['cuda'])` under an abstract H100 runs the Pallas Triton lowering (a
`__gpu$xla.gpu.triton` custom call). On an H200 (benchmarks/gpu_session.py): compiled, and
equal to the reference in output and gradients, float32 and bfloat16, prefill and decode.
jax 0.12 deprecates the Pallas Triton backend (a DeprecationWarning at lowering) for Mosaic
GPU, whose kernels are written for Hopper and later only.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from lenggen.model.attention import reference

DEFAULT_BLOCK_Q = 16
DEFAULT_BLOCK_K = 32
NUM_WARPS = 4


def num_stages(itemsize: int) -> int:
    """Triton's software-pipelining depth for inputs of `itemsize` bytes: 2 for 16-bit inputs;
    1 for float32, whose 2-stage program for the paper's 12 heads of 64 asked an H200 for
    248,128 bytes of shared memory (232,448 available; benchmarks/results/gpu_session_h200.md).
    """
    return 2 if itemsize <= 2 else 1


# Triton's dot (tl.dot) takes M, N, K >= 16.
MIN_DIM = 16


def padded_dim(size: int) -> int:
    """1 stays 1 (a broadcast axis); d > 1 -> the next power of two >= max(d, MIN_DIM)."""
    return 1 if size == 1 else max(MIN_DIM, 1 << (size - 1).bit_length())


def pad_param(array: jax.Array) -> jax.Array:
    """`array` zero-padded at the end of every axis to `padded_dim` of its size."""
    array = jnp.asarray(array)
    return jnp.pad(array, [(0, padded_dim(d) - d) for d in array.shape])


def block_size(requested: int, length: int, name: str) -> int:
    """The tile size along an axis of `length`: `requested` (a power of two >= 16), or the
    smallest such size holding the whole axis if that is smaller."""
    if requested < MIN_DIM or requested & (requested - 1):
        raise ValueError(
            f"{name} must be a power of two >= {MIN_DIM} on the gpu target "
            f"(Triton tiles), got {requested}"
        )
    return min(requested, padded_dim(max(length, 2)))


def _split_heads(bias: jax.Array, heads: int) -> list[jax.Array]:
    """Padded `[padded heads, block_q, block_k]` -> `heads` tiles `[block_q, block_k]`."""
    tile = bias.shape[1:]
    parts = jnp.split(bias, bias.shape[0], axis=0)
    return [part.reshape(tile) for part in parts[:heads]]


def _kernel(
    q_pos_ref,
    k_pos_ref,
    k_valid_ref,
    q_ref,
    k_ref,
    v_ref,
    *refs,
    bias_tile_fn,
    param_shapes: tuple,
    contextual,
    contextual_shapes: tuple,
    heads: int,
    k_len: int,
    block_k: int,
):
    """One (query block, example) program; see the module docstring.

    Refs: q_pos `[block_q]`, k_pos and k_valid `[k_padded]` int32, q `[heads, block_q, dim]`,
    k and v `[heads, k_padded, dim]`, the padded bias params (whole), the padded contextual
    params (whole), then the output `[heads, block_q, dim]`; dim is the padded head_dim.
    """
    num_params, num_contextual = len(param_shapes), len(contextual_shapes)
    param_refs, o_ref = refs[:num_params], refs[-1]
    contextual_refs = refs[num_params : num_params + num_contextual]
    q_pos = q_pos_ref[...]  # -> [block_q]
    block_q = q_pos.shape[0]
    params = tuple(
        ref[...].reshape(shape) for ref, shape in zip(param_refs, param_shapes, strict=True)
    )
    cparams = tuple(
        ref[...].reshape(shape)
        for ref, shape in zip(contextual_refs, contextual_shapes, strict=True)
    )
    num_blocks = k_pos_ref.shape[0] // block_k
    if contextual is not None:  # [t, j] = 1 where t >= j: a block's suffix sums as one dot
        index = jax.lax.broadcasted_iota(jnp.int32, (block_k, block_k), 0)
        at_or_after = (index >= jax.lax.broadcasted_iota(jnp.int32, (block_k, block_k), 1)).astype(
            jnp.float32
        )

    def body(step, carry):
        # With a contextual hook the key blocks go last to first (its counts sum later keys).
        key_block = step if contextual is None else num_blocks - 1 - step
        start = pl.multiple_of(key_block * block_k, block_k)
        keys = pl.ds(start, block_k)
        k_pos = k_pos_ref[keys]  # -> [block_k]
        visible = (k_pos[None, :] <= q_pos[:, None]) & (k_valid_ref[keys] != 0)[None, :]
        real = start + jax.lax.broadcasted_iota(jnp.int32, (1, block_k), 1) < k_len
        if bias_tile_fn is None:
            biases = [None] * heads
        else:
            bias = bias_tile_fn(params, q_pos, k_pos)  # -> [padded heads, block_q, block_k]
            biases = _split_heads(bias.astype(jnp.float32), heads)
        new_carry = []
        for head, (row_max, row_sum, acc, later) in enumerate(carry):
            k, v = k_ref[head, keys, :], v_ref[head, keys, :]  # -> [block_k, dim]
            logits = jax.lax.dot_general(
                q_ref[head], k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
            )  # [bq, bk]
            if contextual is not None:
                gates = jnp.where(visible, contextual.gate_fn(cparams, logits), 0.0)
                suffix = jnp.dot(gates, at_or_after, preferred_element_type=jnp.float32)
                counts = later[:, None] + suffix  # -> [bq, bk]
                later = later + gates.sum(axis=-1)
                q_head = q_ref[head].astype(jnp.float32)  # -> [bq, dim]
                logits = logits + contextual.tile_term_fn(cparams, q_head, counts)
            if biases[head] is not None:
                logits = logits + biases[head]
            logits = jnp.where(visible, logits, reference.MASK_VALUE)
            logits = jnp.where(real, logits, -jnp.inf)  # padded key slots
            new_max = jnp.maximum(row_max, logits.max(axis=-1))  # -> [block_q]
            probs = jnp.exp(logits - new_max[:, None])
            rescale = jnp.exp(row_max - new_max)
            update = jnp.dot(probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
            new_carry.append(
                (
                    new_max,
                    rescale * row_sum + probs.sum(axis=-1),
                    rescale[:, None] * acc + update,
                    later,
                )
            )
        return tuple(new_carry)

    init = tuple(
        (
            jnp.full((block_q,), reference.MASK_VALUE, jnp.float32),
            jnp.zeros((block_q,), jnp.float32),
            jnp.zeros((block_q, o_ref.shape[-1]), jnp.float32),
            jnp.zeros((block_q,), jnp.float32),  # the gate sum of later key blocks
        )
        for _ in range(heads)
    )
    final = jax.lax.fori_loop(0, num_blocks, body, init)
    for head, (_, row_sum, acc, _) in enumerate(final):
        # row_sum >= 1: the row's maximum key contributes exp(0).
        o_ref[head, :, :] = (acc / row_sum[:, None]).astype(o_ref.dtype)


def forward(
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
    """The Triton `pallas_call`; arguments as in `pallas_flash.attend`, the bias as a tile
    hook's `fn` (None: no bias) and its `params` (unpadded), the contextual hook (None: none)
    and its params (unpadded), block sizes from `block_size`.

    Returns:
      `[batch, q_len, heads, head_dim]` in v's dtype.
    """
    batch, q_len, heads, head_dim = q.shape
    k_len = k.shape[1]
    dim = padded_dim(head_dim)
    q_padded, k_padded = pl.cdiv(q_len, block_q) * block_q, pl.cdiv(k_len, block_k) * block_k

    def pad(array, axis_sizes):
        return jnp.pad(array, [(0, s - d) for d, s in zip(array.shape, axis_sizes)])

    # [batch, len, heads, head_dim] -> [batch, heads, len, dim]: a head's tile is (len, dim).
    q_t = pad(jnp.einsum("bqhd->bhqd", q), (batch, heads, q_padded, dim))
    k_t = pad(jnp.einsum("bkhd->bhkd", k), (batch, heads, k_padded, dim))
    v_t = pad(jnp.einsum("bkhd->bhkd", v), (batch, heads, k_padded, dim))
    q_pos = pad(q_positions.astype(jnp.int32), (batch, q_padded))
    k_pos = pad(k_positions.astype(jnp.int32), (batch, k_padded))
    k_ok = pad(k_valid.astype(jnp.int32), (batch, k_padded))
    padded_params = [pad_param(p) for p in params]
    padded_contextual = [pad_param(p) for p in contextual_params]
    # Scalars travel as [1]: a ref has at least one axis.
    flat_params = [p.reshape(1) if p.ndim == 0 else p for p in (*padded_params, *padded_contextual)]

    def whole(array):
        return pl.BlockSpec(array.shape, lambda i, b: (0,) * array.ndim)

    kernel = functools.partial(
        _kernel,
        bias_tile_fn=bias_tile_fn,
        heads=heads,
        k_len=k_len,
        block_k=block_k,
        param_shapes=tuple(p.shape for p in padded_params),
        contextual=contextual,
        contextual_shapes=tuple(p.shape for p in padded_contextual),
    )
    tile_q = pl.BlockSpec((None, heads, block_q, dim), lambda i, b: (b, 0, i, 0))
    keys = pl.BlockSpec((None, heads, k_padded, dim), lambda i, b: (b, 0, 0, 0))
    out = pl.pallas_call(
        kernel,
        grid=(q_padded // block_q, batch),
        in_specs=[
            pl.BlockSpec((None, block_q), lambda i, b: (b, i)),
            pl.BlockSpec((None, k_padded), lambda i, b: (b, 0)),
            pl.BlockSpec((None, k_padded), lambda i, b: (b, 0)),
            tile_q,
            keys,
            keys,
            *(whole(p) for p in flat_params),
        ],
        out_specs=tile_q,
        out_shape=jax.ShapeDtypeStruct((batch, heads, q_padded, dim), v.dtype),
        compiler_params=plgpu.CompilerParams(
            num_warps=NUM_WARPS, num_stages=num_stages(jnp.dtype(q.dtype).itemsize)
        ),
        interpret=interpret,
        name="pallas_flash_gpu",
    )(q_pos, k_pos, k_ok, q_t, k_t, v_t, *flat_params)
    out = out[:, :, :q_len, :head_dim]  # -> [batch, heads, q_len, head_dim]
    return jnp.einsum("bhqd->bqhd", out)  # -> [batch, q_len, heads, head_dim]
