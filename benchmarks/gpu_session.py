r"""One GPU session's checks in one run: the kernels against the reference on the device, the
paper-size train step per PE, and the attention kernels' speed against cuDNN.

  PYTHONUNBUFFERED=1 python -m benchmarks.gpu_session --out=DIR --budget_s=400
  python -m benchmarks.gpu_session --out=DIR --quick        # tiny shapes: the script, on a CPU
  python -m benchmarks.gpu_session --render=A.jsonl,B.jsonl  # their tables, as Markdown

Each case appends one JSON line to DIR/gpu_session.jsonl as it finishes, and no case starts
after --budget_s, so a run cut short keeps what finished. The parts run in the order of need
(`--sections` picks some; the other flags narrow each):
1. `agreement`: each kernel's output and gradients (the PE's parameters, q, k and v) against
   `reference` on the same device at precision 'highest', float32 and bfloat16 inputs, for a
   prefill per `--paddings` ('random': some queries see no key; 'right': the loader's padding;
   'none') and a decode step (one query against a cache).
2. `train_step` for T5 and NoPE: the paper's model (12 x 768, 12 heads, d_ff 3072, dropout
   0.1, batch 64, copy_repeat's 48-token training rows, its vocabulary), kernel `auto`, at
   precision 'highest' (the paper's float32) and 'default' (TF32 matmuls): the median step
   time and the 40k-step run it implies.
3. `attention_speed`: the attention op alone at the paper's head sizes (12 x 64), batch 64,
   q_len = k_len = length, forward and forward + backward, per dtype x length x PE x kernel
   (bfloat16 first: cuDNN's dtype); whether the compiled program calls cuDNN; then
   pallas_flash's other (block_q, block_k) at the longest length.
4. `agreement` of a 2-layer decoder per PE: one train step on the GPU (kernels `auto` and
   `pallas_flash`) against the CPU of this process (the logits, loss and gradient norm).
5. `train_step` for the other PEs.
Times are the median of `--repeats` samples of `--inner` back-to-back calls after a warm-up
call, read with `jax.block_until_ready` (wall clock; the device is otherwise idle).
"""

import argparse
import functools
import json
import os
import pathlib
import statistics
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import attention_memory, record, train_throughput
from lenggen import config_args, config_schema, sharding, tasks
from lenggen.data import tokenizer as tokenizer_lib
from lenggen.model import attention

REPO = pathlib.Path(__file__).resolve().parent.parent
AGREEMENT_PES = ("nope", "t5", "alibi", "fire", "cope", "kerple")
STEP_PES = ("t5", "nope", "alibi", "rotary", "ape")
SPEED_PES = ("t5", "alibi", "nope")
KERNELS = ("pallas_flash", "dot_product", "blockwise")
SPEED_KERNELS = ("reference", "dot_product", "pallas_flash")
PALLAS_BLOCKS = ((16, 32), (32, 32), (32, 64), (64, 64))
PAPER_STEPS = 40_000
# copy_repeat's longest training row is 43 tokens (benchmarks/aot_matrix.py), padded to 48.
TRAIN_LENGTH = 48


