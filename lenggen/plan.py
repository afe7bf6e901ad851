r"""What a run will cost on a TPU slice, from its programs compiled for that slice, without it.

  python -m lenggen.plan --config=configs/base.py:task=copy,pe=t5 --topology=v5e:2x2
  python -m lenggen.plan --config=configs/base.py --topology=v4:2x2x1 --mode=all --json
  python -m lenggen.plan --config=configs/quickstart.py --topology=cpu   # this host's devices

Builds the run's programs (the train step; with --mode, teacher-forced evaluation and a KV-cache
decode step) over the config's mesh of the topology's devices, compiles them with the real TPU
compiler (libtpu: `pip install -e '.[tpu]'`) and prints, per program, whether it compiles, its
per-device memory against the chip's HBM and its FLOPs; then a roofline step time from the
chip's published peak and bandwidth (lenggen.chips, with the matmul precision's bfloat16 passes)
and the chip-hours of the run and of a whole grid (--grid, default the paper's 150 runs). The
roofline is a lower bound: real steps are slower.

Sequence widths come from the task's dataset, as the run's would (prepared once under
config.data.dir); --seq_len sets all of them instead. The grid's runs are priced from this
run's compiled step, scaled by each task's tokens per step (the model's FLOPs and bytes are
linear in them up to the attention's small quadratic term).

With --json the last line of output is one JSON object (fits, bytes_per_device, flops_per_step,
estimated_step_seconds, estimated_run_hours, ...). Bad input (config, topology, flags): one line
on stderr and exit status 2.
"""

import json
import math
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lenggen import aot, chips, config_schema, sharding, tasks
from lenggen import grid as grid_lib
from lenggen.data import dataset, loader
from lenggen.train.loop import DEFAULT_DATA_DIR

EXIT_BAD_INPUT = 2
PAPER_GRID = "configs/grids/paper.py"

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file with arguments, as for lenggen.main.", lock_config=True
)
_TOPOLOGY = flags.DEFINE_string(
    "topology",
    "cpu",
    "TPU topology to compile for (v5e:2x2, v4:2x2x1, v5e:4x4, ...); "
    "'cpu' or empty: this host's devices.",
)
_MODE = flags.DEFINE_enum("mode", "train", (*aot.MODES, "all"), "Programs to compile.")
_JSON = flags.DEFINE_bool("json", False, "End with one JSON line of the results.")
_SEQ_LEN = flags.DEFINE_integer(
    "seq_len", 0, "Width of every program's sequences (0: from the task's dataset)."
)
_GRID = flags.DEFINE_string("grid", PAPER_GRID, "Grid whose chip-hours to project ('' for none).")


class PlanError(ValueError):
    """Bad input to the plan (reported in one line, exit status 2)."""


def lengths_of(config, seq_len: int = 0) -> tuple[aot.Lengths, int, int]:
    """(program widths, vocabulary size, validation examples) of the run `config` describes.

    The widths follow lenggen.train.loop: training batches are the longest training record
    rounded up to 8; evaluation batches the longest validation/test record rounded up to 16;
    the decoding cache that prompt width plus config.eval.max_new_tokens.
    """
    task = tasks.get(config.task.name, **config.task.options.to_dict())
    if seq_len:
        vocab = dataset.Tokenizer.from_task(task).vocab_size
        return aot.Lengths(seq_len, seq_len, seq_len), vocab, 0
    data = dataset.prepare(task, os.path.expanduser(config.data.dir or DEFAULT_DATA_DIR))
    longest = max(data.max_sequence_length(s) for s in ("validation", "test"))
    lengths = aot.Lengths(
        train=loader.round_up(data.max_sequence_length("train"), 8),
        evaluate=loader.round_up(longest, 16),
        cache=loader.round_up(longest, 16) + config.eval.max_new_tokens - 1,
    )
    return lengths, data.tokenizer.vocab_size, len(data.splits["validation"])


