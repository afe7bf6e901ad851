r"""The paper's model compiled for TPU slices, every PE x kernel x topology: compiles, bytes, FLOPs.

  nice -n 15 python -m benchmarks.aot_matrix --layers=12 --scan_layers \
      --topologies=v5e:2x2,v4:2x2x1,v5e:4x4 --modes=train,evaluate,decode

  # long runs: one JSON line per combination outside the tree, rendered into results later
  nice -n 15 python -m benchmarks.aot_matrix ... --jsonl=runs/aot/matrix.jsonl --append
  python -m benchmarks.aot_matrix --render=runs/aot/matrix.jsonl

Each combination is `lenggen.plan.plan` on configs/base.py (copy_repeat's widths: training
batches of 48 tokens, evaluation of 96, a decoding cache of 96 + 255) with the PE and kernel
set, compiled by libtpu on this host (no TPU). The table is rewritten after every combination,
so an interrupted run keeps what finished (`benchmarks/results/aot_matrix.md`, plus one JSON
line per combination in `aot_matrix.jsonl`).
"""

import json
import os
import pathlib
import sys
import time

from absl import app, flags

from benchmarks import record
from configs import base
from lenggen import aot, plan, tasks
from lenggen.data import tokenizer as tokenizer_lib

PES = ("nope", "ape", "t5", "alibi", "rotary", "fire")
KERNELS = ("pallas_flash", "dot_product", "blockwise", "reference")
# copy_repeat (the paper's first task): longest train record 43 tokens -> 48; longest
# validation/test record 83 -> 96; the cache holds that prompt width plus 256 - 1 new tokens.
LENGTHS = aot.Lengths(train=48, evaluate=96, cache=96 + 256 - 1)

_LAYERS = flags.DEFINE_integer("layers", 12, "Decoder layers (the paper: 12).")
_TOPOLOGIES = flags.DEFINE_list("topologies", ["v5e:2x2", "v4:2x2x1", "v5e:4x4"], "TPU slices.")
_MESHES = flags.DEFINE_list(
    "meshes", ["-1x1", "-1x2"], "(data, model) mesh shapes, each 'DxM'; -1 takes the rest."
)
_PES = flags.DEFINE_list("pes", list(PES), "PEs.")
_KERNELS = flags.DEFINE_list("kernels", list(KERNELS), "Attention kernels.")
_MODES = flags.DEFINE_list("modes", list(aot.MODES), "Programs.")
_NAME = flags.DEFINE_string("name", "aot_matrix", "Results file name (without .md).")
_SCAN = flags.DEFINE_bool(
    "scan_layers", False, "Compile the blocks as one nn.scan (config.model.scan_layers)."
)
_MODEL = flags.DEFINE_list(
    "model",
    [],
    "config.model overrides KEY=INT (e.g. d_model=64,num_heads=2,d_kv=32,d_ff=128): a narrow "
    "model whose compile time shows the depth's share cheaply. Default: the paper's widths.",
)
_JSONL = flags.DEFINE_string(
    "jsonl", "", "Where to write one JSON line per combination (default: results/NAME.jsonl)."
)
_APPEND = flags.DEFINE_bool("append", False, "Append to --jsonl instead of starting it over.")
_RENDER = flags.DEFINE_list(
    "render", [], "Compile nothing: write results/NAME.md (and .jsonl) from these JSONL files."
)

TITLE = "Deviceless TPU compilation matrix"
ABOUT = (
    "configs/base.py (copy_repeat widths {lengths}, vocabulary {vocab}) at d_model 768, 12 "
    "heads, float32, precision 'highest' (6 bf16 passes per matmul in the roofline); compiled "
    "by libtpu for each abstract TPU slice on a CPU host, one process per command. Per device: "
    "peak bytes (arguments + unaliased outputs + temporaries + code), FLOPs per step "
    "(cost_analysis), Mosaic kernels in the compiled program, roofline time (lenggen.chips). "
    "'layers': the depth and whether the blocks were one nn.scan (config.model.scan_layers) "
    "or unrolled. The train step has dropout 0.1, so pallas_flash falls back to its blockwise "
    "form there (no Mosaic kernel). Run chip-hours: 40k train steps at the roofline x chips "
    "(a lower bound). 'load': the host's 1-minute load average when the combination finished "
    "(compile times are wall clock on a shared 2-core host, then in parentheses the CPU "
    "seconds of the compiling process, which do not depend on the load, where "
    "recorded). The Machine line is the host's when the table was written."
)


