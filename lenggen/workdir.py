"""The workdir guard, now part of the run-directory module (lenggen/rundir/files.py).

Kept so that `from lenggen import workdir` keeps working; new code uses lenggen.rundir.
"""

from lenggen.rundir.files import (  # noqa: F401 - re-exported names
    CONFIG_FILE,
    EVALUATION_KEYS,
    IGNORED_KEYS,
    METRICS_FILE,
    PLOT_FILE,
    RESULTS_FILE,
    RUN_DIRECTORIES,
    SAMPLES_FILE,
    TRAINING_KEYS,
    RunDir,
    WorkdirConflictError,
    WorkdirError,
    check,
    claim,
    differing_keys,
    prepare,
    read_config,
    read_events,
    record,
    trim_metrics,
)
from lenggen.rundir.storage import write_lines as write_lines_atomic  # noqa: F401
