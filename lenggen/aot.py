"""A run's programs compiled ahead of time for devices this host need not have.

`topology('v5e:2x2')` gives the abstract devices of a TPU slice (libtpu's compiler, no TPU
needed: `jax.experimental.topologies`); `build(...)` lays the train step, teacher-forced
evaluation and a KV-cache decode step over a mesh of them, from ShapeDtypeStructs carrying
their shardings; `compile_program` runs the real compiler and reads back per-device bytes
(`memory_analysis`) and FLOPs (`cost_analysis`; its `optimal_seconds` is not used: it came back
negative for TPU targets). The model is built for the mesh's platform, so a TPU mesh gets the TPU
kernels (pallas_flash as Mosaic), whatever this host's backend.
"""

import dataclasses
import functools
import os
import re
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lenggen import chips, sharding
from lenggen.evaluate import steps as eval_steps
from lenggen.model import decoder, kv_cache
from lenggen.train import loop
from lenggen.train import optimizer as optimizer_lib
from lenggen.train import state as state_lib

MODES = ("train", "evaluate", "decode")
LOCAL = ("", "cpu")
_TOPOLOGY_NAME = re.compile(r"^(v\d+[a-z]*):(\d+(x\d+){1,2})$")
# The Mosaic (TPU Pallas) kernel's custom call in compiled HLO.
MOSAIC_CALL = 'custom_call_target="tpu_custom_call"'


@dataclasses.dataclass(frozen=True)
class Topology:
    """The devices a plan compiles for.

    name: as given ('v5e:2x2'), or 'cpu' for this host's devices.
    devices: the (abstract, for a TPU topology) devices, one per JAX device.
    chip: the generation's published figures (None for local devices).
    devices_per_chip: JAX devices per chip (1: megacore chips, v4 and v5p, are one device).
    hosts: processes the slice runs as (a slice of several hosts is a multi-host run).
    """

    name: str
    devices: tuple
    chip: chips.Chip | None
    devices_per_chip: int
    hosts: int

    @property
    def num_chips(self) -> int:
        return len(self.devices) // self.devices_per_chip


def topology(name: str) -> Topology:
    """The devices of topology `name` ('v5e:2x2', 'v4:2x2x2', ...; '' or 'cpu': local devices).

    Raises ValueError with one line naming the bad name and the expected form.
    """
    if name in LOCAL:
        devices = tuple(jax.devices())
        return Topology("cpu", devices, None, 1, len({d.process_index for d in devices}))
    expected = (
        f"expected '<generation>:<dims>' with a generation of {', '.join(chips.CHIPS)} "
        "(e.g. v5e:2x2, v4:2x2x1, v5e:4x4), or 'cpu'"
    )
    if not _TOPOLOGY_NAME.match(name) or name.split(":")[0] not in chips.CHIPS:
        raise ValueError(f"unknown topology {name!r}: {expected}")
    # libtpu takes a machine-wide lock (/tmp/libtpu_lockfile) meant for processes driving
    # real TPUs; compiling touches none, so several compiling processes may share it.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    chip = chips.chip_of_topology(name)
    # libtpu lists each TensorCore of a megacore chip (v4, v5p) as a device unless asked for
    # the megacore configuration, which is what a TPU VM's JAX sees (one device per chip).
    options = dict(chip_config_name="megacore") if chip.megacore else {}
    try:
        devices = tuple(
            topologies.get_topology_desc(platform="tpu", topology_name=name, **options).devices
        )
    except ImportError as error:
        raise ValueError(
            f"topology {name!r} needs libtpu ({error}): pip install -e '.[tpu]'"
        ) from None
    except Exception as error:  # noqa: BLE001 - libtpu raises its runtime error on bad names.
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"unknown topology {name!r} ({first}): {expected}") from None
    num_chips = chips.chips_in_topology(name)
    return Topology(
        name,
        devices,
        chip,
        max(1, len(devices) // num_chips),
        len({d.process_index for d in devices}),
    )


@dataclasses.dataclass(frozen=True)
class Lengths:
    """Sequence widths of the programs: training batches, teacher-forced evaluation batches,
    and the KV cache of decoding (prompt plus decoding budget)."""

    train: int
    evaluate: int
    cache: int


@dataclasses.dataclass
class Program:
    """One compiled program's report (bytes and FLOPs are per device)."""

    name: str
    compiled: bool
    error: str | None = None
    compile_seconds: float = 0.0
    # CPU seconds of this process (all compiler threads) for lowering and compiling: what the
    # compile costs, whatever else the host runs (wall time depends on its load).
    compile_cpu_seconds: float = 0.0
    # A scanned stack's second compile, for its FLOPs (lenggen.plan; 0 when none).
    cost_compile_seconds: float = 0.0
    cost_compile_cpu_seconds: float = 0.0
    argument_bytes: int = 0
    output_bytes: int = 0
    alias_bytes: int = 0
    temp_bytes: int = 0
    code_bytes: int = 0
    flops: float = 0.0
    bytes_accessed: float = 0.0
    mosaic_kernels: int = 0

    @property
    def peak_bytes(self) -> int:
        """Bytes live at once on a device: arguments, outputs not aliased to (donated)
        arguments, temporaries and the program's code."""
        return (
            self.argument_bytes
            + self.output_bytes
            - self.alias_bytes
            + self.temp_bytes
            + self.code_bytes
        )


def _abstract(tree, shardings):
    """ShapeDtypeStructs of `tree` carrying `shardings` (a tree of the same shape, or one)."""
    if isinstance(shardings, NamedSharding):
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shardings), tree
        )
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def batch_spec(batch_size: int, length: int) -> dict:
    """The ShapeDtypeStructs of a loader batch (`loader.pack`'s keys and dtypes)."""
    row, column = (batch_size, length), (batch_size,)
    spec = jax.ShapeDtypeStruct
    return dict(
        tokens=spec(row, jnp.int32),
        positions=spec(row, jnp.int32),
        valid=spec(row, jnp.bool_),
        loss_mask=spec(row, jnp.float32),
        source_length=spec(column, jnp.int32),
        length=spec(column, jnp.int32),
        example_mask=spec(column, jnp.bool_),
        index=spec(column, jnp.int32),
    )


