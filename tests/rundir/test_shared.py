"""The multi-host shared-workdir check with 2 real JAX processes (gloo on localhost): separate
directories (a per-host disk) fail fast with one line on each process; SIGINT stops the wait."""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).parents[2]
ARGUMENTS = (
    "--config=configs/base.py:task=parity,pe=nope,smoke=true",
    "--config.task.options.max_train_length=4",
    "--config.task.options.max_test_length=6",
    "--config.task.options.num_train=64",
    "--config.task.options.num_validation=8",
    "--config.task.options.num_test_per_length=4",
    "--config.train.num_steps=4",
    "--config.train.batch_size=8",
    "--config.mesh.shape=(2,1)",
)
DEADLINE_S = 4


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(root: pathlib.Path, workdirs: list[str], deadline_s: float) -> list:
    """lenggen.main as 2 processes, process i with `workdirs[i]` (1 CPU device each)."""
    port = _free_port()
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        LENGGEN_SHARED_CHECK_S=str(deadline_s),
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
    )
    processes = []
    for index, workdir in enumerate(workdirs):
        log = open(root / f"process{index}.log", "w+")
        processes.append(
            (
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "lenggen.main",
                        *ARGUMENTS,
                        f"--workdir={workdir}",
                        f"--config.data.dir={root / 'data'}",
                        f"--coordinator_address=127.0.0.1:{port}",
                        "--num_processes=2",
                        f"--process_id={index}",
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    return processes


def _finish(processes, timeout: float) -> list[tuple[int, str]]:
    results = []
    for process, log in processes:
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = "hung"
        log.seek(0)
        results.append((code, log.read()))
    return results


def _lenggen_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("lenggen: ")]


def test_separate_workdirs_fail_fast_with_one_line_on_every_process(tmp_path):
    # The same path on two hosts' own disks: here, two directories.
    workdirs = [str(tmp_path / "host0" / "run"), str(tmp_path / "host1" / "run")]
    started = time.monotonic()
    results = _finish(_start(tmp_path, workdirs, DEADLINE_S), timeout=180)
    elapsed = time.monotonic() - started
    (code0, out0), (code1, out1) = results
    assert (code0, code1) == (2, 2), f"{out0[-3000:]}\n---\n{out1[-3000:]}"
    assert _lenggen_lines(out1) == [
        f"lenggen: Process 1 of 2 cannot see {workdirs[1]} as process 0 does (no "
        + _lenggen_lines(out1)[0].split("(no ")[1]
    ]
    assert f"after {DEADLINE_S} s): every process needs the same workdir" in out1
    assert f"Process(es) [1] of 2 did not confirm seeing {workdirs[0]}" in out0
    assert len(_lenggen_lines(out0)) == 1 and "Traceback" not in out0 + out1
    # Nothing trained: no config, checkpoints or metrics on either "disk"; the token is gone.
    for workdir in workdirs:
        assert not os.path.exists(workdir) or os.listdir(workdir) == []
    assert elapsed < 120


def test_sigint_stops_the_wait_on_every_process(tmp_path):
    # SIGTERM belongs to jax.distributed's preemption notifier on these multi-process runs (it
    # stays installed: tests/train/test_preemption.py), so a person's Ctrl-C is what stops the
    # wait at once.
    workdirs = [str(tmp_path / "host0" / "run"), str(tmp_path / "host1" / "run")]
    processes = _start(tmp_path, workdirs, deadline_s=600)
    token_dir = pathlib.Path(workdirs[0])
    deadline = time.monotonic() + 120
    while not (token_dir.exists() and any(token_dir.iterdir())):  # both are now waiting
        assert time.monotonic() < deadline, "process 0 never wrote its token"
        time.sleep(0.2)
    time.sleep(1.0)
    sent = time.monotonic()
    for process, _ in processes:
        process.send_signal(signal.SIGINT)
    results = _finish(processes, timeout=60)
    assert time.monotonic() - sent < 30
    for code, output in results:
        assert code == 128 + signal.SIGINT, output[-3000:]
        assert _lenggen_lines(output) == [
            "lenggen: Stopped by SIGINT while checking that every process sees the workdir; "
            "nothing was written but the check's files."
        ]
