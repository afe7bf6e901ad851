"""The workdir guard, now part of the run-directory module (lenggen/rundir/files.py).

Kept so that `from lenggen import workdir` keeps working; new code uses lenggen.rundir.
"""

from lenggen.rundir.files import (  # noqa: F401 - re-exported names
    CONFIG_FILE,
    IGNORED_KEYS,
    METRICS_FILE,
    PLOT_FILE,
    RESULTS_FILE,
    SAMPLES_FILE,
    TRAINING_KEYS,
    RunDir,
    WorkdirConflictError,
    check,
    claim,
    differing_keys,
    trim_metrics,
)
from lenggen.rundir.storage import write_lines as write_lines_atomic  # noqa: F401