def cache_shardings(cache, mesh: Mesh, scan_layers: bool = False):
    """KV-cache layout: batch on `data`; keys/values' heads on `model` where they divide. With
    `scan_layers` every leaf has a leading layer axis, left unsharded."""
    model_size = mesh.shape["model"]
    layer = (None,) if scan_layers else ()

    def place(leaf) -> NamedSharding:
        ndim = leaf.ndim - len(layer)
        if ndim == 4:  # [batch, max_length, heads, head_dim]
            heads = "model" if leaf.shape[len(layer) + 2] % model_size == 0 else None
            return NamedSharding(mesh, P(*layer, "data", None, heads, None))
        if ndim == 2:  # [batch, max_length]
            return NamedSharding(mesh, P(*layer, "data"))
        return NamedSharding(mesh, P())

    return jax.tree.map(place, cache)


def _decode_step(params, cache, tokens, positions, *, model):
    """One greedy KV-cache step: `tokens`/`positions [batch, 1]` -> next tokens `[batch]` and
    the cache (as `decoding.greedy_decode`'s loop body)."""
    logits, state = model.apply(
        {"params": params, "cache": cache},
        tokens,
        positions,
        jnp.ones(tokens.shape, jnp.bool_),
        decode=True,
        mutable=["cache"],
    )
    return jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32), state["cache"]


