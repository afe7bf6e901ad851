r"""Training throughput and model FLOP utilisation: lenggen's train step vs the same in PyTorch.

In one run: (a) this machine's float32 matmul peak (best n x n `jnp.dot` or `torch.mm`);
(b) lenggen's own jitted train step (`train.state.jit_train_step`, as `lenggen.main` builds it from
configs/quickstart.py, with the model resized) for each size and PE; (c) the same model, batch,
initial parameters and AdamW in PyTorch (benchmarks/torch_decoder.py), eager and, if it works,
torch.compile'd, in a worker subprocess of a Python that has torch; each case's JAX and PyTorch
runs are back to back. Before timing, each case checks that PyTorch's logits and loss match
lenggen's from the same parameters, and that the parameters after `--check_steps` train steps
do too (so the optimizer, schedule and decay mask agree); a mismatch stops the run.

Model FLOPs of one train step (matmuls only; backward = 2x forward; PaLM's MFU convention):
    N     = L (4 d H K + 2 d F) + V d      q, k, v, o and FFN in/out, plus the tied output
                                           layer (the embedding lookup is a gather)
    flops = 6 N B T + 12 L B T^2 H K       attention QK^T and AV over the whole T x T square
                                           (what the kernels compute; the mask skips nothing)
L layers, d d_model, H heads, K d_kv, F d_ff, V vocabulary, B batch, T tokens per sequence.
MFU = flops / step time / measured matmul peak (the best of jnp.dot and torch.mm). The roofline
column times the step's matmuls alone (its GEMM shapes, forward and backward, in JAX): what a
step could reach if everything but its matmuls were free.

  benchmarks/torch_env.sh   # once: a Python 3.11 venv with a CPU torch
  python -m benchmarks.train_throughput --steps=10 --repeats=3
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m benchmarks.train_throughput
  python -m benchmarks.train_throughput --torch_modes=none --pes=nope   # JAX only
  python -m benchmarks.train_throughput --batches=1,64   # + the fixed-cost bound
XLA_FLAGS is read when JAX starts, so each XLA configuration is its own run; the results file
records it. The results in benchmarks/results/ used XLA's oneDNN matmuls (README there).
"""

import argparse
import collections
import functools
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks import record, torch_decoder
from lenggen import config_args, config_schema, sharding
from lenggen.data import loader
from lenggen.model.decoder import Decoder
from lenggen.train import optimizer as optimizer_lib
from lenggen.train import state as state_lib
from lenggen.train import step as step_lib

HERE = pathlib.Path(__file__).parent
WORKER = HERE / "torch_decoder.py"
TORCH_VENV_PYTHON = HERE / ".torch-venv" / "bin" / "python"
PROTOCOL = 1
# The PEs the PyTorch port implements (the paper's five).
PE_NAMES = torch_decoder.PE_NAMES
REPO = HERE.parent
SIZES = {
    "quickstart": config_args.load_file(
        str(REPO / "configs" / "quickstart.py"), "lenggen_configs_quickstart"
    ).MODEL,
    "4x256": dict(num_layers=4, d_model=256, num_heads=4, d_kv=64, d_ff=1024),
}
TRAIN_FIELDS = (
    "learning_rate",
    "end_learning_rate",
    "warmup_fraction",
    "num_steps",
    "weight_decay",
    "adam_b1",
    "adam_b2",
    "adam_eps",
    "grad_clip_norm",
)


class TorchWorkerError(ValueError):
    """The PyTorch worker is missing, broke the protocol, or failed a request."""


class MismatchError(ValueError):
    """PyTorch and lenggen disagree: the throughput ratio would compare different models."""


def matmul_params(model: dict, vocab_size: int) -> int:
    """N: weights that enter a matmul per token (module docstring)."""
    d, width = model["d_model"], model["num_heads"] * model["d_kv"]
    return model["num_layers"] * (4 * d * width + 2 * d * model["d_ff"]) + vocab_size * d


def train_flops(model: dict, vocab_size: int, batch: int, length: int) -> int:
    """Model FLOPs of one train step: 6 N B T + 12 L B T^2 H K (module docstring)."""
    width = model["num_heads"] * model["d_kv"]
    attention = 12 * model["num_layers"] * batch * length**2 * width
    return 6 * matmul_params(model, vocab_size) * batch * length + attention


