"""SIGTERM stops training at a step boundary: one process by a Python flag; several processes at
one step that JAX's preemption service agrees on, even when only one process got the signal."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

from lenggen.train import preemption
from tests.reliability import runs


class _SyncPoint:
    """A stand-in for multihost_utils.reached_preemption_sync_point: True at call `at`."""

    def __init__(self, at: int | None):
        self.at, self.calls = at, []

    def __call__(self, step: int) -> bool:
        self.calls.append(step)
        return step == self.at


def test_several_processes_number_their_calls_and_leave_sigterm_to_jax():
    before = signal.getsignal(signal.SIGTERM)
    sync = _SyncPoint(at=3)
    with preemption.Watch(process_count=2, sync_point=sync) as watch:
        # No Python handler: it would replace the notifier jax.distributed installed.
        assert signal.getsignal(signal.SIGTERM) is before
        assert sync.calls == [0]  # registered before the resume, so a notice then counts
        assert [watch.requested() for _ in range(4)] == [False, False, True, False]
    assert sync.calls == [0, 1, 2, 3, 4]
    assert signal.getsignal(signal.SIGTERM) is before


def test_one_process_sets_a_flag_on_sigterm_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    sync = _SyncPoint(at=None)
    with preemption.Watch(process_count=1, sync_point=sync) as watch:
        assert not watch.requested()
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not watch.requested() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watch.requested() and watch.requested()  # stays set
    assert sync.calls == []  # no JAX preemption service for one process
    assert signal.getsignal(signal.SIGTERM) is before


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path):
    """Real processes: only process 1 is signalled; both checkpoint one step and exit 75."""
    workdir, port = str(tmp_path / "run"), _free_port()
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=("--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0"),
    )
    processes, outputs = [], []
    for process_id in range(2):
        outputs.append(open(tmp_path / f"process_{process_id}.log", "w+"))
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lenggen.main",
                    f"--config={runs.CONFIG_FILE}:steps=400",
                    f"--workdir={workdir}",
                    f"--config.data.dir={tmp_path / 'data'}",
                    "--config.train.checkpoint_every=1000",
                    f"--coordinator_address=127.0.0.1:{port}",
                    "--num_processes=2",
                    f"--process_id={process_id}",
                ],
                cwd=runs.REPO,
                env=env,
                stdout=outputs[-1],
                stderr=subprocess.STDOUT,
            )
        )
    try:
        deadline = time.monotonic() + 240
        while "step 3/400" not in open(outputs[0].name).read():
            assert time.monotonic() < deadline and processes[0].poll() is None, open(
                outputs[0].name
            ).read()[-3000:]
            time.sleep(0.1)
        processes[1].send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    texts = [open(output.name).read() for output in outputs]
    assert codes == [preemption.EXIT_CODE] * 2, "\n---\n".join(t[-3000:] for t in texts)
    notices = [re.search(r"Preempted \(SIGTERM\) at step (\d+)/400", text) for text in texts]
    assert all(notices), texts[0][-3000:]
    steps = {int(notice[1]) for notice in notices}
    assert len(steps) == 1, steps  # the same step on both processes
    (step,) = steps
    assert 3 <= step < 400
    # That step is the newest complete checkpoint (checkpoint_every=1000: saved for the stop).
    assert runs.complete_steps(workdir) == [step]