class Session:
    """Where results go, and the clock every case checks before it starts."""

    def __init__(self, out: pathlib.Path, budget_s: float):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "gpu_session.jsonl"
        self.deadline = time.monotonic() + budget_s

    def open(self) -> bool:
        return time.monotonic() < self.deadline

    def write(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def _rel(a, b) -> float:
    """||a - b|| / ||b|| in float64 (0 where both are zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norm = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / norm) if norm else float(np.linalg.norm(a))


def _flat(tree) -> np.ndarray:
    """Every leaf of `tree` in one float64 vector (empty for a PE without parameters)."""
    leaves = [np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)]
    return np.concatenate(leaves) if leaves else np.zeros(0)


def _median_ms(fn, args, repeats: int, inner: int) -> tuple[float, float]:
    """(median, spread = max - min) milliseconds per call of the jitted `fn(*args)`."""
    jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn(*args)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - start) / inner * 1e3)
    return statistics.median(samples), max(samples) - min(samples)


# --- 1. agreement -----------------------------------------------------------------------------


def _attention_case(batch: int, q_len: int, k_len: int, seed: int, padding: str = "random"):
    """float32 q `[batch, q_len, 12, 64]`, k, v `[batch, k_len, 12, 64]`, the queries the last
    q_len positions of the keys'; a cotangent like q. `padding`: 'random' (a tenth of the keys,
    anywhere: some queries see no key), 'right' (each example's last 0-20% of keys, as the
    loader pads) or 'none'."""
    rng = np.random.default_rng(seed)
    heads, dim = attention_memory.HEADS, attention_memory.HEAD_DIM
    q = rng.standard_normal((batch, q_len, heads, dim)) * 0.3
    k, v = (rng.standard_normal((batch, k_len, heads, dim)) * 0.3 for _ in range(2))
    k_positions = np.broadcast_to(np.arange(k_len, dtype=np.int32), (batch, k_len))
    q_positions = k_positions[:, k_len - q_len :]
    if padding == "random":
        valid = rng.random((batch, k_len)) > 0.1
    elif padding == "right":
        real = k_len - rng.integers(0, k_len // 5 + 1, (batch, 1))
        valid = k_positions < real
    else:
        valid = np.ones((batch, k_len), bool)
    cotangent = rng.standard_normal(q.shape)
    as_f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return (as_f32(q), as_f32(k), as_f32(v)), (q_positions, k_positions, valid), as_f32(cotangent)


def _output_and_grads(kernel: str, pe, platform: str):
    """jitted `(variables, q, k, v, positions..., cotangent) -> (out, grads)`; grads of
    sum(out * cotangent) with respect to the PE's variables, q, k and v."""
    run = attention_memory.attention_fn(kernel, pe, platform)

    def fn(variables, q, k, v, q_pos, k_pos, valid, cotangent):
        def loss(variables, q, k, v):
            out = run(variables, q, k, v, q_pos, k_pos, valid)
            return jnp.sum(out.astype(jnp.float32) * cotangent), out

        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(
            variables, q, k, v
        )
        return out, grads

    return jax.jit(fn)


def agreement_kernels(session: Session, quick: bool, pes, paddings, kernels) -> None:
    platform = jax.default_backend()
    batch, length = (2, 40) if quick else (4, 200)
    # (name, q_len, padding): prefills with each padding, and one decode step.
    shapes = [(f"prefill/{padding}", length, padding) for padding in paddings]
    shapes.append(("decode", 1, "random"))
    for pe_name in pes:
        pe, variables = attention_memory.bias_setup(pe_name)
        variables = jax.tree.map(
            lambda x: x + 0.1 * jax.random.normal(jax.random.key(2), x.shape, x.dtype), variables
        )  # off the init, so no parameter is exactly zero
        for case, q_len, padding in shapes:
            (q, k, v), (q_pos, k_pos, valid), cot = _attention_case(
                batch, q_len, length, 0, padding
            )
            for dtype in (jnp.float32, jnp.bfloat16):
                args = [x.astype(dtype) for x in (q, k, v)]
                # The reference sees the same (rounded) inputs, in float32.
                with jax.default_matmul_precision("highest"):
                    want_out, want_grads = _output_and_grads("reference", pe, platform)(
                        variables, *(x.astype(jnp.float32) for x in args), q_pos, k_pos, valid, cot
                    )
                for kernel in kernels:
                    if not session.open():
                        return
                    row = dict(
                        section="agreement",
                        pe=pe_name,
                        case=case,
                        dtype=jnp.dtype(dtype).name,
                        kernel=kernel,
                        shape=[batch, q_len, length],
                    )
                    try:
                        with jax.default_matmul_precision("highest"):
                            out, grads = _output_and_grads(kernel, pe, platform)(
                                variables, *args, q_pos, k_pos, valid, cot
                            )
                        # Per argument (the PE's parameters as one vector, q, k, v): a leaf
                        # whose gradient is zero in exact arithmetic (a per-head constant bias
                        # under softmax) would make a per-leaf ratio of rounding noise.
                        grad_errors = [
                            _rel(_flat(g), _flat(w)) for g, w in zip(grads, want_grads, strict=True)
                        ]
                        row.update(
                            out_rel=_rel(out, want_out),
                            grad_rel_max=max(grad_errors),
                            grad_rel=dict(zip(("pe", "q", "k", "v"), grad_errors, strict=True)),
                            finite=bool(np.isfinite(np.asarray(out, np.float32)).all()),
                        )
                    except Exception as error:  # a kernel that fails to build is a result too
                        row.update(error=f"{type(error).__name__}: {str(error)[:300]}")
                    session.write(row)


def _decoder_config(pe: str, size: dict, precision: str, kernel: str, dropout: float):
    config = config_args.load_file(str(REPO / "configs" / "base.py"), "lenggen_gpu_base")
    config = config.get_config(f"task=copy_repeat,pe={pe}")
    config.model.update(
        precision=precision,
        attention_impl=kernel,
        dropout_rate=dropout,
        pe=config_schema.pe_section(pe),
        **size,
    )
    return config


