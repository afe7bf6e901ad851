"""Forward time of each attention kernel as the length grows (the basis of `auto`'s choice).

The attention op alone at the paper's head sizes (12 heads x 64), q_len = k_len = length, with
a PE's bias hook (its parameters traced, as in the model); the best of `--repeats` timed calls
after one compiling call. pallas_flash is left out on a CPU: interpret mode times the
interpreter, not a kernel.

  python -m benchmarks.attention_speed --pe=t5 --batch=8
"""

import argparse
import functools
import time

import jax

from benchmarks import attention_memory, record
from lenggen.model import positional


def _best_seconds(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pe", default="t5", choices=positional.names())
    parser.add_argument("--lengths", default="64,128,256,512,1024,2048")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    kernels = ["reference", "blockwise", "dot_product"]
    if jax.default_backend() != "cpu":
        kernels.append("pallas_flash")
    pe, variables = attention_memory.bias_setup(args.pe)

    rows = []
    for length in (int(n) for n in args.lengths.split(",")):
        inputs = attention_memory.attention_inputs(args.batch, length, concrete=True)
        seconds = {
            kernel: _best_seconds(
                jax.jit(functools.partial(attention_memory.attention_fn(kernel, pe), variables)),
                inputs,
                args.repeats,
            )
            for kernel in kernels
        }
        base = seconds["reference"]
        cells = [f"{seconds[k] * 1e3:.1f} ({seconds[k] / base:.2f}x)" for k in kernels[1:]]
        rows.append([str(length), f"{base * 1e3:.1f}", *cells])
        print(rows[-1], flush=True)

    body = "\n\n".join(
        [
            f"PE: {args.pe}; batch {args.batch}; float32; {attention_memory.HEADS} heads x "
            f"{attention_memory.HEAD_DIM}; q_len = k_len = length. Milliseconds per forward call "
            f"(best of {args.repeats}); in brackets, the time relative to the reference kernel "
            "measured in the same run.",
            record.table(["length"] + [f"{k} ms" for k in kernels], rows),
        ]
    )
    record.write(f"attention_speed_{args.pe}", "Attention kernels: forward time vs length", body)


if __name__ == "__main__":
    main()
