"""Peak temporary memory of each attention kernel as the length grows, and their agreement.

Memory is XLA's own account of a compiled program, `jax.jit(f).lower(...).compile()
.memory_analysis().temp_size_in_bytes` (buffers besides arguments and outputs), so nothing is
allocated and the batch can be the evaluation batch. Two programs per kernel and length L:
  * the attention op alone at the paper's head sizes (12 heads x 64), q_len = k_len = L;
  * the teacher-forcing forward pass of a decoder (2 layers of the base width, 12 heads).
Agreement: the kernels are run on a batch of 2 at every length and compared with the
reference (max absolute difference of the outputs); pallas_flash runs in interpret mode on a
CPU, whose memory is the interpreter's, not a TPU's, and is too slow to run beyond 512.

  python -m benchmarks.attention_memory --pe=t5
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks import record
from lenggen.model import attention, positional
from lenggen.model.decoder import Decoder

KERNELS = ("reference", "blockwise", "dot_product", "pallas_flash")
HEADS, HEAD_DIM = 12, 64
PALLAS_RUN_MAX_LENGTH = 512


def _pe_config(name: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"name": name, name: positional.default_options(name)})


def bias_setup(pe_name: str):
    """(pe module, its parameters) for the bias hook at the benchmark's head count."""
    pe = positional.build(_pe_config(pe_name), HEADS, 768)
    positions = jnp.zeros((1, 1), jnp.int32)
    variables = pe.init(jax.random.key(0), positions, positions, method="bias")
    return pe, variables


def attention_fn(kernel: str, pe, platform: str | None = None, **kernel_options):
    """`(variables, q, k, v, q_pos, k_pos, k_valid) -> out`: the PE parameters are traced
    arguments, as inside the model; the kernel built for `platform` (None: this process's
    backend) with `kernel_options` (e.g. pallas_flash's block sizes)."""
    attend = functools.partial(attention.get(kernel, platform), **kernel_options)

    def run(variables, q, k, v, q_positions, k_positions, k_valid):
        def bias_fn(q_pos, k_pos):
            return pe.apply(variables, q_pos, k_pos, method="bias")

        tile = pe.apply(variables, method="tile_bias")
        contextual = pe.contextual_logits(q.shape[-1])
        if contextual is not None:  # CoPE: its per-layer table, drawn N(0, 1) here
            contextual = contextual.with_params(
                tuple(jax.random.normal(jax.random.key(1), s.shape) for s in contextual.specs)
            )
        return attend(
            q,
            k,
            v,
            q_positions,
            k_positions,
            k_valid,
            bias_fn,
            tile_bias=tile,
            contextual=contextual,
        )

    return run


def attention_inputs(batch: int, length: int, concrete: bool):
    shapes = [(batch, length, HEADS, HEAD_DIM)] * 3
    if not concrete:
        spec = jax.ShapeDtypeStruct
        return (
            *(spec(s, jnp.float32) for s in shapes),
            spec((batch, length), jnp.int32),
            spec((batch, length), jnp.int32),
            spec((batch, length), jnp.bool_),
        )
    rng = np.random.default_rng(length)
    q, k, v = (jnp.asarray(rng.standard_normal(s) * 0.2, jnp.float32) for s in shapes)
    positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    valid = jnp.asarray(rng.random((batch, length)) > 0.1)  # some padding keys
    return q, k, v, positions, positions, valid


def _temp_mb(fn, *args) -> float:
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


def _decoder_temp_mb(kernel: str, pe_name: str, batch: int, length: int) -> float:
    model = Decoder(
        vocab_size=32,
        num_layers=2,
        d_model=768,
        num_heads=HEADS,
        d_kv=HEAD_DIM,
        d_ff=3072,
        dropout_rate=0.0,
        pe=_pe_config(pe_name),
        attention_impl=kernel,
    )
    tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    valid = jax.ShapeDtypeStruct((batch, length), jnp.bool_)
    params = jax.eval_shape(model.init, jax.random.key(0), tokens, tokens, valid)["params"]
    return _temp_mb(lambda p, t, v: model.apply({"params": p}, t, t, v), params, tokens, valid)


def _ratio_row(length: int, values: dict[str, float]) -> list[str]:
    base = values["reference"]
    return [str(length)] + [
        f"{values[k]:.1f}" + ("" if k == "reference" else f" ({values[k] / base:.3f}x)")
        for k in KERNELS
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pe", default="t5", choices=positional.names())
    parser.add_argument("--lengths", default="64,128,256,512,1024,2048")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    pe, variables = bias_setup(args.pe)

    op_rows, decoder_rows, agree_rows = [], [], []
    for length in lengths:
        spec_args = attention_inputs(args.batch, length, concrete=False)
        op = {k: _temp_mb(attention_fn(k, pe), variables, *spec_args) for k in KERNELS}
        op_rows.append(_ratio_row(length, op))
        dec = {k: _decoder_temp_mb(k, args.pe, args.batch, length) for k in KERNELS}
        decoder_rows.append(_ratio_row(length, dec))

        run_args = attention_inputs(2, length, concrete=True)
        outputs = {
            k: jax.jit(functools.partial(attention_fn(k, pe), variables))(*run_args)
            for k in KERNELS
            if k != "pallas_flash" or length <= PALLAS_RUN_MAX_LENGTH
        }
        agree_rows.append(
            [str(length)]
            + [
                f"{float(jnp.abs(outputs[k] - outputs['reference']).max()):.1e}"
                if k in outputs
                else "not run"
                for k in KERNELS[1:]
            ]
        )
        print(f"length {length}: op {op_rows[-1][1:]}, decoder {decoder_rows[-1][1:]}", flush=True)

    header = ["length"] + [f"{k} MiB" for k in KERNELS]
    body = "\n\n".join(
        [
            f"PE: {args.pe}; batch {args.batch}; float32. Temporary memory of the compiled program "
            "(`memory_analysis().temp_size_in_bytes`); in brackets, the ratio to the reference "
            "kernel at the same length. pallas_flash is in Pallas interpret mode (CPU): its number "
            "is the interpreter's, not a TPU's.",
            f"## Attention op alone ({HEADS} heads x {HEAD_DIM}, q_len = k_len = length)",
            record.table(header, op_rows),
            f"## Decoder forward pass (teacher forcing): 2 layers, d_model 768, {HEADS} heads",
            record.table(header, decoder_rows),
            "## Same results: max |kernel - reference| of the attention output (batch 2, ~10% "
            "padding keys)",
            record.table(["length"] + list(KERNELS[1:]), agree_rows),
        ]
    )
    record.write(f"attention_memory_{args.pe}", "Attention kernels: peak memory vs length", body)


if __name__ == "__main__":
    main()
