"""The command line as a user runs it: the quickstart config through `python -m lenggen.main`,
shrunk further by overrides, and bad input stopped before anything is built."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args: str, cwd: str = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    return subprocess.run(
        [sys.executable, "-m", "lenggen.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_quickstart_smoke_run_through_main(tmp_path):
    workdir = tmp_path / "run"
    result = _main(
        "--config=configs/quickstart.py",
        f"--workdir={workdir}",
        f"--config.data.dir={tmp_path / 'data'}",
        "--config.task.options.num_train=256",
        "--config.task.options.num_validation=32",
        "--config.task.options.num_test_per_length=4",
        "--config.model.num_layers=1",
        "--config.model.d_model=32",
        "--config.model.d_ff=64",
        "--config.train.num_steps=6",
        "--config.train.log_every=3",
        "--config.train.eval_every=3",
        "--config.train.checkpoint_every=3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Progress and the per-length table reach the user.
    assert "step 6/6" in result.stdout and "steps/s" in result.stdout and "ETA" in result.stdout
    assert "overall" in result.stdout and "* = a training length" in result.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["train_max_length"] == 8
    assert sorted(results["splits"]["test"]["by_length"], key=int) == [str(n) for n in range(9, 15)]
    assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 6
    assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]

    # The same command again resumes: nothing left to train, same results.
    again = _main(
        "--config=configs/quickstart.py",
        f"--workdir={workdir}",
        f"--config.data.dir={tmp_path / 'data'}",
        "--config.task.options.num_train=256",
        "--config.task.options.num_validation=32",
        "--config.task.options.num_test_per_length=4",
        "--config.model.num_layers=1",
        "--config.model.d_model=32",
        "--config.model.d_ff=64",
        "--config.train.num_steps=6",
        "--config.train.log_every=3",
        "--config.train.eval_every=3",
        "--config.train.checkpoint_every=3",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resumed from step 6" in again.stdout
    again_results = json.loads((workdir / "results.json").read_text())
    # Same scores; the provenance (start and end times) is the new process's.
    assert again_results.pop("provenance")["started"] >= results.pop("provenance")["started"]
    assert again_results == results


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--config=configs/base.py:task=kopy"],
            "Unknown task 'kopy'. Valid tasks: addition, copy",
        ),
        (
            ["--config=configs/base.py", "--config.train.batch_size=63"],
            "config.train.batch_size=63 is not divisible by the mesh's data axis (2 devices)",
        ),
    ],
)
def test_bad_input_stops_with_one_clear_error_before_any_work(tmp_path, args, message):
    workdir = tmp_path / "run"
    result = _main(*args, f"--workdir={workdir}", f"--config.data.dir={tmp_path / 'data'}")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "data").exists()  # no dataset was generated
