"""The run directory: every file a run writes or reads, local or on GCS (gs://).

storage.py  paths (local or gs://), atomic whole-file writes, fail-fast reachability check.
files.py    RunDir: the files of one run (config, metrics, results, samples, plot,
            checksums, checkpoint directories) and the guard against mixing experiments.
lock.py     the exclusive workdir lock (local disks and GCS).
shared.py   the start-up check that every process of a run sees the same workdir.
"""

from lenggen.rundir.files import (
    CHECKPOINT_DIRS,
    CHECKSUMS_FILE,
    CONFIG_FILE,
    CORRUPT_DIR,
    METRICS_FILE,
    PLOT_FILE,
    RESULTS_FILE,
    SAMPLES_FILE,
    RunDir,
    WorkdirConflictError,
    WorkdirError,
    differing_keys,
    json_line,
)
from lenggen.rundir.lock import LOCK_FILE, WorkdirLock, WorkdirLockedError
from lenggen.rundir.shared import NotSharedError
from lenggen.rundir.storage import StorageError, check_reachable, is_gcs, resolve

__all__ = [
    "CHECKPOINT_DIRS",
    "CHECKSUMS_FILE",
    "CONFIG_FILE",
    "CORRUPT_DIR",
    "LOCK_FILE",
    "METRICS_FILE",
    "PLOT_FILE",
    "RESULTS_FILE",
    "SAMPLES_FILE",
    "NotSharedError",
    "RunDir",
    "StorageError",
    "WorkdirConflictError",
    "WorkdirError",
    "WorkdirLock",
    "WorkdirLockedError",
    "check_reachable",
    "differing_keys",
    "is_gcs",
    "json_line",
    "resolve",
]