def _train_setup(config, vocab_size: int, batch_size: int, length: int, device):
    """(jitted step, state, batch on `device`, dropout key, model) of `config` on one device."""
    mesh = sharding.make_mesh((1, 1), [device])
    model, step, state, key = train_throughput.build_train_step(config, vocab_size, length, mesh)
    batch = train_throughput.synthetic_batch(batch_size, length, vocab_size)
    return step, state, jax.device_put(batch, sharding.batch_sharding(mesh)), key, model


def agreement_decoder(session: Session, quick: bool, vocab_size: int) -> None:
    """One train step of a 2-layer decoder on the accelerator and on the CPU, same inputs."""
    size = dict(num_layers=2, d_model=128, num_heads=4, d_kv=32, d_ff=512)
    batch_size, length = (4, 24) if quick else (16, 48)
    cpu = jax.devices("cpu")[0]
    for pe in STEP_PES + ("fire", "kerple", "cope"):
        if not session.open():
            return
        results = {}
        for name, device, kernel in (
            ("cpu", cpu, "reference"),
            ("auto", jax.devices()[0], "auto"),
            ("pallas_flash", jax.devices()[0], "pallas_flash"),
        ):
            config = _decoder_config(pe, size, "highest", kernel, 0.0)
            step, state, batch, key, model = _train_setup(
                config, vocab_size, batch_size, length, device
            )
            logits = jax.jit(model.apply)(
                {"params": state["params"]}, batch["tokens"], batch["positions"], batch["valid"]
            )
            _, metrics = step(state, batch, key)
            results[name] = (
                np.asarray(logits),
                float(metrics["loss"]),
                float(metrics["grad_norm"]),
            )
        want_logits, want_loss, want_norm = results.pop("cpu")
        for name, (logits, loss, norm) in results.items():
            session.write(
                dict(
                    section="agreement_decoder",
                    pe=pe,
                    kernel=name,
                    logits_rel=_rel(logits, want_logits),
                    loss_rel=abs(loss - want_loss) / abs(want_loss),
                    grad_norm_rel=abs(norm - want_norm) / abs(want_norm),
                    loss=loss,
                    cpu_loss=want_loss,
                )
            )


# --- 2. the paper-size train step -------------------------------------------------------------


def train_steps(
    session: Session, quick: bool, vocab_size: int, repeats: int, inner: int, pes: tuple
) -> None:
    size = {} if not quick else dict(num_layers=2, d_model=64, num_heads=4, d_kv=16, d_ff=128)
    batch_size = 4 if quick else 64
    for precision in ("highest", "default"):
        for pe in pes:
            if not session.open():
                return
            config = _decoder_config(pe, size, precision, "auto", 0.1)
            start = time.perf_counter()
            step, state, batch, key, _ = _train_setup(
                config, vocab_size, batch_size, TRAIN_LENGTH, jax.devices()[0]
            )
            state, metrics = step(state, batch, key)
            jax.block_until_ready(metrics)
            compile_s = time.perf_counter() - start
            _, metrics, windows = train_throughput.time_steps(
                step, state, batch, key, inner, repeats
            )
            samples = [seconds * 1e3 for seconds in windows]
            ms = statistics.median(samples)
            session.write(
                dict(
                    section="train_step",
                    pe=pe,
                    precision=precision,
                    kernel=attention.auto.choose(jax.default_backend(), TRAIN_LENGTH),
                    batch=batch_size,
                    length=TRAIN_LENGTH,
                    layers=config.model.num_layers,
                    d_model=config.model.d_model,
                    step_ms=ms,
                    spread_ms=max(samples) - min(samples),
                    setup_and_first_step_s=compile_s,
                    run_hours_40k=ms * PAPER_STEPS / 3.6e6,
                    final_loss=float(metrics["loss"]),
                )
            )


# --- 3. attention speed -----------------------------------------------------------------------


def _speed_fn(kernel: str, pe, platform: str, backward: bool, **kernel_options):
    run = attention_memory.attention_fn(kernel, pe, platform, **kernel_options)
    if not backward:
        return jax.jit(run)

    def grads(variables, q, k, v, q_pos, k_pos, valid):
        def loss(q, k, v):
            return jnp.sum(run(variables, q, k, v, q_pos, k_pos, valid).astype(jnp.float32))

        return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

    return jax.jit(grads)