def train_gemms(model: dict, vocab_size: int, batch: int, length: int) -> list[tuple]:
    """(batch, m, k, n) of every matmul of one train step: each forward `[m, k] @ [k, n]` and
    its two backward products `[m, n] @ [n, k]` (input grad) and `[k, m] @ [m, n]` (weight)."""
    d, heads, d_kv, tokens = model["d_model"], model["num_heads"], model["d_kv"], batch * length
    width = heads * d_kv
    layer = [(1, tokens, d, width)] * 3 + [
        (1, tokens, width, d),
        (1, tokens, d, model["d_ff"]),
        (1, tokens, model["d_ff"], d),
        (batch * heads, length, d_kv, length),
        (batch * heads, length, length, d_kv),
    ]
    forward = layer * model["num_layers"] + [(1, tokens, d, vocab_size)]
    return [g for b, m, k, n in forward for g in ((b, m, k, n), (b, m, n, k), (b, k, m, n))]


def _best_seconds(fn, repeats: int) -> float:
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(sizes: list[int], repeats: int) -> dict[int, float]:
    """GFLOP/s of a float32 `jnp.dot` of two n x n matrices, best of `repeats`, per n."""
    result = {}
    for n in sizes:
        a, b = (jax.random.normal(jax.random.key(i), (n, n), jnp.float32) for i in (0, 1))
        result[n] = (
            2 * n**3 / _best_seconds(functools.partial(jax.jit(jnp.dot), a, b), repeats) / 1e9
        )
    return result


def roofline(gemms: list[tuple], repeats: int) -> float:
    """GFLOP/s of the matmuls alone (`train_gemms`): each shape timed on its own (best of
    `repeats`, operands in cache, as in a step where they were just computed), times summed."""
    seconds = 0.0
    for (b, m, k, n), count in collections.Counter(gemms).items():
        x, w = jnp.ones((b, m, k), jnp.float32), jnp.ones((b, k, n), jnp.float32)
        run = jax.jit(lambda x, w: jnp.einsum("bmk,bkn->bmn", x, w))
        seconds += count * _best_seconds(functools.partial(run, x, w), repeats)
    return sum(2 * b * m * k * n for b, m, k, n in gemms) / seconds / 1e9


def load_quickstart() -> ml_collections.ConfigDict:
    """configs/quickstart.py's config (training recipe, mesh) — the file `lenggen.main` reads."""
    path = HERE.parent / "configs" / "quickstart.py"
    return config_args.load_file(str(path), "lenggen_configs_quickstart").get_config()


def case_config(size: str, pe: str, dropout_rate: float) -> ml_collections.ConfigDict:
    """The quickstart config with the model resized to `size` and its PE set to `pe`."""
    config = load_quickstart()
    config.model.update(dropout_rate=dropout_rate, pe=config_schema.pe_section(pe), **SIZES[size])
    # The PyTorch twin (torch_decoder.decays) decays all but norm scales and biases.
    config.train.weight_decay_mask = "norms_and_biases"
    return config


def synthetic_batch(batch: int, length: int, vocab_size: int, seed: int = 0) -> dict:
    """Numpy batch as lenggen.data.loader makes: full rows, loss on the second half."""
    positions = np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length))
    return dict(
        tokens=np.random.default_rng(seed).integers(0, vocab_size, (batch, length), np.int32),
        positions=positions.copy(),
        valid=np.ones((batch, length), bool),
        loss_mask=positions >= length // 2,
    )


