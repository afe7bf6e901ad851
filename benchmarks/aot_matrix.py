r"""The paper's model compiled for TPU slices, every PE x kernel x topology: compiles, bytes, FLOPs.

  nice -n 15 python -m benchmarks.aot_matrix --layers=12 \
      --topologies=v5e:2x2,v4:2x2x1,v5e:4x4 --modes=train,evaluate,decode

Each combination is `lenggen.plan.plan` on configs/base.py (copy_repeat's widths: training
batches of 48 tokens, evaluation of 96, a decoding cache of 96 + 255) with the PE and kernel
set, compiled by libtpu on this host (no TPU). The table is rewritten after every combination,
so an interrupted run keeps what finished (`benchmarks/results/aot_matrix.md`, plus one JSON
line per combination in `aot_matrix.jsonl`).
"""

import json
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


def _row(report: dict, modes) -> list[str]:
    def gib(n):
        return "-" if n is None else f"{n / 2**30:.2f}"

    cells = [
        report["topology"],
        "x".join(map(str, report["mesh"].values())),
        report["pe"],
        report["attention_impl"],
    ]
    for mode in modes:
        p = report["programs"][mode]
        if not p["compiled"]:
            cells.append(f"FAILS: {p['error'][:160]}")
        else:
            cells.append(
                f"{p['compile_seconds']:.0f} s; {gib(p['peak_bytes'])} GiB; "
                f"{p['flops'] / 1e9:.1f} GFLOP; {p['mosaic_kernels']} Mosaic; "
                f"{p['estimated_seconds'] * 1e3:.2f} ms"
            )
    hours = report["estimated_run_chip_hours"]
    cells += [str(report["fits"]), "-" if hours is None else f"{hours:.2f}"]
    return cells


def main(argv):
    del argv
    header = [
        "topology",
        "mesh",
        "PE",
        "kernel",
        *(f"{m}: compile; peak; FLOPs; Mosaic; roofline" for m in _MODES.value),
        "fits",
        "run chip-hours (train)",
    ]
    rows, started = [], time.time()
    jsonl = record.RESULTS_DIR / f"{_NAME.value}.jsonl"
    jsonl.write_text("")
    vocab = tokenizer_lib.Tokenizer.from_task(tasks.get("copy_repeat")).vocab_size
    for topology_name in _TOPOLOGIES.value:
        topology = aot.topology(topology_name)
        for mesh_text in _MESHES.value:
            for pe in _PES.value:
                for kernel in _KERNELS.value:
                    config = base.get_config(f"task=copy_repeat,pe={pe}")
                    config.model.num_layers = _LAYERS.value
                    config.model.attention_impl = kernel
                    config.mesh.shape = tuple(int(s) for s in mesh_text.split("x"))
                    report = plan.plan(config, topology, tuple(_MODES.value), LENGTHS, vocab)
                    with jsonl.open("a") as out:
                        out.write(json.dumps(report, sort_keys=True) + "\n")
                    row = _row(report, _MODES.value)
                    rows.append(row)
                    print(" | ".join(row), file=sys.stderr, flush=True)
                    body = (
                        f"configs/base.py (copy_repeat widths {vars(LENGTHS)}, vocabulary "
                        f"{vocab}) at {_LAYERS.value} layers x d_model 768, 12 heads, float32, "
                        "precision 'highest' (6 bf16 passes per matmul in the roofline); "
                        "compiled by libtpu for each abstract TPU slice on this CPU host. "
                        "Per device: peak bytes (arguments + unaliased outputs + temporaries "
                        "+ code), FLOPs per step (cost_analysis), Mosaic kernels in the "
                        "compiled program, roofline time (lenggen.chips). Run chip-hours: "
                        "40k train steps at the roofline x chips (a lower bound). "
                        f"{len(rows)} combinations in {(time.time() - started) / 60:.0f} min."
                        "\n\n" + record.table(header, rows)
                    )
                    record.write(_NAME.value, "Deviceless TPU compilation matrix", body)


if __name__ == "__main__":
    app.run(main)
