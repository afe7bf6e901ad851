"""Tests of `python -m lenggen.plan`: its JSON report on this host's devices and its bad input.

The CPU plan compiles a tiny config (quickstart's model, 2 layers x 128) on this host; the TPU
programs are compiled in test_compile.py.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _plan(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    return subprocess.run(
        [sys.executable, "-m", "lenggen.plan", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def cpu_report():
    result = _plan(
        "--config=configs/quickstart.py",
        "--topology=cpu",
        "--mode=all",
        "--seq_len=24",
        "--grid=",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, json.loads(result.stdout.strip().splitlines()[-1])


def test_cpu_plan_reports_every_program(cpu_report):
    text, report = cpu_report
    assert report["topology"] == "cpu" and report["platform"] == "cpu"
    assert report["devices"] == 2 and report["mesh"] == {"data": 2, "model": 1}
    assert set(report["programs"]) == {"train", "evaluate", "decode"}
    for name, program in report["programs"].items():
        assert program["compiled"], name
        assert program["flops"] > 0 and program["peak_bytes"] > 0
        assert "compiles" in text
    # No published figures for a CPU: no HBM bound, no time estimate; it fits by definition.
    assert report["fits"] is True and report["hbm_bytes_per_device"] is None
    assert report["estimated_step_seconds"] is None and report["estimated_run_hours"] is None
    for key in ("bytes_per_device", "flops_per_step"):
        assert report[key] > 0


def test_cpu_plan_state_bytes(cpu_report):
    """quickstart's model on a pure data-parallel mesh: every device holds all parameters
    (float32) and Adam's two moments of them."""
    _, report = cpu_report
    d, ff, layers, vocab = 128, 512, 2, report["vocab_size"]
    count = vocab * d + layers * (4 * d * d + 2 * d * ff + 2 * d) + d  # + norms; NoPE: no PE
    assert report["params_bytes_per_device"] == 4 * count
    # Adam's mu and nu, plus scalar counters (the schedule's and Adam's steps: int32).
    assert report["optimizer_bytes_per_device"] - 2 * 4 * count in range(0, 64)
    train = report["programs"]["train"]
    # The train step's arguments hold the state, so at least parameters and moments.
    assert train["argument_bytes"] >= 3 * 4 * count


@pytest.mark.parametrize("topology", ["v9:2x2", "v5e", "gpu:h100"])
def test_bad_topology_is_one_line_and_exit_2(topology):
    result = _plan("--config=configs/quickstart.py", f"--topology={topology}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"unknown topology '{topology}'" in lines[0]
    assert result.stdout == ""


def test_bad_seq_len_is_one_line_and_exit_2():
    result = _plan("--config=configs/quickstart.py", "--seq_len=-3")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "lenggen.plan: --seq_len=-3: expected 0 (from the dataset) or a positive width"
    )


def test_grid_projection_scales_by_tokens_per_step():
    """The paper grid's 150 runs priced from one step of 36 ms on 4 chips at 48 x 64 tokens:
    135 runs of 40,000 steps and PCFG's official counts (8 runs of 100,000, 7 of 60,000) are
    6.62 M steps, x 0.036 s / 3600 x 4 chips = 264.8 chip-hours when every task has that width;
    PCFG twice as wide (96) adds its 1.22 M steps' worth again (48.8 chip-hours)."""
    from lenggen import aot, plan

    report = dict(estimated_step_seconds=0.036, lengths=dict(train=48), batch_size=64, chips=4)

    def widths(pcfg_width):
        def lengths_of(config):
            width = pcfg_width if config.task.name == "pcfg" else 48
            return aot.Lengths(width, width, width), 10, 0

        return lengths_of

    same = plan.project_grid(report, "configs/grids/paper.py", widths(48))
    assert same["runs"] == 150 and same["chip_hours"] == pytest.approx(264.8)
    wider = plan.project_grid(report, "configs/grids/paper.py", widths(96))
    assert wider["chip_hours"] == pytest.approx(313.6)
    assert wider["train_widths"]["pcfg"] == 96 and wider["train_widths"]["copy"] == 48