def _calls_cudnn(fn, args) -> bool:
    return "cudnn" in fn.lower(*args).compile().as_text().lower()


def attention_speed(
    session: Session, quick: bool, repeats: int, inner: int, pes, lengths, dtypes
) -> None:
    platform = jax.default_backend()
    batch, lengths = (2, (64, 32)) if quick else (64, lengths)
    cases = [
        (dtype, length, pe_name, backward, kernel, {})
        for dtype in dtypes
        for length in lengths
        for pe_name in pes
        for backward in (False, True)
        for kernel in SPEED_KERNELS
    ]
    # pallas_flash's tile sizes, at the longest length, last: the least needed.
    cases += [
        (jnp.bfloat16, lengths[0], pe_name, False, "pallas_flash", dict(block_q=bq, block_k=bk))
        for pe_name in pes[:2]
        for bq, bk in PALLAS_BLOCKS[1:]
        if jnp.bfloat16 in dtypes
    ]
    inputs = {}
    for dtype, length, pe_name, backward, kernel, kernel_options in cases:
        if not session.open():
            return
        if (dtype, length) not in inputs:
            inputs.clear()  # one input set on the device at a time
            (q, k, v), positions, _ = _attention_case(batch, length, length, length)
            inputs[dtype, length] = ([x.astype(dtype) for x in (q, k, v)], positions)
        qkv, positions = inputs[dtype, length]
        pe, variables = attention_memory.bias_setup(pe_name)
        args = (variables, *qkv, *positions)
        row = dict(
            section="attention_speed",
            pe=pe_name,
            dtype=jnp.dtype(dtype).name,
            length=length,
            batch=batch,
            pass_="forward+backward" if backward else "forward",
            kernel=kernel,
            options=kernel_options,
        )
        try:
            fn = _speed_fn(kernel, pe, platform, backward, **kernel_options)
            ms, spread = _median_ms(fn, args, repeats, inner)
            row.update(ms=ms, spread_ms=spread, cudnn=_calls_cudnn(fn, args))
        except Exception as error:
            row.update(error=f"{type(error).__name__}: {str(error)[:300]}")
        session.write(row)


# --- rendering --------------------------------------------------------------------------------


def _table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """A '### title' and its table, or nothing when no row was measured."""
    return ["", f"### {title}", "", record.table(header, rows)] if rows else []


