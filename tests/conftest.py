"""Test-wide setup, before JAX starts its backend.

- 4 fake CPU devices, so sharding tests need no subprocess; single-device tests build meshes
  over `jax.devices()[:1]`.
- the CPU platform only (JAX_PLATFORMS=cpu; libtpu is installed for tests/aot).
- XLA's CPU backend at optimisation level 0: tests run tiny models whose time is compile time,
  and level 0 compiles a train step ~8x faster (measured: 12.9 s -> 1.4 s). Results are compared
  within one process, so the level never changes what a test asserts.
- one persistent compilation cache per session, shared by the pytest-xdist workers and the
  `lenggen.main` subprocesses the tests start (they inherit the environment): the suite
  compiles the same tiny programs many times. JAX keys the cache by program, flags and
  versions, so it changes no result; the process that made it deletes it at the end.
"""

import os
import shutil
import tempfile

# The test extra installs libtpu (for the deviceless TPU compiles of tests/aot), and with it
# JAX tries to start a TPU backend on this CPU host, printing libtpu's warnings in every
# process. The CPU platform only: topologies.get_topology_desc still loads libtpu to compile.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

_FLAGS = {
    "--xla_force_host_platform_device_count": "4",
    "--xla_backend_optimization_level": "0",
}
for _flag, _value in _FLAGS.items():
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}={_value}".strip()

# Set in the pytest process that starts first (the xdist controller), before it starts workers.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lenggen-tests-jax-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


# The files that take longest (module fixtures that train, sweeps and runs in subprocesses),
# collected first: pytest-xdist's --dist loadfile hands out files in collection order, and in
# the default order the long top-level files came last, leaving one worker idle at the end.
_LONGEST_FIRST = (
    "tests/train/test_loop.py",
    "tests/train/test_every_task.py",
    "tests/reliability/test_interruptions.py",
    "tests/test_sweep.py",
    "tests/reliability/test_bad_input.py",
    "tests/train/test_multiprocess.py",
    "tests/test_report.py",
    "tests/gcs/test_runs_on_gcs.py",
    "tests/model/test_scan_layers.py",
    "tests/model/test_cope.py",
    "tests/test_main.py",
    "tests/test_config_files.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: index for index, path in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable
