"""Test-wide setup, before JAX starts its backend.

- 4 fake CPU devices, so sharding tests need no subprocess; single-device tests build meshes
  over `jax.devices()[:1]`.
- the CPU platform only (JAX_PLATFORMS=cpu; libtpu is installed for tests/aot).
- XLA's CPU backend at optimisation level 0: tests run tiny models whose time is compile time,
  and level 0 compiles a train step ~8x faster (measured: 12.9 s -> 1.4 s). Results are compared
  within one process, so the level never changes what a test asserts.
"""

import os

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