def plan(
    config,
    topology: aot.Topology,
    modes,
    lengths: aot.Lengths,
    vocab_size: int,
    num_validation: int = 0,
) -> dict:
    """Compiles the run's programs for `topology` and prices them; the report as a dict."""
    try:
        config_schema.validate(config, len(topology.devices))
    except config_schema.ConfigError as error:
        raise PlanError(str(error)) from None
    mesh = sharding.make_mesh(config.mesh.shape, topology.devices)
    state = aot.state_bytes(config, vocab_size, lengths, mesh)
    programs = [
        aot.compile_program(name, fn, args, mesh)
        for name, (fn, args) in aot.build(config, vocab_size, lengths, mesh, modes).items()
    ]
    # A scanned stack's FLOPs and bytes: XLA counts its loop body once; a second compile with
    # more layers per iteration gives the per-layer cost (aot.count_every_layer).
    layers = config.model.num_layers
    unroll = aot.loop_unroll(layers) if config.model.get("scan_layers", False) else 1
    if unroll > 1:
        built = aot.build(config, vocab_size, lengths, mesh, modes, scan_unroll=unroll)
        for program in programs:
            fn, args = built[program.name]
            again = aot.compile_program(program.name, fn, args, mesh)
            aot.count_every_layer(program, again, layers, unroll)
            program.cost_compile_seconds = again.compile_seconds
            program.cost_compile_cpu_seconds = again.compile_cpu_seconds
    chip = topology.chip
    hbm = chip.hbm_bytes // topology.devices_per_chip if chip else None
    matmul_passes = chips.passes(config.model.dtype, config.model.precision)
    by_name = {p.name: p for p in programs}

    def seconds(program):
        if chip is None or not program.compiled:
            return None
        return chips.roofline_seconds(
            program.flops,
            program.bytes_accessed,
            chip,
            devices_per_chip=topology.devices_per_chip,
            matmul_passes=matmul_passes,
        )

    step_seconds = seconds(by_name["train"]) if "train" in by_name else None
    run_hours = None
    if step_seconds is not None:
        total = step_seconds * config.train.num_steps
        evaluate = seconds(by_name["evaluate"]) if "evaluate" in by_name else None
        if evaluate is not None and num_validation:
            validations = config.train.num_steps // config.train.eval_every
            total += validations * math.ceil(num_validation / config.eval.batch_size) * evaluate
        run_hours = total / 3600
    peak = max((p.peak_bytes for p in programs if p.compiled), default=0)
    return dict(
        topology=topology.name,
        devices=len(topology.devices),
        chips=topology.num_chips,
        hosts=topology.hosts,
        mesh=dict(mesh.shape),
        platform=sharding.platform(mesh),
        pe=config.model.pe.name,
        attention_impl=config.model.attention_impl,
        dtype=config.model.dtype,
        precision=config.model.precision,
        num_layers=config.model.num_layers,
        scan_layers=bool(config.model.get("scan_layers", False)),
        # FLOPs and bytes of a scanned stack come from compiles at unroll 1 and this one.
        cost_unroll=unroll,
        matmul_passes=matmul_passes,
        lengths=vars(lengths),
        vocab_size=vocab_size,
        programs={
            p.name: dict(vars(p), peak_bytes=p.peak_bytes, estimated_seconds=seconds(p))
            for p in programs
        },
        params_bytes_per_device=state["params"],
        optimizer_bytes_per_device=state["optimizer"],
        hbm_bytes_per_device=hbm,
        compiles=all(p.compiled for p in programs),
        fits=all(p.compiled for p in programs) and (hbm is None or peak <= hbm),
        bytes_per_device=peak,
        flops_per_step=by_name["train"].flops if "train" in by_name else None,
        estimated_step_seconds=step_seconds,
        estimated_run_hours=run_hours,
        estimated_run_chip_hours=None if run_hours is None else run_hours * topology.num_chips,
    )


def project_grid(report: dict, grid: str, data_dir_of) -> dict:
    """Chip-hours of every run of `grid`, from this run's train step scaled by tokens per step.

    Args:
      report: `plan`'s report (its estimated_step_seconds and train width).
      grid: a grid spec for lenggen.grid.load_grid.
      data_dir_of: config -> (aot.Lengths, vocab, validation examples) (`lengths_of`).
    """
    if report["estimated_step_seconds"] is None:
        return dict(grid=grid, runs=0, chip_hours=None)
    base_tokens = report["lengths"]["train"] * report["batch_size"]
    hours = 0.0
    runs = grid_lib.load_grid(grid)
    widths = {}
    for run in runs:
        config = grid_lib.resolve_config(run)
        key = (config.task.name, json.dumps(config.task.options.to_dict(), sort_keys=True))
        if key not in widths:
            widths[key] = data_dir_of(config)[0].train
        tokens = widths[key] * config.train.batch_size
        hours += (
            report["estimated_step_seconds"]
            * tokens
            / base_tokens
            * config.train.num_steps
            / 3600
            * report["chips"]
        )
    return dict(
        grid=grid,
        runs=len(runs),
        chip_hours=hours,
        train_widths={k[0]: v for k, v in widths.items()},
    )


