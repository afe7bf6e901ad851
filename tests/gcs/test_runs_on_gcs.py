"""The quickstart (shrunk to 12 steps) with its workdir and data dir on gs://, against a real GCS
API server (tests/gcs/emulator.py): trained and evaluated end to end, killed with SIGKILL and
resumed bit-identically, then read by the report and the analyses. Every client is the real one:
gcsfs under etils.epath (lenggen.rundir, Orbax's directories, TFDS's metadata) and TensorStore
(Orbax's arrays).

The runs are subprocesses, as a user starts them; each run takes ~15-50 s on 2 CPU cores.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from lenggen import checkpoint, rundir
from lenggen.analysis import attention_maps
from lenggen.analysis import runs as runs_lib
from lenggen.report import build_report
from lenggen.rundir import storage

REPO = pathlib.Path(__file__).parents[2]
SHRUNK = (
    f"--config={REPO / 'configs' / 'quickstart.py'}",
    "--config.task.options.num_train=256",
    "--config.task.options.num_validation=32",
    "--config.task.options.num_test_per_length=8",
    "--config.train.num_steps=12",
    "--config.train.checkpoint_every=4",
    "--config.train.eval_every=6",
    "--config.train.log_every=1",
    "--config.train.batch_size=8",
    "--config.eval.batch_size=16",
)
RUN_FILES = (
    "config.json",
    "metrics.jsonl",
    "results.json",
    "checksums.json",
    "samples.jsonl",
    "accuracy_vs_length.png",
)


class Main:
    """`python -m lenggen.main` on the shrunk quickstart, in an empty working directory, with the
    emulator's environment and a private HOME (the gs:// data dir's local staging copy)."""

    def __init__(self, gcs, home: pathlib.Path, workdir: str, data_dir: str):
        self.cwd = home / "cwd"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.stdout = open(home / f"stdout-{time.monotonic_ns()}.txt", "w+")
        self.stderr = open(home / f"stderr-{time.monotonic_ns()}.txt", "w+")
        env = dict(os.environ, **gcs.env, HOME=str(home), PYTHONPATH=str(REPO))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lenggen.main",
                *SHRUNK,
                f"--workdir={workdir}",
                f"--config.data.dir={data_dir}",
            ],
            cwd=self.cwd,
            env=env,
            stdout=self.stdout,
            stderr=self.stderr,
            text=True,
        )

    def output(self) -> tuple[str, str]:
        for handle in (self.stdout, self.stderr):
            handle.flush()
            handle.seek(0)
        return self.stdout.read(), self.stderr.read()

    def finish(self, timeout: float = 400) -> tuple[int, str, str]:
        code = self.process.wait(timeout=timeout)
        return (code, *self.output())


def _state(workdir: str, step: int) -> dict:
    """checkpoints/<step> of a gs:// workdir, as numpy arrays (read through TensorStore)."""
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    manager = ocp.CheckpointManager(epath.Path(workdir) / "checkpoints", options=options)
    try:
        return jax.tree.map(np.asarray, manager.restore(step, args=ocp.args.StandardRestore()))
    finally:
        manager.close()


def _training_curve(workdir: str) -> list:
    records = [
        json.loads(line) for line in storage.read_text(f"{workdir}/metrics.jsonl").splitlines()
    ]
    return [
        {k: v for k, v in r.items() if k not in ("steps_per_second", "wall_time")}
        for r in records
        if r["event"] in ("train", "validation")
    ]


@pytest.fixture(scope="module")
def data_dir(gcs):
    return f"gs://{gcs.bucket}/datasets"


@pytest.fixture(scope="module")
def reference(gcs, data_dir, tmp_path_factory):
    """(workdir, exit code, stdout, stderr, local working directory) of an uninterrupted run."""
    workdir = f"gs://{gcs.bucket}/reference/quickstart"
    main = Main(gcs, tmp_path_factory.mktemp("reference"), workdir, data_dir)
    return (workdir, *main.finish(), main.cwd)


@pytest.fixture(scope="module")
def resumed(gcs, data_dir, reference, tmp_path_factory):
    """(workdir, step it resumed from, stdout of the resumed run): killed with SIGKILL once
    checkpoints/4 is committed, then the same command again."""
    workdir = f"gs://{gcs.bucket}/resumed/quickstart"
    home = tmp_path_factory.mktemp("resumed")
    killed = Main(gcs, home, workdir, data_dir)
    deadline = time.monotonic() + 300
    while not storage.exists(f"{workdir}/checkpoints/4/commit_success.txt"):
        assert killed.process.poll() is None, killed.output()
        assert time.monotonic() < deadline, killed.output()
        time.sleep(0.2)
    killed.process.send_signal(signal.SIGKILL)
    killed.process.wait()
    assert not storage.exists(f"{workdir}/results.json")
    assert storage.exists(f"{workdir}/lock.json")  # left behind by the killed run
    code, stdout, stderr = Main(gcs, home, workdir, data_dir).finish()
    assert code == 0, stderr[-3000:]
    resumed_from = [line for line in stdout.splitlines() if line.startswith("Resumed from step")]
    assert len(resumed_from) == 1, stdout
    return workdir, int(resumed_from[0].split()[3]), stdout


