"""benchmarks/aot_matrix.py --render: the results table from JSON lines, one row per combination."""

import json

from absl import flags

from benchmarks import aot_matrix, record


def _report(pe: str, scan: bool, flops: float) -> dict:
    program = dict(
        compiled=True,
        error=None,
        compile_seconds=12.4,
        compile_cpu_seconds=3.6,
        peak_bytes=2**30,
        flops=flops,
        mosaic_kernels=1,
        estimated_seconds=0.0125,
    )
    return dict(
        topology="v5e:4x4",
        hosts=4,
        mesh=dict(data=8, model=2),
        num_layers=12,
        scan_layers=scan,
        d_model=768,
        pe=pe,
        attention_impl="pallas_flash",
        programs=dict(evaluate=program),
        fits=True,
        estimated_run_chip_hours=None,
        lengths=dict(train=48, evaluate=96, cache=351),
        vocab_size=6056,
        load=3.2,
        command=f"python -m benchmarks.aot_matrix --pes={pe}",
    )


def test_render_keeps_the_last_report_of_each_combination(tmp_path, monkeypatch):
    monkeypatch.setattr(record, "RESULTS_DIR", tmp_path / "results")
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(json.dumps(_report("t5", True, 1e9)) + "\n")
    second.write_text(
        "".join(json.dumps(r) + "\n" for r in (_report("t5", True, 2e9), _report("t5", False, 3e9)))
    )
    flags.FLAGS(["aot_matrix", f"--render={first},{second}", "--name=m"])
    try:
        aot_matrix.main([])
    finally:
        flags.FLAGS.unparse_flags()
    text = (tmp_path / "results" / "m.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| v5e:4x4")]
    assert rows == [
        "| v5e:4x4 | 4 | 8x2 | 12 scanned | t5 | pallas_flash | 12 s (4 CPU-s); 1.00 GiB; "
        "2.0 GFLOP; 1 Mosaic; 12.50 ms | True | - | 3 |",
        "| v5e:4x4 | 4 | 8x2 | 12 unrolled | t5 | pallas_flash | 12 s (4 CPU-s); 1.00 GiB; "
        "3.0 GFLOP; 1 Mosaic; 12.50 ms | True | - | 3 |",
    ]
    assert "python -m benchmarks.aot_matrix --pes=t5" in text
    saved = (tmp_path / "results" / "m.jsonl").read_text().splitlines()
    assert [json.loads(line)["programs"]["evaluate"]["flops"] for line in saved] == [2e9, 3e9]