def _gib(n) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def print_report(report: dict, out=sys.stdout) -> None:
    """The report for people."""

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say(
        f"Plan for {report['topology']} ({report['devices']} devices, {report['chips']} chips, "
        f"{report['hosts']} host(s)), mesh {report['mesh']}, platform {report['platform']}; "
        f"PE {report['pe']}, attention {report['attention_impl']}, {report['dtype']} at "
        f"precision {report['precision']} ({report['matmul_passes']} bf16 MXU pass(es) per "
        f"matmul); {report['num_layers']} layers "
        f"{'scanned' if report['scan_layers'] else 'unrolled'}; widths {report['lengths']}."
    )
    say(
        f"Per device: parameters {_gib(report['params_bytes_per_device'])}, optimizer state "
        f"{_gib(report['optimizer_bytes_per_device'])}, "
        f"HBM {_gib(report['hbm_bytes_per_device'])}."
    )
    for name, p in report["programs"].items():
        if not p["compiled"]:
            say(f"  {name:8s} DOES NOT COMPILE ({p['compile_seconds']:.0f} s): {p['error']}")
            continue
        estimate = p["estimated_seconds"]
        say(
            f"  {name:8s} compiles ({p['compile_seconds']:.0f} s, "
            f"{p['compile_cpu_seconds']:.0f} CPU-s); per device: peak "
            f"{_gib(p['peak_bytes'])} (arguments {_gib(p['argument_bytes'])}, temporaries "
            f"{_gib(p['temp_bytes'])}), {p['flops'] / 1e12:.3f} TFLOP, "
            f"{p['bytes_accessed'] / 1e9:.2f} GB accessed, Mosaic kernels "
            f"{p['mosaic_kernels']}; roofline "
            + ("-" if estimate is None else f"{estimate * 1e3:.2f} ms")
        )
    say(
        f"Fits: {report['fits']}. Estimated step {report['estimated_step_seconds']} s; run "
        f"{report['estimated_run_hours']} h on {report['chips']} chips = "
        f"{report['estimated_run_chip_hours']} chip-hours (roofline: a lower bound)."
    )
    grid = report.get("grid")
    if grid and grid.get("chip_hours") is not None:
        say(f"Grid {grid['grid']}: {grid['runs']} runs, {grid['chip_hours']:.1f} chip-hours.")


def _exit(message: str) -> None:
    print(f"lenggen.plan: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(EXIT_BAD_INPUT)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _exit(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)
    try:
        config = _CONFIG.value
        config.keys()
    except (OSError, ValueError, KeyError, AttributeError) as error:
        _exit(error)
    if _SEQ_LEN.value < 0:
        _exit(f"--seq_len={_SEQ_LEN.value}: expected 0 (from the dataset) or a positive width")
    try:
        topology = aot.topology(_TOPOLOGY.value)
    except ValueError as error:
        _exit(error)
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    modes = aot.MODES if _MODE.value == "all" else (_MODE.value,)
    try:
        lengths, vocab, validation = lengths_of(config, _SEQ_LEN.value)
        report = plan(config, topology, modes, lengths, vocab, validation)
        report["batch_size"] = config.train.batch_size
        if _GRID.value:
            report["grid"] = project_grid(
                report, _GRID.value, lambda c: lengths_of(c, _SEQ_LEN.value)
            )
    except (PlanError, grid_lib.GridError, config_schema.ConfigError) as error:
        _exit(error)
    print_report(report)
    if _JSON.value:
        print(json.dumps(report, sort_keys=True), flush=True)
    if not report["compiles"]:
        sys.exit(1)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
