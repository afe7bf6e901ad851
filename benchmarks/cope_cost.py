"""CoPE's cost: forward time of each attention kernel with CoPE against NoPE, in one process.

The attention op alone (`attention_memory`'s heads and head size), q_len = k_len = length;
the best of `--repeats` timed calls after one compiling call; the ratio is CoPE's time over
NoPE's with the same kernel and length, measured in the same run. pallas_flash is left out on
a CPU (interpret mode times the interpreter, not a kernel).

  python -m benchmarks.cope_cost --lengths=128,512 --batch=4
"""

import argparse
import functools

import jax

from benchmarks import attention_memory, attention_speed, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="128,512")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    kernels = ["reference", "blockwise", "dot_product"]
    if jax.default_backend() != "cpu":
        kernels.append("pallas_flash")
    setups = {pe: attention_memory.bias_setup(pe) for pe in ("nope", "cope")}

    rows = []
    for length in (int(n) for n in args.lengths.split(",")):
        inputs = attention_memory.attention_inputs(args.batch, length, concrete=True)
        for kernel in kernels:
            seconds = {}
            for pe_name, (pe, variables) in setups.items():
                fn = jax.jit(
                    functools.partial(attention_memory.attention_fn(kernel, pe), variables)
                )
                seconds[pe_name] = attention_speed._best_seconds(fn, inputs, args.repeats)
            ratio = seconds["cope"] / seconds["nope"]
            rows.append(
                [
                    str(length),
                    kernel,
                    f"{seconds['nope'] * 1e3:.1f}",
                    f"{seconds['cope'] * 1e3:.1f}",
                    f"{ratio:.2f}x",
                ]
            )
            print(rows[-1], flush=True)

    body = "\n\n".join(
        [
            f"Batch {args.batch}; float32; {attention_memory.HEADS} heads x "
            f"{attention_memory.HEAD_DIM}; q_len = k_len = length; CoPE with its default p_max. "
            f"Milliseconds per forward call (best of {args.repeats}); the ratio is CoPE over "
            "NoPE, same kernel, same run.",
            record.table(["length", "kernel", "nope ms", "cope ms", "cope / nope"], rows),
        ]
    )
    record.write("cope_cost", "CoPE: attention forward time against NoPE", body)


if __name__ == "__main__":
    main()