def render(path: pathlib.Path, number: int) -> str:
    """One session's JSON lines as Markdown: its machine, command and a table per section."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    env = next((r for r in rows if r.get("section") == "environment"), {})

    def by(name):
        return [r for r in rows if r.get("section") == name]

    lines = [
        f"## Session {number}",
        "",
        f"- Machine: {env.get('device', '?')}",
        f"- Command: `{env.get('command', '?')}`",
        f"- Date: {env.get('date', '?')}",
    ]
    agreement = []
    for r in by("agreement"):
        if "error" in r:
            agreement.append([r["pe"], r["case"], r["dtype"], r["kernel"], r["error"][:90], ""])
            continue
        grads = ", ".join(f"{name} {value:.1e}" for name, value in r["grad_rel"].items())
        agreement.append(
            [r["pe"], r["case"], r["dtype"], r["kernel"], f"{r['out_rel']:.1e}", grads]
        )
    lines += _table(
        "Kernels against `reference` on the same device (relative L2 error; precision 'highest')",
        ["PE", "case", "dtype", "kernel", "output", "gradients (PE params, q, k, v)"],
        agreement,
    )
    lines += _table(
        "A 2-layer decoder's train step on the GPU against the CPU (relative differences)",
        ["PE", "GPU kernel", "logits", "loss", "gradient norm"],
        [
            [
                r["pe"],
                r["kernel"],
                *(f"{r[key]:.1e}" for key in ("logits_rel", "loss_rel", "grad_norm_rel")),
            ]
            for r in by("agreement_decoder")
        ],
    )
    steps = by("train_step")
    nope = {r["precision"]: r["step_ms"] for r in steps if r["pe"] == "nope"}
    lines += _table(
        "The paper's train step (12 x 768, batch 64 x 48 tokens, dropout 0.1)",
        [
            "precision",
            "PE",
            "kernel",
            "ms/step (spread)",
            "vs NoPE",
            "compile + first step, s",
            "40k steps, hours",
        ],
        [
            [
                r["precision"],
                r["pe"],
                r["kernel"],
                f"{r['step_ms']:.2f} ({r['spread_ms']:.2f})",
                f"{r['step_ms'] / nope[r['precision']]:.2f}x" if r["precision"] in nope else "",
                f"{r['setup_and_first_step_s']:.0f}",
                f"{r['run_hours_40k']:.2f}",
            ]
            for r in steps
        ],
    )
    speed = by("attention_speed")
    reference_ms = {
        (r["dtype"], r["pass_"], r["pe"], r["length"]): r["ms"]
        for r in speed
        if r["kernel"] == "reference" and "ms" in r
    }
    speed_rows = []
    for r in speed:
        key = (r["dtype"], r["pass_"], r["pe"], r["length"])
        cells = [*map(str, key), r["kernel"], json.dumps(r["options"]) if r["options"] else ""]
        if "ms" not in r:
            speed_rows.append([*cells, r["error"][:90], "", ""])
            continue
        ratio = f"{r['ms'] / reference_ms[key]:.2f}x" if key in reference_ms else ""
        speed_rows.append([*cells, f"{r['ms']:.2f}", ratio, "yes" if r["cudnn"] else "no"])
    lines += _table(
        "Attention op alone (12 heads x 64), ms per call, and the ratio to `reference` in the "
        "same run",
        ["dtype", "pass", "PE", "length", "kernel", "options", "ms", "vs reference", "cuDNN call"],
        speed_rows,
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/gpu_session")
    parser.add_argument("--budget_s", type=float, default=400.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sections", default="agreement,train_step,attention_speed")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inner", type=int, default=10)
    parser.add_argument(
        "--render", default=None, help="','-joined gpu_session.jsonl files -> Markdown on stdout"
    )
    parser.add_argument("--agreement_pes", default=",".join(AGREEMENT_PES))
    parser.add_argument("--agreement_kernels", default=",".join(KERNELS))
    parser.add_argument("--paddings", default="random", help="random,right,none")
    parser.add_argument("--step_pes", default=",".join(STEP_PES))
    parser.add_argument("--speed_pes", default=",".join(SPEED_PES))
    parser.add_argument("--speed_lengths", default="2048,512,128")
    parser.add_argument("--speed_dtypes", default="bfloat16,float32")
    args = parser.parse_args()
    if args.render:
        paths = [pathlib.Path(path) for path in args.render.split(",")]
        print("\n".join(render(path, n) for n, path in enumerate(paths, 1)))
        return
    session = Session(pathlib.Path(args.out), args.budget_s)
    session.write(
        dict(
            section="environment",
            device=record.machine(),
            device_kind=jax.devices()[0].device_kind,
            jax=jax.__version__,
            backend=jax.default_backend(),
            command="python -m benchmarks.gpu_session " + " ".join(sys.argv[1:]),
            date=time.strftime("%Y-%m-%d"),
        )
    )
    vocab_size = tokenizer_lib.Tokenizer.from_task(tasks.get("copy_repeat")).vocab_size
    repeats, inner = (2, 2) if args.quick else (args.repeats, args.inner)
    step = functools.partial(train_steps, session, args.quick, vocab_size, repeats, inner)
    step_pes = tuple(args.step_pes.split(","))
    speed = functools.partial(
        attention_speed,
        session,
        args.quick,
        repeats,
        inner,
        tuple(args.speed_pes.split(",")),
        tuple(int(n) for n in args.speed_lengths.split(",")),
        tuple(jnp.dtype(name) for name in args.speed_dtypes.split(",")),
    )
    agreement = functools.partial(
        agreement_kernels,
        session,
        args.quick,
        tuple(args.agreement_pes.split(",")),
        tuple(args.paddings.split(",")),
        tuple(args.agreement_kernels.split(",")),
    )
    # (section, part) in the order of need: the deadline cuts the tail.
    parts = [
        ("agreement", agreement),
        ("train_step", functools.partial(step, step_pes[:2])),
        ("attention_speed", speed),
        ("agreement", functools.partial(agreement_decoder, session, args.quick, vocab_size)),
        ("train_step", functools.partial(step, step_pes[2:])),
    ]
    sections = args.sections.split(",")
    unknown = sorted(set(sections) - {name for name, _ in parts})
    if unknown:
        sys.exit(
            f"--sections: unknown {unknown}; expected some of agreement,train_step,attention_speed"
        )
    for name, part in parts:
        if name not in sections:
            continue
        try:
            part()
        except Exception:  # one broken part must not cost the others their device time
            traceback.print_exc()
            session.write(dict(section="error", part=name, error=traceback.format_exc()[-1500:]))
    print(render(session.path, 1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
