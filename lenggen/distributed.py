"""Starts JAX's multi-controller runtime (`jax.distributed`) when a run spans processes.

Explicit flags win (`--coordinator_address`, `--num_processes`, `--process_id`: anywhere,
e.g. launch/multiprocess_local.sh); otherwise JAX's own cluster detection is used where an
environment announces several processes: Cloud TPU VMs with several workers, SLURM jobs with
several tasks, Open MPI (mpirun). A single process starts nothing.
"""

import os
from collections.abc import Mapping

import jax


class DistributedFlagsError(ValueError):
    """The multi-process flags are incomplete or inconsistent."""


def detected_cluster(environ: Mapping[str, str] = os.environ) -> str | None:
    """The multi-process environment this process runs in, or None for a single process."""
    if len([h for h in environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        return "Cloud TPU"
    if int(environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in environ:
        return "SLURM"
    if int(environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "Open MPI"
    return None


def initialize(
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    environ: Mapping[str, str] = os.environ,
    *,
    start=jax.distributed.initialize,
) -> str:
    """Starts jax.distributed if the run is multi-process; returns what was done, for the log.

    Raises:
      DistributedFlagsError: some but not all of the three flags, or a process id out of range.
    """
    given = [coordinator_address is not None, num_processes is not None, process_id is not None]
    if any(given):
        if not all(given):
            raise DistributedFlagsError(
                "--coordinator_address, --num_processes and --process_id go together: got "
                f"coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, "
                f"process_id={process_id!r}."
            )
        if not 0 <= process_id < num_processes:
            raise DistributedFlagsError(
                f"--process_id={process_id} is not in [0, --num_processes={num_processes})."
            )
        start(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
        return f"process {process_id} of {num_processes} (coordinator {coordinator_address})"
    cluster = detected_cluster(environ)
    if cluster is None:
        return "single process"
    start()  # JAX reads the coordinator, process count and id from the cluster itself.
    return f"process {jax.process_index()} of {jax.process_count()} ({cluster})"
