"""One experiment as 2 JAX processes on localhost (2 CPU devices each, gloo collectives) equals
the same experiment in one process with 4 devices: same losses, parameters and results.

The 2-process run trains (checkpointing mid-way and at the end), then a second pair of fresh
processes restores the best checkpoint and evaluates it. Every process runs `lenggen.main` under
an audit hook that records what it writes in the workdir, so the test also shows that only
process 0 writes results and logs (process 1 writes only through Orbax).
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = pathlib.Path(__file__).parents[2]
TIMEOUT_S = 300  # for the 3 runs
# Parity: a few steps learn the answer template ("The answer is Yes .") but not the parity, so
# the model is right on some examples and wrong on others (both evaluation paths run).
ARGUMENTS = (
    "--config=configs/base.py:task=parity,pe=t5,smoke=true",
    "--config.task.options.max_train_length=4",
    "--config.task.options.max_test_length=6",
    "--config.task.options.num_train=64",
    # 18 validation and 10 test records in global batches of 8: each split's last batch is
    # 2 records and 6 filler rows, so process 1's share of it is filler only.
    "--config.task.options.num_validation=18",
    "--config.task.options.num_test_per_length=5",
    "--config.train.num_steps=16",
    "--config.train.batch_size=8",
    "--config.train.learning_rate=1e-2",
    "--config.train.log_every=4",
    "--config.train.eval_every=8",
    "--config.train.checkpoint_every=8",
    "--config.eval.batch_size=8",
    "--config.eval.max_new_tokens=8",
    "--config.eval.num_samples=1000",  # every failed example: compares every greedy output
    "--config.mesh.shape=(4,1)",
)
RESULTS = (
    "config.json",
    "metrics.jsonl",
    "checksums.json",
    "results.json",
    "samples.jsonl",
    "accuracy_vs_length.png",
)
ORBAX_DIRS = ("checkpoints", "best")

# Runs lenggen.main, appending every path it opens for writing, creates, renames or removes
# inside WORKDIR to LOG (one line each, relative to WORKDIR). Python-level writes only: Orbax's
# array files are written by TensorStore (C++), its directories by Python.
_AUDITED_MAIN = """
import os, runpy, sys
workdir, log = os.path.realpath(sys.argv.pop(1)), open(sys.argv.pop(1), "w", buffering=1)
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT
def record(path):
    if isinstance(path, (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(path))
        if path == workdir or path.startswith(workdir + os.sep):
            log.write(os.path.relpath(path, workdir) + "\\n")
def hook(event, args):
    if event == "open" and (set(str(args[1] or "")) & set("wax+") or
                            args[1] is None and args[2] & WRITES):
        record(args[0])
    elif event in ("os.rename", "os.link", "os.symlink"):
        record(args[0]); record(args[1])
    elif event in ("os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate"):
        record(args[0])
sys.addaudithook(hook)
runpy.run_module("lenggen.main", run_name="__main__", alter_sys=True)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment(devices: int) -> dict:
    # The same XLA flags for both runs (tests/conftest.py's level 0: compile time dominates).
    flags = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    return dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")


class _Run:
    """`lenggen.main` started as `num_processes` processes (4 CPU devices in all)."""

    def __init__(
        self,
        tag: str,
        logs: pathlib.Path,
        workdir: str,
        data_dir: str,
        *,
        mode: str,
        num_processes: int,
    ):
        self.tag = tag
        port = _free_port()
        self.processes, self.outputs, self.audits = [], [], []
        for process_id in range(num_processes):
            audit = logs / f"{tag}.{process_id}.audit"
            command = [
                sys.executable,
                "-c",
                _AUDITED_MAIN,
                workdir,
                str(audit),
                *ARGUMENTS,
                f"--workdir={workdir}",
                f"--config.data.dir={data_dir}",
                f"--mode={mode}",
            ]
            if num_processes > 1:
                command += [
                    f"--coordinator_address=127.0.0.1:{port}",
                    f"--num_processes={num_processes}",
                    f"--process_id={process_id}",
                ]
            output = logs / f"{tag}.{process_id}.log"
            with open(output, "w") as handle:
                self.processes.append(
                    subprocess.Popen(
                        command,
                        cwd=REPO,
                        env=_environment(4 // num_processes),
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                    )
                )
            self.outputs.append(output)
            self.audits.append(audit)

    def finish(self, deadline: float) -> list[tuple[str, list[str]]]:
        """Waits (killing what is left at `deadline`); returns each process's (output, paths it
        wrote in the workdir), or fails the test with the ends of their outputs."""
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=max(deadline - time.monotonic(), 1)))
            except subprocess.TimeoutExpired:
                codes.append("timed out")
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        if codes != [0] * len(self.processes):
            tails = "\n".join(
                f"--- {path.name} (exit {code}):\n{path.read_text()[-3000:]}"
                for path, code in zip(self.outputs, codes, strict=True)
            )
            pytest.fail(f"{self.tag}: processes exited with {codes}\n{tails}")
        return [
            (output.read_text(), audit.read_text().split())
            for output, audit in zip(self.outputs, self.audits, strict=True)
        ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(single-process workdir, 2-process workdir, per-process (stdout, writes) of each run)."""
    root = tmp_path_factory.mktemp("multiprocess")
    single, double = str(root / "single"), str(root / "double")
    started = time.perf_counter()
    deadline = time.monotonic() + TIMEOUT_S
    # The reference runs beside the 2-process training: each prepares its own copy of the data.
    reference = _Run(
        "single",
        root,
        single,
        str(root / "data-single"),
        mode="train_and_evaluate",
        num_processes=1,
    )
    training = _Run("train", root, double, str(root / "data"), mode="train", num_processes=2)
    outputs = dict(reference=reference.finish(deadline), train=training.finish(deadline))
    # Nothing evaluated yet: the results below come from fresh processes that restore.
    assert not os.path.exists(os.path.join(double, "results.json"))
    outputs["evaluate"] = _Run(
        "evaluate", root, double, str(root / "data"), mode="evaluate", num_processes=2
    ).finish(deadline)
    print(f"the runs took {time.perf_counter() - started:.1f} s")
    return single, double, outputs


def _events(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def _restore(workdir: str, directory: str) -> tuple[int, dict]:
    """The newest state in WORKDIR/DIRECTORY, restored onto one device of this process."""
    manager = ocp.CheckpointManager(os.path.join(workdir, directory))
    step = manager.latest_step()
    manager.close()
    path = os.path.join(workdir, directory, str(step), "default")
    checkpointer = ocp.StandardCheckpointer()
    # The 2-process checkpoint names devices this process lacks: give the layout to restore to.
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
        checkpointer.metadata(path).item_metadata,
    )
    return step, checkpointer.restore(path, target)


def test_losses_and_validation_equal_the_single_process_run(runs):
    single, double, _ = runs
    expected, got = _events(single), _events(double)
    assert [(e["event"], e["step"]) for e in got] == [(e["event"], e["step"]) for e in expected]
    assert [e["step"] for e in got if e["event"] == "train"] == [4, 8, 12, 16]
    for mine, theirs in zip(got, expected, strict=True):
        assert set(mine) == set(theirs)
        for key in set(mine) - {"event", "step", "steps_per_second", "wall_time"}:
            np.testing.assert_allclose(
                mine[key],
                theirs[key],
                rtol=1e-6,
                atol=1e-7,
                err_msg=f"{key} of {mine['event']} at step {mine['step']}",
            )


@pytest.mark.parametrize("directory", ORBAX_DIRS)
def test_checkpointed_state_equals_the_single_process_run(runs, directory):
    single, double, _ = runs
    (step, expected), (got_step, got) = _restore(single, directory), _restore(double, directory)
    assert got_step == step and (directory == "best" or step == 16)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    leaves = jax.tree.leaves(got["params"])
    assert sum(leaf.size for leaf in leaves) > 10_000  # the whole model, not a stub
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), got, expected)


def test_results_and_samples_equal_the_single_process_run(runs):
    single, double, _ = runs
    for name in ("results.json", "samples.jsonl", "config.json"):
        with open(os.path.join(single, name)) as a, open(os.path.join(double, name)) as b:
            # The runs differ in config.data.dir alone (their own copies of the same data),
            # and in their provenance (processes, command, times).
            got, expected = b.read(), a.read().replace("data-single", "data")
        if name.endswith(".json"):
            got, expected = json.loads(got), json.loads(expected)
            assert got.pop("provenance")["devices"]["processes"] == 2
            assert expected.pop("provenance")["devices"]["processes"] == 1
        assert got == expected, name
    with open(os.path.join(double, "results.json")) as handle:
        splits = json.load(handle)["splits"]
    sizes = {
        name: sum(e["n"] for e in split["by_length"].values()) for name, split in splits.items()
    }
    assert sizes == {"validation": 18, "test": 10}
    # Both teacher forcing's verdicts and the decoded failures count.
    assert 0 < splits["validation"]["overall"] < 1
    with open(os.path.join(double, "samples.jsonl")) as handle:
        samples = [json.loads(line) for line in handle]
    wrong = round(sum((1 - splits[name]["overall"]) * size for name, size in sizes.items()))
    assert len(samples) == wrong > 0


def test_only_process_zero_writes_results_and_logs(runs):
    single, double, outputs = runs

    def files(workdir):  # TensorBoard's event files are named by time and host
        names = set(os.listdir(workdir))
        events = {n for n in names if n.startswith("events.out.tfevents.")}
        assert events, workdir
        return names - events

    assert files(double) == files(single) == set(RESULTS + ORBAX_DIRS)
    for run in ("train", "evaluate"):
        (stdout_0, writes_0), (stdout_1, writes_1) = outputs[run]
        names_0 = {path.split(os.sep)[0] for path in writes_0}
        assert names_0 >= (
            {"config.json", "metrics.jsonl", "checksums.json"}
            if run == "train"
            else {"results.json", "samples.jsonl", "accuracy_vs_length.png"}
        )
        # Besides Orbax's files, process 1 acknowledges the shared-workdir check's token
        # (an atomic write: a temporary file, then the rename; "." is its makedirs).
        names_1 = {path.split(os.sep)[0] for path in writes_1}
        acknowledged = {n for n in names_1 if ".shared-" in n}
        assert names_1 - acknowledged - {"."} <= set(ORBAX_DIRS), writes_1
        assert any(n.startswith(".shared-") and n.endswith(".seen-1") for n in acknowledged)
        # Progress (train) and the results table (evaluate) are printed by process 0 alone.
        shown = "step 16/16" if run == "train" else "overall"
        assert shown in stdout_0 and shown not in stdout_1
