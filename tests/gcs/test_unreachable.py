"""Storage that cannot be used stops `lenggen.main` within seconds, before anything trains: exit
2, one line naming the path, and nothing created locally (no ./gs:/... folder)."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

from tests.gcs import emulator

REPO = pathlib.Path(__file__).parents[2]
CONFIG = (f"--config={REPO / 'configs' / 'quickstart.py'}", "--config.train.num_steps=2")


def _main(cwd: pathlib.Path, env: dict, *flags: str) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "lenggen.main", *CONFIG, *flags],
        cwd=cwd,
        env=dict(os.environ, **env, HOME=str(cwd)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stderr, time.monotonic() - started


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lenggen: ")]


def test_no_reachable_gcs_exits_2_within_30_s_and_creates_nothing(tmp_path):
    # Nothing listens on this port: the GCS endpoint is unreachable.
    closed = f"http://127.0.0.1:{emulator.free_port()}"
    env = {"STORAGE_EMULATOR_HOST": closed, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    code, stderr, elapsed = _main(tmp_path, env, "--workdir=gs://some-bucket/x")
    assert code == 2, stderr[-3000:]
    (line,) = _lines(stderr)
    assert line.startswith("lenggen: Cannot ") and "gs://some-bucket/x" in line, line
    assert "Traceback" not in stderr
    assert elapsed < 30, elapsed
    assert os.listdir(tmp_path) == []


def test_a_missing_bucket_is_named(tmp_path, gcs):
    code, stderr, _ = _main(tmp_path, gcs.env, "--workdir=gs://no-such-bucket/run")
    assert code == 2, stderr[-3000:]
    assert _lines(stderr) == [
        "lenggen: Cannot use gs://no-such-bucket/run: bucket gs://no-such-bucket does not exist."
    ]
    assert os.listdir(tmp_path) == []


def test_a_missing_bucket_for_the_data_dir_is_named(tmp_path, gcs):
    workdir = f"gs://{gcs.bucket}/unreachable-data/run"
    code, stderr, _ = _main(
        tmp_path, gcs.env, f"--workdir={workdir}", "--config.data.dir=gs://no-data-bucket/datasets"
    )
    assert code == 2, stderr[-3000:]
    assert _lines(stderr) == [
        "lenggen: Cannot use gs://no-data-bucket/datasets: bucket "
        "gs://no-data-bucket does not exist."
    ]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("workdir", ["s3://bucket/run", "hdfs://namenode/run"])
def test_an_unknown_scheme_exits_2_with_one_line(tmp_path, workdir):
    code, stderr, _ = _main(tmp_path, {}, f"--workdir={workdir}")
    assert code == 2, stderr[-3000:]
    assert _lines(stderr) == [
        f"lenggen: {workdir}: unsupported storage scheme {workdir.split(':')[0]!r}; use a "
        "local path or gs://<bucket>/<path>."
    ]
    assert os.listdir(tmp_path) == []