def _row(report: dict, modes) -> list[str]:
    def gib(n):
        return "-" if n is None else f"{n / 2**30:.2f}"

    def cpu(seconds):
        return "" if seconds is None else f" ({seconds:.0f} CPU-s)"

    layers = report.get("num_layers", "?")
    width = report.get("d_model", 768)
    cells = [
        report["topology"],
        f"{report.get('hosts', 1)}",
        "x".join(map(str, report["mesh"].values())),
        f"{layers} {'scanned' if report.get('scan_layers') else 'unrolled'}"
        + ("" if width == 768 else f" (d_model {width})"),
        report["pe"],
        report["attention_impl"],
    ]
    for mode in modes:
        p = report["programs"].get(mode)
        if p is None:
            cells.append("-")
        elif not p["compiled"]:
            cells.append(f"FAILS: {p['error'][:160]}")
        else:
            cells.append(
                f"{p['compile_seconds']:.0f} s{cpu(p.get('compile_cpu_seconds'))}; "
                f"{gib(p['peak_bytes'])} GiB; "
                f"{p['flops'] / 1e9:.1f} GFLOP; {p['mosaic_kernels']} Mosaic; "
                f"{p['estimated_seconds'] * 1e3:.2f} ms"
            )
    hours = report["estimated_run_chip_hours"]
    load = report.get("load")
    cells += [
        str(report["fits"]),
        "-" if hours is None else f"{hours:.2f}",
        "-" if load is None else f"{load:.0f}",
    ]
    return cells


def _header(modes) -> list[str]:
    return [
        "topology",
        "hosts",
        "mesh",
        "layers",
        "PE",
        "kernel",
        *(f"{m}: compile; peak; FLOPs; Mosaic; roofline" for m in modes),
        "fits",
        "run chip-hours (train)",
        "load",
    ]


def _write(reports: list[dict], command: str, minutes: float | None) -> None:
    """results/NAME.md (the table) and results/NAME.jsonl (the reports) from `reports`."""
    modes = [m for m in aot.MODES if any(m in r["programs"] for r in reports)]
    rows = [_row(r, modes) for r in reports]
    lengths = reports[0]["lengths"] if reports else vars(LENGTHS)
    vocab = reports[0]["vocab_size"] if reports else "?"
    took = "" if minutes is None else f" {len(rows)} combinations in {minutes:.0f} min."
    body = ABOUT.format(lengths=lengths, vocab=vocab) + took + "\n\n"
    body += record.table(_header(modes), rows)
    record.write(_NAME.value, TITLE, body, command=command)
    jsonl = record.RESULTS_DIR / f"{_NAME.value}.jsonl"
    jsonl.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in reports))


def _render(paths) -> None:
    found = {}
    for path in paths:
        for line in pathlib.Path(path).read_text().splitlines():
            if line.strip():
                report = json.loads(line)
                # One row per combination (rendering into a file it read keeps it once).
                key = json.dumps(
                    [report.get(k) for k in ("topology", "mesh", "pe", "attention_impl")]
                    + [report.get(k) for k in ("num_layers", "scan_layers", "d_model")]
                    + [sorted(report["programs"])]
                )
                found[key] = report
    reports = list(found.values())
    commands = sorted({r.get("command", "") for r in reports} - {""})
    _write(reports, "; ".join(commands) or "(not recorded)", None)


def main(argv):
    del argv
    if _RENDER.value:
        _render(_RENDER.value)
        return
    command = " ".join(["python -m benchmarks.aot_matrix", *sys.argv[1:]])
    started = time.time()
    jsonl = pathlib.Path(_JSONL.value or record.RESULTS_DIR / f"{_NAME.value}.jsonl")
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    if not _APPEND.value:
        jsonl.write_text("")
    vocab = tokenizer_lib.Tokenizer.from_task(tasks.get("copy_repeat")).vocab_size
    reports = []
    for topology_name in _TOPOLOGIES.value:
        topology = aot.topology(topology_name)
        for mesh_text in _MESHES.value:
            for pe in _PES.value:
                for kernel in _KERNELS.value:
                    config = base.get_config(f"task=copy_repeat,pe={pe}")
                    config.model.num_layers = _LAYERS.value
                    config.model.scan_layers = _SCAN.value
                    config.model.attention_impl = kernel
                    for item in _MODEL.value:
                        key, value = item.split("=")
                        config.model[key] = int(value)
                    config.mesh.shape = tuple(int(s) for s in mesh_text.split("x"))
                    report = plan.plan(config, topology, tuple(_MODES.value), LENGTHS, vocab)
                    report.update(
                        command=command, load=os.getloadavg()[0], d_model=config.model.d_model
                    )
                    with jsonl.open("a") as out:
                        out.write(json.dumps(report, sort_keys=True) + "\n")
                    reports.append(report)
                    print(" | ".join(_row(report, _MODES.value)), file=sys.stderr, flush=True)
                    if not _JSONL.value:
                        _write(reports, command, (time.time() - started) / 60)


if __name__ == "__main__":
    app.run(main)
