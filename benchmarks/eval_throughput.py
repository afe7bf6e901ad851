r"""Evaluation throughput: teacher-forced exact match vs KV-cache greedy vs full-recompute greedy.

For each test length L, a batch of sequences of L tokens whose first half is the prompt and
second half the target (the copy tasks' shape), scored three ways:
  * teacher_forced: `evaluate.steps.teacher_forced_correct`, one parallel forward pass over L tokens
    (the verdict greedy decoding would reach; docs/paper.md "Evaluation");
  * kv_cache: `decoding.greedy_decode`, a prefill of L/2 tokens then L/2 one-token steps;
  * full_recompute: `decoding.full_recompute_greedy_decode`, L/2 forward passes over L tokens.
Decoding never stops early (the EOS id is one the model cannot emit), so every method does its
whole work. Each method is compiled ahead of time (`.lower().compile()`) and timed over
`--repeats` calls; the table shows the best time and the ratios between methods of the same run.
The model is a small decoder (flags below): the paper's base model does not fit the CPU's time.

  python -m benchmarks.eval_throughput --methods=teacher_forced,kv_cache --batch=64 \
      --lengths=64,128,256,512,1024
  python -m benchmarks.eval_throughput --methods=teacher_forced,kv_cache --batch=16 \
      --lengths=1024,2048 --repeats=1
  python -m benchmarks.eval_throughput --methods=teacher_forced,kv_cache,full_recompute \
      --batch=8 --lengths=64,128,256,512 --repeats=1
Batch 64 stops at 1024 and full recompute at batch 8 and 512 tokens to keep each run under
3 minutes on a 2-core CPU.
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks import record
from lenggen.evaluate import steps as eval_steps
from lenggen.model import decoding, positional
from lenggen.model.decoder import Decoder

METHODS = ("teacher_forced", "kv_cache", "full_recompute")
VOCAB = 32


def _model(flags) -> Decoder:
    pe = ml_collections.ConfigDict(
        {"name": flags.pe, flags.pe: positional.default_options(flags.pe)}
    )
    return Decoder(
        vocab_size=VOCAB,
        num_layers=flags.num_layers,
        d_model=flags.d_model,
        num_heads=flags.num_heads,
        d_kv=flags.d_model // flags.num_heads,
        d_ff=4 * flags.d_model,
        dropout_rate=0.0,
        pe=pe,
        attention_impl=flags.attention_impl,
    )


def _compiled_methods(model: Decoder, params, batch: int, length: int, methods) -> dict:
    """Method name -> a zero-argument callable running the compiled program on fixed inputs."""
    rng = np.random.default_rng(length)
    tokens = jnp.asarray(rng.integers(0, VOCAB, (batch, length)), jnp.int32)
    prompt_len = length // 2
    eval_batch = dict(
        tokens=tokens,
        positions=jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length)),
        valid=jnp.ones((batch, length), bool),
        loss_mask=jnp.broadcast_to(jnp.arange(length) >= prompt_len, (batch, length)),
    )
    prompt, prompt_valid = tokens[:, :prompt_len], jnp.ones((batch, prompt_len), bool)
    never = jnp.int32(VOCAB)  # an EOS id the model cannot emit: no early stop
    new_tokens = length - prompt_len
    runs = {}
    if "teacher_forced" in methods:
        fn = jax.jit(functools.partial(eval_steps.teacher_forced_correct, model=model))
        compiled = fn.lower(params, eval_batch).compile()
        runs["teacher_forced"] = lambda: compiled(params, eval_batch)
    for name, decode in (
        ("kv_cache", decoding.greedy_decode),
        ("full_recompute", decoding.full_recompute_greedy_decode),
    ):
        if name in methods:
            compiled_decode = decode.lower(
                model, params, prompt, prompt_valid, new_tokens, never
            ).compile()
            runs[name] = functools.partial(compiled_decode, params, prompt, prompt_valid, never)
    return runs


def _best_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="teacher_forced,kv_cache,full_recompute")
    parser.add_argument("--lengths", default="64,128,256,512,1024,2048")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pe", default="t5", choices=positional.names())
    parser.add_argument("--attention_impl", default="auto")
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--d_model", type=int, default=128)
    parser.add_argument("--num_heads", type=int, default=4)
    flags = parser.parse_args()
    methods = flags.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {METHODS}")
    model = _model(flags)
    tokens = jnp.zeros((1, 1), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(0), tokens, tokens, tokens >= 0)["params"]

    lengths = [int(n) for n in flags.lengths.split(",")]
    rows = []
    for length in lengths:
        runs = _compiled_methods(model, params, flags.batch, length, methods)
        seconds = {name: _best_seconds(run, flags.repeats) for name, run in runs.items()}
        ratios = [
            f"{seconds[slow] / seconds[fast]:.1f}x"
            for fast, slow in zip(methods, methods[1:], strict=False)
        ]
        rows.append([str(length), *(f"{seconds[m] * 1e3:.0f}" for m in methods), *ratios])
        print(rows[-1], flush=True)

    ratio_names = [f"{slow} / {fast}" for fast, slow in zip(methods, methods[1:], strict=False)]
    body = "\n\n".join(
        [
            f"Model: {flags.num_layers} layers, d_model {flags.d_model}, {flags.num_heads} heads, "
            f"d_ff {4 * flags.d_model}, PE {flags.pe}, attention_impl={flags.attention_impl}, "
            f"float32. Batch {flags.batch}; a length-L sequence is an L/2 prompt and L/2 target "
            f"tokens. Milliseconds per batch (best of {flags.repeats}, compile excluded); the "
            "ratios are between methods measured in the same run.",
            record.table(["length", *(f"{m} ms" for m in methods), *ratio_names], rows),
        ]
    )
    name = "_vs_".join(methods) + f"_batch{flags.batch}_len{lengths[0]}-{lengths[-1]}"
    record.write(f"eval_throughput_{name}", "Evaluation throughput vs length", body)


if __name__ == "__main__":
    main()
