"""Starts JAX's multi-controller runtime (`jax.distributed`) when a run spans processes.

Explicit flags win (`--coordinator_address`, `--num_processes`, `--process_id`: anywhere,
e.g. launch/multiprocess_local.sh). Otherwise, where the environment announces several
processes, `jax.distributed.initialize()` starts without arguments and JAX's own cluster
detection finds the coordinator, the process count and this process's id:

- Cloud TPU VMs (`gcloud compute tpus tpu-vm ssh NAME --worker=all --command=...`). The shell
  gcloud opens sets no TPU_* variable; JAX (its GceTpuCluster) reads the slice from the VM's
  metadata server instead: `agent-worker-number` (this worker) and `worker-network-endpoints`
  (every worker, worker 0 first, which hosts the coordinator), times MEGASCALE_NUM_SLICES
  (multislice; from the environment or the metadata's `tpu-env`). lenggen asks the same
  server whether the slice has more than one worker, and only on a Google Compute Engine VM
  (its DMI product name), so no other machine makes a network request.
- TPUs on GKE: TPU_WORKER_HOSTNAMES (or TPU_PROCESS_ADDRESSES), which GKE sets in the pod.
- SLURM jobs with several tasks; Open MPI (mpirun).
A single process starts nothing.
"""

import glob
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

import jax

# The GCE metadata server's instance attributes (JAX reads GCE_METADATA_IP the same way).
_METADATA_URL = "http://{host}/computeMetadata/v1/instance/attributes/{key}"
_DMI_PRODUCT_NAME = "/sys/class/dmi/id/product_name"

Metadata = Callable[[str], str | None]


class DistributedFlagsError(ValueError):
    """The multi-process flags are incomplete or inconsistent, or the cluster is unreadable."""


def on_tpu_vm(dmi_product_name: str = _DMI_PRODUCT_NAME, dev: str = "/dev") -> bool:
    """True on a Google Compute Engine VM with TPU devices, i.e. a Cloud TPU VM worker, from
    local files only, so other machines never wait for a metadata server."""
    try:
        with open(dmi_product_name) as handle:
            if not handle.read().strip().startswith("Google"):
                return False
    except OSError:
        return False
    return bool(
        glob.glob(os.path.join(dev, "accel*")) or glob.glob(os.path.join(dev, "vfio", "[0-9]*"))
    )


def gce_metadata(
    key: str, environ: Mapping[str, str] = os.environ, *, tries: int = 3, timeout: float = 5.0
) -> str | None:
    """The VM's instance attribute `key`, or None if the VM has no such attribute (404).

    Raises:
      DistributedFlagsError: the metadata server did not answer in `tries` attempts.
    """
    host = environ.get("GCE_METADATA_IP", "metadata.google.internal")
    request = urllib.request.Request(
        _METADATA_URL.format(host=host, key=key), headers={"Metadata-Flavor": "Google"}
    )
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read().decode()
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            reason = f"HTTP {error.code}"
        except OSError as error:  # URLError, timeouts, refused connections
            reason = str(getattr(error, "reason", error))
        if attempt + 1 < tries:
            time.sleep(0.5)
    raise DistributedFlagsError(
        f"The GCE metadata server ({host}) did not answer for '{key}' ({reason}): cannot tell "
        "how many workers this Cloud TPU slice has. Pass --coordinator_address, "
        "--num_processes and --process_id, or set TPU_SKIP_MDS_QUERY=1 for a single process."
    )


def _tpu_env_value(tpu_env: str | None, key: str) -> str | None:
    """`key` in the metadata's `tpu-env` attribute (lines like `MEGASCALE_NUM_SLICES: '2'`)."""
    for line in (tpu_env or "").splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip() == key:
            return value.strip().strip("'\"")
    return None


def tpu_vm_processes(environ: Mapping[str, str], metadata: Metadata) -> tuple[str, int] | None:
    """(accelerator type, processes) of the Cloud TPU VM slice this VM belongs to, or None when
    the VM is no TPU VM (no `accelerator-type` attribute). One process per worker and slice."""
    accelerator = metadata("accelerator-type")
    if accelerator is None:
        return None
    endpoints = metadata("worker-network-endpoints") or ""
    workers = max(1, len([e for e in endpoints.split(",") if e.strip()]))
    slices = environ.get("MEGASCALE_NUM_SLICES") or _tpu_env_value(
        metadata("tpu-env"), "MEGASCALE_NUM_SLICES"
    )
    return accelerator.strip(), workers * int(slices or 1)


def detected_cluster(
    environ: Mapping[str, str] = os.environ,
    *,
    is_tpu_vm: Callable[[], bool] = on_tpu_vm,
    metadata: Metadata | None = None,
) -> str | None:
    """The multi-process environment this process runs in, or None for a single process.

    Args:
      is_tpu_vm, metadata: the TPU VM check and the metadata lookup (`gce_metadata` by default);
        tests pass fakes.
    Raises:
      DistributedFlagsError: on a TPU VM whose metadata server does not answer.
    """
    gke_hosts = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES", "")
    if len([h for h in gke_hosts.split(",") if h.strip()]) > 1:
        return "Cloud TPU on GKE"
    if "TPU_SKIP_MDS_QUERY" not in environ and is_tpu_vm():
        lookup = metadata or (lambda key: gce_metadata(key, environ))
        slice_ = tpu_vm_processes(environ, lookup)
        if slice_ is not None and slice_[1] > 1:
            return f"Cloud TPU VM {slice_[0]}, {slice_[1]} processes"
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
    is_tpu_vm: Callable[[], bool] = on_tpu_vm,
    metadata: Metadata | None = None,
) -> str:
    """Starts jax.distributed if the run is multi-process; returns what was done, for the log.

    Raises:
      DistributedFlagsError: some but not all of the three flags, a process id out of range,
        or an unreadable Cloud TPU metadata server.
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
    cluster = detected_cluster(environ, is_tpu_vm=is_tpu_vm, metadata=metadata)
    if cluster is None:
        return "single process"
    start()  # JAX's own detection reads the coordinator, process count and id.
    return f"process {jax.process_index()} of {jax.process_count()} ({cluster})"
