"""The device mesh and how parameters, optimizer state and batches are laid out on it.

Parameters carry logical axis names (`nn.with_logical_partitioning` in the model); the rules
below map them to the mesh axes (data, model): Megatron-style tensor parallelism over heads, the
feed-forward width and the vocabulary on `model`, the batch on `data`.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "model")
# Logical axis name -> mesh axis (None = replicated).
LOGICAL_RULES = (
    ("batch", "data"),
    ("vocab", "model"),
    ("heads", "model"),
    ("mlp", "model"),
    ("embed", None),
    ("kv", None),
    ("relpos_buckets", None),
    ("positions", None),
    ("layers", None),  # the scanned stack's layer axis (config.model.scan_layers)
)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_int(value) -> bool:
    """An integer, not a bool (numpy's integers too)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def resolve_mesh_shape(shape, num_devices: int) -> tuple[int, int]:
    """The (data, model) mesh shape with a -1 entry resolved against `num_devices`.

    Raises ValueError naming `config.mesh.shape` and what would fit.
    """
    _require(
        isinstance(shape, (tuple, list)) and all(_is_int(s) for s in shape),
        f"config.mesh.shape={shape!r}: expected a tuple of {len(MESH_AXES)} integers for axes "
        f"{MESH_AXES}, e.g. --config.mesh.shape='(-1, 1)'.",
    )
    shape = tuple(int(s) for s in shape)
    _require(
        len(shape) == len(MESH_AXES),
        f"config.mesh.shape={shape}: expected {len(MESH_AXES)} entries for axes {MESH_AXES}.",
    )
    _require(
        shape.count(-1) <= 1 and all(s == -1 or s >= 1 for s in shape),
        f"config.mesh.shape={shape}: entries must be positive, with at most one -1.",
    )
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        _require(
            num_devices % known == 0,
            f"config.mesh.shape={shape} cannot use {num_devices} devices: {num_devices} is not "
            f"divisible by {known}.",
        )
        shape = tuple(num_devices // known if s == -1 else s for s in shape)
    _require(
        math.prod(shape) == num_devices,
        f"config.mesh.shape={shape} needs {math.prod(shape)} devices but {num_devices} are "
        "available. Set --config.mesh.shape to match (e.g. '(-1, 1)').",
    )
    return shape


def make_mesh(shape, devices=None) -> Mesh:
    """A (data, model) mesh over `devices` (default: all), with `shape` from the config.

    Axis types are Auto: the model is written for GSPMD propagation, not explicit sharding.
    """
    devices = jax.devices() if devices is None else list(devices)
    resolved = resolve_mesh_shape(shape, len(devices))
    return jax.make_mesh(
        resolved,
        MESH_AXES,
        axis_types=(AxisType.Auto,) * len(resolved),
        devices=devices,
    )


def platform(mesh: Mesh) -> str:
    """The platform ('cpu', 'gpu', 'tpu') of the devices `mesh` holds: what its programs are
    compiled for, which need not be this process's default backend (a CPU host compiles for an
    abstract TPU topology in lenggen.plan)."""
    return mesh.devices.flat[0].platform


def device_memory_stats(mesh: Mesh) -> dict:
    """`memory_stats()` of the mesh's first addressable device ({} where it reports none: CPU,
    or a mesh of abstract topology devices, which no process can address)."""
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    if not local:
        return {}
    try:
        return local[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - abstract (topology) devices raise; they report nothing.
        return {}


def _axis_size(mesh: Mesh, axis) -> int:
    names = axis if isinstance(axis, tuple) else (axis,)
    return int(np.prod([mesh.shape[name] for name in names]))


def param_shardings(boxed_params: Any, mesh: Mesh) -> Any:
    """NamedShardings for a (possibly abstract) param tree still holding logical boxes.

    A dimension the rules put on a mesh axis it does not divide (e.g. a word-level vocabulary
    of 103 over 2 model shards) is replicated instead.
    """
    mesh_specs = nn.logical_to_mesh(nn.get_partition_spec(boxed_params), LOGICAL_RULES)
    shapes = nn.unbox(boxed_params)

    def fit(spec: P, leaf) -> NamedSharding:
        entries = tuple(spec) + (None,) * (len(leaf.shape) - len(spec))
        fitted = [
            axis if axis is None or dim % _axis_size(mesh, axis) == 0 else None
            for axis, dim in zip(entries, leaf.shape)
        ]
        return NamedSharding(mesh, P(*fitted))

    return jax.tree.map(fit, mesh_specs, shapes, is_leaf=lambda x: isinstance(x, P))


def state_shardings(abstract_state: dict, param_sharding: Any, mesh: Mesh) -> dict:
    """Shardings for the train state `{step, params, opt_state}`.

    Every sub-tree of the optimizer state shaped like the params (Adam's moments) is laid out
    like the params; everything else (step counters) is replicated.
    """
    params_structure = jax.tree.structure(abstract_state["params"])
    replicated = NamedSharding(mesh, P())

    def like_params(subtree) -> bool:
        return jax.tree.structure(subtree) == params_structure

    def sharding_for(subtree):
        if like_params(subtree):
            return param_sharding
        if np.ndim(subtree) != 0:
            raise ValueError(
                f"Optimizer state leaf of shape {subtree.shape} is neither a scalar nor shaped "
                "like the params; add a sharding rule for it in lenggen/sharding.py."
            )
        return replicated

    opt_sharding = jax.tree.map(sharding_for, abstract_state["opt_state"], is_leaf=like_params)
    return dict(step=replicated, params=param_sharding, opt_state=opt_sharding)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch arrays `[batch, ...]` are split over the data axis."""
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