def flat(tree) -> dict[str, np.ndarray]:
    """A param tree as {"a/b/c": numpy array}."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {"/".join(str(k.key) for k in path): np.asarray(leaf) for path, leaf in leaves}


def build_train_step(config, vocab_size: int, length: int, mesh) -> tuple:
    """(model, jitted train step, fresh state, dropout key) of `config` on `mesh` for rows of
    `length` tokens, as lenggen.main builds them."""
    model = Decoder.from_config(config.model, vocab_size, platform=sharding.platform(mesh))
    optimizer = optimizer_lib.make_optimizer(config.train)
    schedule = optimizer_lib.learning_rate_schedule(config.train)
    layout = state_lib.layout(model, optimizer, mesh, length)
    state = state_lib.initial_state(model, optimizer, layout, length, jax.random.key(config.seed))
    step = state_lib.jit_train_step(model, optimizer, schedule, layout, mesh)
    return model, step, state, jax.random.fold_in(jax.random.key(config.seed), 1)


def time_steps(step, state: dict, batch: dict, dropout_key, steps: int, repeats: int) -> tuple:
    """(the state and metrics after the last step, the mean seconds per step of each of
    `repeats` windows of `steps` back-to-back steps); the step donates its state, so the state
    threads through."""
    windows, metrics = [], None
    for _ in range(repeats):
        jax.block_until_ready(state)
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, batch, dropout_key)
        jax.block_until_ready(state)
        windows.append((time.perf_counter() - start) / steps)
    return state, metrics, windows


def measure_jax(
    config, vocab_size: int, batch: dict, *, check_steps: int, warmup: int, steps: int, repeats: int
) -> dict:
    """Builds lenggen's jitted train step from `config` and times it.

    Returns a dict: `params` (initial, flat), `logits` `[batch, length, vocab]` and `loss` at
    them (deterministic forward), `checked` (flat params after `check_steps` steps),
    `step_seconds` (mean step time of each of `repeats` windows of `steps` steps, after the
    check steps and `warmup` more, all excluded) and `devices`.
    """
    mesh = sharding.make_mesh(config.mesh.shape)
    model, step, state, dropout_key = build_train_step(
        config, vocab_size, batch["tokens"].shape[1], mesh
    )
    device_batch = loader.to_global(batch, mesh)
    params = flat(state["params"])
    logits = jax.jit(model.apply)(
        {"params": state["params"]},
        device_batch["tokens"],
        device_batch["positions"],
        device_batch["valid"],
    )
    loss = float(jax.jit(step_lib.loss_and_metrics)(logits, device_batch)[0])
    for _ in range(check_steps):
        state, _ = step(state, device_batch, dropout_key)
    checked = flat(state["params"])
    for _ in range(warmup):
        state, _ = step(state, device_batch, dropout_key)
    *_, windows = time_steps(step, state, device_batch, dropout_key, steps, repeats)
    return dict(
        params=params,
        logits=np.asarray(logits),
        loss=loss,
        checked=checked,
        step_seconds=windows,
        devices=jax.device_count(),
    )


def update_difference(before: np.ndarray, jax_after: np.ndarray, torch_after: np.ndarray) -> float:
    """Relative L2 difference of two updates of one parameter, leaving out the worst 0.1% of
    its elements (at least one): Adam moves an element whose gradient is ~0 by ~lr whatever
    the gradient's sign, so float32 noise flips a few elements; a real difference (decay
    mask, schedule, clipping) moves all of them."""
    jax_update, torch_update = (jax_after - before).ravel(), (torch_after - before).ravel()
    errors = np.sort(np.abs(torch_update - jax_update))
    kept = errors[: errors.size - max(1, errors.size // 1000)] if errors.size > 1 else errors
    return float(np.linalg.norm(kept) / max(float(np.linalg.norm(jax_update)), 1e-30))


def check_agreement(
    jax_run: dict, torch_loss: float, torch_out: dict, name: str, atol: float, update_rtol: float
) -> dict:
    """Raises MismatchError unless PyTorch's logits and loss match lenggen's within `atol` and
    each parameter's update over the check steps within `update_rtol` (`update_difference`).

    Args:
      jax_run: `measure_jax`'s result (params, logits, loss, checked).
      torch_loss: PyTorch's loss at the initial parameters.
      torch_out: PyTorch's `logits` and `params/<name>` after the check steps.
    Returns:
      {"logit_diff": max |logit difference|, "update_diff": worst update difference}.
    """
    logit_diff = float(np.max(np.abs(torch_out["logits"] - jax_run["logits"])))
    loss_diff = abs(torch_loss - jax_run["loss"])
    if not logit_diff <= atol or not loss_diff <= atol:
        raise MismatchError(
            f"{name}: PyTorch and lenggen differ from the same parameters: "
            f"max |logit diff| {logit_diff:.3g}, |loss diff| {loss_diff:.3g}; "
            f"expected both <= {atol:g}"
        )
    if set(torch_out) - {"logits"} != {f"params/{key}" for key in jax_run["params"]}:
        raise MismatchError(
            f"{name}: PyTorch returned parameters {sorted(torch_out)}, "
            f"expected {sorted(jax_run['params'])}"
        )
    worst = 0.0
    for key, before in jax_run["params"].items():
        error = update_difference(before, jax_run["checked"][key], torch_out[f"params/{key}"])
        worst = max(worst, error)
        if not error <= update_rtol:
            raise MismatchError(
                f"{name}: parameter {key!r} moved differently in PyTorch and "
                f"lenggen over the check steps: relative L2 difference of the "
                f"updates {error:.3g}, expected <= {update_rtol:g}"
            )
    return dict(logit_diff=logit_diff, update_diff=worst)


def default_torch_python() -> str:
    """This interpreter when it has torch (`pip install -e .[bench]`), else the venv that
    benchmarks/torch_env.sh makes."""
    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    return str(TORCH_VENV_PYTHON)


def parse_reply(line: str, required: tuple[str, ...]) -> dict:
    """One JSON line of the worker, checked: an object with `required` keys and no "error"."""
    try:
        reply = json.loads(line)
    except json.JSONDecodeError as error:
        raise TorchWorkerError(
            f"PyTorch worker sent a line that is not JSON ({error}): {line[:200]!r}"
        ) from None
    if not isinstance(reply, dict):
        raise TorchWorkerError(f"PyTorch worker sent {type(reply).__name__}, expected an object")
    if "error" in reply:
        raise TorchWorkerError(f"PyTorch worker failed: {reply['error']}")
    missing = [key for key in required if key not in reply]
    if missing:
        raise TorchWorkerError(f"PyTorch worker reply lacks {missing}; got keys {sorted(reply)}")
    return reply


def step_seconds(timing: dict, mode: str) -> list[float] | None:
    """The per-window step times of one mode of a case reply; None if the mode failed."""
    if "error" in timing:
        return None
    windows = timing.get("step_seconds")
    if (
        not isinstance(windows, list)
        or not windows
        or not all(isinstance(s, (int, float)) and s > 0 for s in windows)
    ):
        raise TorchWorkerError(
            f"PyTorch {mode} timing must be a non-empty list of positive "
            f"step_seconds, got {windows!r}"
        )
    return windows


class TorchWorker:
    """The PyTorch half in a subprocess (`python benchmarks/torch_decoder.py`), JSON lines:
    a hello `{"protocol", "torch", "threads"}`, then one reply line per request line."""

    def __init__(self, python: str, script: str | pathlib.Path = WORKER):
        if not pathlib.Path(python).exists():
            raise TorchWorkerError(
                f"No Python for the PyTorch baseline at {python}. Run benchmarks/torch_env.sh "
                "(a Python 3.11 venv with a CPU torch at benchmarks/.torch-venv), install the "
                "[bench] extra, or pass --torch_python=PATH."
            )
        self.process = subprocess.Popen(
            [python, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.hello = parse_reply(self._readline(), ("protocol", "torch", "threads"))
        if self.hello["protocol"] != PROTOCOL:
            raise TorchWorkerError(
                f"PyTorch worker speaks protocol {self.hello['protocol']}, expected {PROTOCOL}"
            )

    def _readline(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise TorchWorkerError(
                f"PyTorch worker exited (code {self.process.poll()}) without "
                "replying; its stderr is above. Run benchmarks/torch_env.sh "
                "if torch is missing."
            )
        return line

    def request(self, message: dict, required: tuple[str, ...]) -> dict:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        return parse_reply(self._readline(), required)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def torch_case(
    worker: TorchWorker, config, size: str, vocab_size: int, jax_run: dict, batch: dict, flags
) -> tuple[dict, dict]:
    """Runs one case in the worker: its reply and its check output (logits, params)."""
    pe = config.model.pe.name
    model = dict(
        vocab_size=vocab_size,
        dropout_rate=config.model.dropout_rate,
        **SIZES[size],
        pe=dict(name=pe, **config.model.pe[pe].to_dict()),
    )
    with tempfile.TemporaryDirectory() as tmp:
        arrays, check_out = f"{tmp}/arrays.npz", f"{tmp}/check.npz"
        np.savez(
            arrays,
            **{f"params/{k}": v for k, v in jax_run["params"].items()},
            **{f"batch/{k}": v for k, v in batch.items()},
        )
        reply = worker.request(
            dict(
                kind="case",
                name=f"{size}/{pe}",
                model=model,
                arrays=arrays,
                check_out=check_out,
                train={field: config.train[field] for field in TRAIN_FIELDS},
                check_steps=flags.check_steps,
                modes=flags.torch_modes.split(","),
                warmup=flags.warmup,
                steps=flags.steps,
                repeats=flags.repeats,
                attention=flags.torch_attention,
            ),
            required=("name", "loss", "timings"),
        )
        with np.load(check_out) as out:
            return reply, dict(out)


def run_case(
    worker: TorchWorker | None, size: str, pe: str, batch_size: int, flags, peak: float, roof: float
) -> dict:
    """Measures one (size, PE, batch) in JAX then (unless `worker` is None) in PyTorch, after
    checking that both agree.

    Returns:
      {"row": the table row, "key": (size, pe), "batch": batch_size, "jax_s": best JAX step
      seconds, "torch": {mode: best PyTorch step seconds} of the modes that ran, "best_mode"
      (the fastest of them, None without PyTorch)}.
    """
    config = case_config(size, pe, flags.dropout_rate)
    batch = synthetic_batch(batch_size, flags.length, flags.vocab_size)
    jax_run = measure_jax(
        config,
        flags.vocab_size,
        batch,
        check_steps=flags.check_steps,
        warmup=flags.warmup,
        steps=flags.steps,
        repeats=flags.repeats,
    )
    jax_s = min(jax_run["step_seconds"])
    tokens = batch_size * flags.length
    gflops = train_flops(SIZES[size], flags.vocab_size, batch_size, flags.length) / 1e9
    jax_cells = [
        f"{jax_s * 1e3:.1f}",
        f"{tokens / jax_s:,.0f}",
        f"{gflops / jax_s:.1f}",
        f"{gflops / jax_s / peak:.0%}",
        f"{roof / peak:.0%}",
    ]
    case = dict(key=(size, pe), batch=batch_size, jax_s=jax_s, torch={}, best_mode=None)
    if worker is None:
        return dict(case, row=[size, pe, str(batch_size), *jax_cells])
    reply, torch_out = torch_case(worker, config, size, flags.vocab_size, jax_run, batch, flags)
    agreement = check_agreement(
        jax_run, reply["loss"], torch_out, f"{size}/{pe}", flags.atol, flags.update_rtol
    )
    modes = flags.torch_modes.split(",")
    torch_s = {mode: step_seconds(reply["timings"].get(mode, {}), mode) for mode in modes}
    for mode in modes:
        if torch_s[mode] is None:
            print(f"{size}/{pe}: torch {mode} failed: {reply['timings'][mode]['error']}")
    if not any(torch_s.values()):
        raise TorchWorkerError(f"{size}/{pe}: every PyTorch mode failed: {reply['timings']}")
    best_mode = min((m for m in modes if torch_s[m]), key=lambda m: min(torch_s[m]))
    torch_best = min(torch_s[best_mode])
    ran = {mode: min(times) for mode, times in torch_s.items() if times}
    return dict(
        case,
        torch=ran,
        best_mode=best_mode,
        row=[
            size,
            pe,
            str(batch_size),
            *jax_cells,
            *(f"{min(torch_s[m]) * 1e3:.1f}" if torch_s[m] else "failed" for m in modes),
            f"{tokens / torch_best:,.0f}",
            f"{gflops / torch_best:.1f}",
            f"{gflops / torch_best / peak:.0%}",
            f"**{torch_best / jax_s:.2f}x** ({best_mode})",
            f"{agreement['logit_diff']:.1e} / {agreement['update_diff']:.1e}",
        ],
    )


def fixed_cost_rows(cases: list[dict]) -> list[list[str]]:
    """What a zero-overhead step could gain, per (size, PE) run at batch 1 and a larger batch B.

    PyTorch's step at batch 1 bounds its fixed per-step cost (Python dispatch, kernel launches,
    the optimizer: anything that does not grow with the batch) from above. So at batch B at
    least t(B) - t(1) of its step is work that grows with the batch, and a step with no fixed
    cost at all, running the same kernels as fast as PyTorch, reaches at most
    t(B) / (t(B) - t(1)) times PyTorch's speed: the ceiling of "a jitted step wins on overhead".
    Both times are of PyTorch's fastest mode at B.
    """
    at_one = {c["key"]: c for c in cases if c["batch"] == 1}
    rows = []
    for case in cases:
        small, mode = at_one.get(case["key"]), case["best_mode"]
        if small is None or case["batch"] == 1 or mode not in small["torch"]:
            continue
        fixed, total = small["torch"][mode], case["torch"][mode]
        ceiling = f"{total / (total - fixed):.2f}x" if total > fixed else "unbounded"
        rows.append(
            [
                *case["key"],
                str(case["batch"]),
                mode,
                f"{fixed * 1e3:.1f}",
                f"{total * 1e3:.1f}",
                f"<= {fixed / total:.0%}",
                ceiling,
                f"{total / case['jax_s']:.2f}x",
            ]
        )
    return rows


def report(
    flags, cases: list[dict], peak: float, peaks: dict, torch_peaks: dict | None, hello: dict | None
) -> str:
    """The results file's body: setup, peaks, formula, table, and the fixed-cost bound when
    batch 1 was run."""
    header = [
        "size",
        "PE",
        "batch",
        "JAX ms/step",
        "JAX tokens/s",
        "JAX GFLOP/s",
        "JAX MFU",
        "matmul roofline",
    ]
    torch_note = "PyTorch not run (--torch_modes=none)."
    if hello is not None:
        header += [
            *(f"torch {m} ms/step" for m in flags.torch_modes.split(",")),
            "torch tokens/s (best mode)",
            "torch GFLOP/s",
            "torch MFU",
            "JAX / torch (best torch mode)",
            "check: logits / updates",
        ]
        torch_note = (
            f"PyTorch {hello['torch']} with {hello['threads']} threads, attention "
            f"'{flags.torch_attention}'; torch.mm GFLOP/s by n: "
            + ", ".join(f"{n}: {g:.1f}" for n, g in torch_peaks.items())
            + "."
        )
    sizes = ", ".join(f"{k} = {v}" for k, v in SIZES.items() if k in flags.sizes.split(","))
    fixed = fixed_cost_rows(cases)
    fixed_section = (
        []
        if not fixed
        else [
            "Fixed per-step cost (`fixed_cost_rows`): PyTorch's step at batch 1 bounds everything "
            "in its step that does not grow with the batch. At batch B, a step with no fixed cost "
            "running PyTorch's kernels would be at most t(B) / (t(B) - t(1)) times as fast as "
            "PyTorch: that ceiling is what removing per-step overhead (the jit) can buy.",
            record.table(
                [
                    "size",
                    "PE",
                    "batch B",
                    "torch mode",
                    "torch ms/step at 1",
                    "torch ms/step at B",
                    "fixed share at B",
                    "ceiling of a zero-overhead step",
                    "measured JAX / torch at B",
                ],
                fixed,
            ),
        ]
    )
    return "\n\n".join(
        [
            f"Batch {flags.batches} x {flags.length} tokens, vocabulary {flags.vocab_size}, "
            "float32, "
            f"dropout {flags.dropout_rate}; the AdamW recipe of configs/quickstart.py. Sizes: "
            f"{sizes}. Step times: best of {flags.repeats} windows of {flags.steps} steps, after "
            f"{flags.check_steps + flags.warmup} untimed steps (compilation excluded). JAX on "
            f"{jax.device_count()} device(s), XLA_FLAGS='{os.environ.get('XLA_FLAGS', '')}'.",
            "Float32 matmul peak, GFLOP/s by n (n x n): jnp.dot "
            + ", ".join(f"{n}: {g:.1f}" for n, g in peaks.items())
            + f". {torch_note} The best of all, {peak:.1f} GFLOP/s, is every MFU's denominator.",
            "Model FLOPs per step = 6 N B T + 12 L B T^2 H K (benchmarks/train_throughput.py); "
            "matmul roofline: the step's GEMMs alone in JAX, as a share of the peak. Check: max "
            "|logit difference| at the initial parameters / worst relative L2 difference of a "
            f"parameter's update over {flags.check_steps} train steps.",
            record.table(header, [case["row"] for case in cases]),
            *fixed_section,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--pes", default=",".join(PE_NAMES))
    parser.add_argument(
        "--batches",
        default="64",
        help="batch sizes; add 1 for the fixed-cost bound (fixed_cost_rows)",
    )
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--vocab_size", type=int, default=32)
    parser.add_argument("--dropout_rate", type=float, default=0.0, help="quickstart's 0.0")
    parser.add_argument("--steps", type=int, default=10, help="train steps per timed window")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows; best is kept")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the check")
    parser.add_argument("--check_steps", type=int, default=5, help=">= 2 (lr is 0 at step 0)")
    parser.add_argument("--peak_sizes", default="1024,2048")
    parser.add_argument("--torch_python", default=default_torch_python())
    parser.add_argument("--torch_modes", default="eager,compiled", help="or 'none': JAX only")
    parser.add_argument("--torch_attention", default="manual", choices=("manual", "sdpa"))
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--update_rtol", type=float, default=1e-2)
    parser.add_argument("--name", default="", help="suffix of the results file")
    flags = parser.parse_args()
    sizes, pes = flags.sizes.split(","), flags.pes.split(",")
    try:
        batches = sorted({int(b) for b in flags.batches.split(",")})
    except ValueError:
        raise ValueError(
            f"--batches must be comma-separated integers, got {flags.batches!r}"
        ) from None
    if batches[0] < 1:
        raise ValueError(f"--batches must all be >= 1, got {flags.batches!r}")
    for name, values, valid in (
        ("sizes", sizes, SIZES),
        ("pes", pes, PE_NAMES),
        ("torch_modes", flags.torch_modes.split(","), ("eager", "compiled", "none")),
    ):
        if unknown := sorted(set(values) - set(valid)):
            raise ValueError(f"unknown {name} {unknown}; expected some of {list(valid)}")
    if flags.check_steps < 2:
        raise ValueError(
            f"--check_steps must be >= 2 (step 0 has learning rate 0, so it checks "
            f"no update), got {flags.check_steps}"
        )

    worker = None if flags.torch_modes == "none" else TorchWorker(flags.torch_python)
    peak_sizes = [int(n) for n in flags.peak_sizes.split(",")]
    peaks = matmul_peak(peak_sizes, flags.repeats + 2)
    torch_peaks = (
        worker
        and worker.request(
            dict(kind="peak", sizes=peak_sizes, repeats=flags.repeats + 2), ("gflops",)
        )["gflops"]
    )
    print(f"matmul GFLOP/s: jnp.dot {peaks}, torch.mm {torch_peaks}", flush=True)
    peak = max([*peaks.values(), *(torch_peaks or {}).values()])
    cases = []
    for size in sizes:
        for batch_size in batches:
            gemms = train_gemms(SIZES[size], flags.vocab_size, batch_size, flags.length)
            roof = roofline(gemms, flags.repeats + 2)
            for pe in pes:
                cases.append(run_case(worker, size, pe, batch_size, flags, peak, roof))
                print(cases[-1]["row"], flush=True)
    if worker is not None:
        worker.close()
    body = report(flags, cases, peak, peaks, torch_peaks, worker and worker.hello)
    name = f"train_throughput_{jax.device_count()}dev" + (f"_{flags.name}" if flags.name else "")
    record.write(name, "Training throughput vs PyTorch", body)


if __name__ == "__main__":
    main()
