"""Test-wide setup: 4 fake CPU devices, so sharding tests need no subprocess.

Set before JAX starts its backend; single-device tests build meshes over `jax.devices()[:1]`.
"""

import os

_FLAG = "--xla_force_host_platform_device_count"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}=4".strip()
