r"""The cost of one per-step preemption check across processes, alone: a process_allgather of the
SIGTERM flag (what lenggen did before) vs JAX's reached_preemption_sync_point (what it does now).

Starts N processes on this machine (jax.distributed over 127.0.0.1, CPU), each timing CALLS
calls of both checks after a warm-up, and prints process 0's median and p90 per call:

  python -m benchmarks.preemption_check_cost [--processes=2] [--calls=300]

The checks run between no computations here; in training the allgather also waits for the step
in flight (its collective queues behind it), which this does not show.
"""

import os
import socket
import statistics
import subprocess
import sys
import time

import numpy as np


def _worker(port: int, processes: int, process_id: int, calls: int) -> None:
    import jax
    from jax.experimental import multihost_utils

    jax.distributed.initialize(f"127.0.0.1:{port}", processes, process_id)
    flag = np.asarray(False)
    timings = {}
    for name, check in (
        ("process_allgather", lambda step: bool(np.any(multihost_utils.process_allgather(flag)))),
        ("reached_preemption_sync_point", multihost_utils.reached_preemption_sync_point),
    ):
        for step in range(20):  # warm-up (the allgather compiles once)
            check(step)
        seconds = []
        for step in range(20, 20 + calls):
            start = time.perf_counter()
            check(step)
            seconds.append(time.perf_counter() - start)
        timings[name] = seconds
        multihost_utils.sync_global_devices(name)
    if process_id == 0:
        for name, seconds in timings.items():
            quantiles = statistics.quantiles(seconds, n=10)
            print(
                f"{name}: median {statistics.median(seconds) * 1e6:.1f} us, "
                f"p90 {quantiles[-1] * 1e6:.1f} us per call ({calls} calls, {processes} "
                "processes)"
            )
    jax.distributed.shutdown()


def main(argv: list[str]) -> None:
    options = dict(arg.lstrip("-").split("=") for arg in argv[1:])
    processes, calls = int(options.get("processes", 2)), int(options.get("calls", 300))
    if "process_id" in options:
        _worker(int(options["port"]), processes, int(options["process_id"]), calls)
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.preemption_check_cost",
                f"--processes={processes}",
                f"--calls={calls}",
                f"--port={port}",
                f"--process_id={i}",
            ],
            env=env,
        )
        for i in range(processes)
    ]
    sys.exit(max(child.wait() for child in children))


if __name__ == "__main__":
    main(sys.argv)