def build(
    config: ml_collections.ConfigDict,
    vocab_size: int,
    lengths: Lengths,
    mesh: Mesh,
    modes=MODES,
    scan_unroll: int = 1,
) -> dict[str, tuple[Callable, tuple]]:
    """`{mode: (jitted function, abstract arguments)}` for the run `config` describes.

    The model is built for `sharding.platform(mesh)`; shardings are the run's (lenggen.train.
    loop): the state laid out by the partition rules, batches split over `data`.
    `scan_unroll`: layers per loop iteration of a scanned stack (`Decoder.scan_unroll`).
    """
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; expected some of {MODES}")
    model = decoder.Decoder.from_config(
        config.model, vocab_size, platform=sharding.platform(mesh), scan_unroll=scan_unroll
    )
    optimizer = optimizer_lib.make_optimizer(config.train)
    schedule = optimizer_lib.learning_rate_schedule(config.train)
    layout = state_lib.layout(model, optimizer, mesh, lengths.train)
    batch_sharding, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    params = _abstract(layout.abstract["params"], layout.param_sharding)
    programs = {}
    if "train" in modes:
        key = jax.eval_shape(lambda: jax.random.key(0))
        args = (
            layout.restore_target(),
            _abstract(batch_spec(config.train.batch_size, lengths.train), batch_sharding),
            jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=replicated),
        )
        programs["train"] = (
            state_lib.jit_train_step(model, optimizer, schedule, layout, mesh),
            args,
        )
    if "evaluate" in modes:
        fn = jax.jit(
            functools.partial(
                eval_steps.teacher_forced_correct,
                model=model,
                max_new_tokens=config.eval.max_new_tokens,
            ),
            in_shardings=(layout.param_sharding, batch_sharding),
            out_shardings=batch_sharding,
        )
        batch = _abstract(batch_spec(config.eval.batch_size, lengths.evaluate), batch_sharding)
        programs["evaluate"] = (fn, (params, batch))
    if "decode" in modes:
        batch_size = config.eval.batch_size
        cache = jax.eval_shape(
            functools.partial(kv_cache.init_cache, model, batch_size, lengths.cache)
        )
        cache_sharding = cache_shardings(cache, mesh, model.scan_layers)
        token = jax.ShapeDtypeStruct((batch_size, 1), jnp.int32, sharding=batch_sharding)
        fn = jax.jit(
            functools.partial(_decode_step, model=model),
            in_shardings=(layout.param_sharding, cache_sharding, batch_sharding, batch_sharding),
            out_shardings=(batch_sharding, cache_sharding),
            donate_argnums=(1,),
        )
        programs["decode"] = (fn, (params, _abstract(cache, cache_sharding), token, token))
    return programs


def compile_program(name: str, fn: Callable, args: tuple, mesh: Mesh) -> Program:
    """Lowers (under `mesh`, as the run traces) and compiles `fn(*args)`; a failure is
    reported, not raised."""
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        with jax.set_mesh(mesh):
            lowered = fn.lower(*args)
        compiled = lowered.compile()
    except Exception as error:  # noqa: BLE001 - any compiler rejection is the report.
        message = " ".join(str(error).split())[:2000]
        return Program(
            name,
            False,
            f"{type(error).__name__}: {message}",
            time.perf_counter() - start,
            time.process_time() - cpu_start,
        )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older JAX: one dict per program
        cost = cost[0] if cost else {}
    return Program(
        name,
        True,
        None,
        seconds,
        cpu_seconds,
        argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        alias_bytes=int(memory.alias_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        code_bytes=int(memory.generated_code_size_in_bytes),
        flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
        mosaic_kernels=compiled.as_text().count(MOSAIC_CALL),
    )


def loop_unroll(num_layers: int) -> int:
    """The unroll of a second compile that shows a scanned stack's per-layer cost: the
    smallest divisor of `num_layers` above 1 (1 for a single layer, which needs none)."""
    return next((u for u in range(2, num_layers + 1) if num_layers % u == 0), 1)


def count_every_layer(once: Program, unrolled: Program, num_layers: int, unroll: int) -> None:
    """Corrects `once`'s FLOPs and bytes accessed in place, for a scanned stack.

    XLA's cost analysis counts a while loop's body once, whatever its trip count: a scanned
    stack's program reports the layers as one. Compiled with `unroll` layers per iteration
    it reports `unroll` of them, so one layer costs (unrolled - once) / (unroll - 1) and the
    whole stack once + (num_layers - 1) x that. (If a compiler counted the trips, the two
    would agree and nothing would change.)
    """
    if unroll < 2 or not (once.compiled and unrolled.compiled):
        return
    for field in ("flops", "bytes_accessed"):
        layer = (getattr(unrolled, field) - getattr(once, field)) / (unroll - 1)
        setattr(once, field, getattr(once, field) + (num_layers - 1) * layer)


def state_bytes(
    config: ml_collections.ConfigDict, vocab_size: int, lengths: Lengths, mesh: Mesh
) -> dict[str, int]:
    """Per-device bytes of the parameters and of the optimizer state in the run's layout."""
    model = decoder.Decoder.from_config(config.model, vocab_size, platform=sharding.platform(mesh))
    layout = state_lib.layout(
        model, optimizer_lib.make_optimizer(config.train), mesh, lengths.train
    )
    return dict(
        params=loop.state_bytes_per_device(layout.abstract["params"], layout.sharding["params"]),
        optimizer=loop.state_bytes_per_device(
            layout.abstract["opt_state"], layout.sharding["opt_state"]
        ),
    )