def test_the_quickstart_trains_and_evaluates_on_gcs(reference, data_dir):
    workdir, code, stdout, stderr, cwd = reference
    assert code == 0, stderr[-3000:]
    assert "overall" in stdout
    for name in RUN_FILES:
        assert storage.exists(f"{workdir}/{name}"), name
    # TensorBoard's event files land in the bucket too (tensorboardX's GCS writer).
    assert any("tfevents" in entry.name for entry in storage.resolve(workdir).iterdir())
    assert not storage.exists(f"{workdir}/lock.json")  # released at the end
    results = storage.read_json(f"{workdir}/results.json")
    assert results["task"] == "copy" and results["pe"] == "nope"
    assert sum(e["n"] for e in results["splits"]["test"]["by_length"].values()) == 6 * 8
    steps = checkpoint.Checkpoints(workdir, keep=2, read_only=True)
    try:
        assert steps.all_steps() == [8, 12]
        assert results["step"] == steps.best()[0]
    finally:
        steps.close()
    assert storage.resolve(data_dir).is_dir()
    # Nothing local: no ./gs:/... folder in the working directory.
    assert list(cwd.iterdir()) == []


def test_a_killed_run_resumes_bit_identically_from_gcs(reference, resumed):
    workdir, resumed_from, stdout = resumed
    assert resumed_from in (4, 8)
    assert "Took over the lock of a run that is gone" in stdout
    jax.tree.map(np.testing.assert_array_equal, _state(workdir, 12), _state(reference[0], 12))
    assert _training_curve(workdir) == _training_curve(reference[0])
    got, expected = (storage.read_json(f"{w}/results.json") for w in (workdir, reference[0]))
    # Equal but for provenance (times and command differ between runs).
    assert {k: v for k, v in got.items() if k != "provenance"} == {
        k: v for k, v in expected.items() if k != "provenance"
    }


def test_the_report_reads_gcs_runs(reference, tmp_path):
    workdir = reference[0]
    report = build_report(os.path.dirname(workdir), str(tmp_path / "report"))
    assert report["num_runs"] == 1 and report["tasks"] == ["copy"]
    written = json.loads((tmp_path / "report" / "report.json").read_text())
    assert written["num_runs"] == 1


def test_the_analyses_read_gcs_runs(reference, tmp_path):
    workdir = reference[0]
    run = runs_lib.load(workdir)
    results = storage.read_json(f"{workdir}/results.json")
    assert run.step == results["step"] and run.config.model.pe.name == "nope"
    payload = attention_maps.run(workdir, str(tmp_path / "maps"))
    assert payload["step"] == results["step"]
    on_disk = json.loads((tmp_path / "maps" / attention_maps.JSON_FILE).read_text())
    assert on_disk["step"] == results["step"] and on_disk["length"] == payload["length"]


def test_a_read_only_opening_still_verifies_checksums(resumed):
    """A checksums.json that disagrees with best/<step> stops the analysis, and nothing in the
    workdir is moved or rewritten."""
    workdir = resumed[0]
    recorded = storage.read_json(f"{workdir}/checksums.json")
    entries = recorded["entries"]
    (step,) = entries["best"]
    # The checksum of another state (step 8 is never the best: validation runs at 6 and 12),
    # in a file whose own digest verifies (a file that fails it is not trusted at all).
    checkpoint.write_checksums(
        f"{workdir}/checksums.json", dict(entries, best={step: entries["checkpoints"]["8"]})
    )
    tampered = storage.read_json(f"{workdir}/checksums.json")
    try:
        with pytest.raises(checkpoint.CheckpointError, match=f"best/{step} .*cannot be restored"):
            runs_lib.load(workdir)
        assert not storage.exists(f"{workdir}/{rundir.CORRUPT_DIR}")
        assert storage.exists(f"{workdir}/best/{step}/commit_success.txt")
        assert storage.read_json(f"{workdir}/checksums.json") == tampered
    finally:
        storage.write_json(f"{workdir}/checksums.json", recorded)
