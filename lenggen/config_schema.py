"""Builds the config sections owned by plug-ins (tasks, PEs) and validates a whole config.

Tasks and PEs declare their own options (`tasks.default_options`, `positional.default_options`);
the config copies them, so `--config.task.options.X=...` only accepts keys the task knows. The
validation here runs once, before any data is generated or anything compiled, and raises one
`ConfigError` that names the key, the value received and what is expected.
"""

import math

import ml_collections

from lenggen import sharding, tasks
from lenggen.evaluate.exact_match import METRICS as EVAL_METRICS
from lenggen.model import attention, positional
from lenggen.model.attention import reference
from lenggen.model.decoder import DTYPES, PRECISIONS
from lenggen.model.positional import randomized
from lenggen.train import optimizer


class ConfigError(ValueError):
    """A config value that cannot work, found before anything runs."""


def task_section(name: str) -> ml_collections.ConfigDict:
    """`{name, options}` with the task's default options (raises for an unknown task)."""
    return ml_collections.ConfigDict(dict(name=name, options=tasks.default_options(name)))


def pe_section(name: str) -> ml_collections.ConfigDict:
    """`{name, <pe>: options..., randomized_max_position}` with every PE's default options, so
    switching `name` by an override needs no other edit. `randomized_max_position` = M > 0
    trains on randomized positions from [0, M) (Ruoss et al. 2023) with any PE; 0 is off."""
    if name not in positional.names():
        raise ConfigError(
            f"Unknown positional encoding {name!r}. Valid: {', '.join(positional.names())}."
        )
    section = {pe: positional.default_options(pe) for pe in positional.names()}
    section[randomized.CONFIG_KEY] = 0
    return ml_collections.ConfigDict(dict(name=name, **section))


def shrink_for_smoke_run(config: ml_collections.ConfigDict) -> None:
    """Shrinks model, data and schedule so any experiment runs on a laptop CPU in seconds."""
    config.model.update(num_layers=2, d_model=32, num_heads=2, d_kv=16, d_ff=64)
    config.train.update(batch_size=8, num_steps=20, log_every=5, eval_every=10, checkpoint_every=10)
    config.eval.update(batch_size=16, max_new_tokens=64)
    # Tasks name their sizes num_train, num_validation and num_test_per_<bucket>.
    for key in config.task.options:
        if key == "num_train":
            config.task.options[key] = 256
        elif key == "num_validation":
            config.task.options[key] = 32
        elif key.startswith("num_test"):
            config.task.options[key] = 2


# (key, accepts a finite value, what is expected).
_OPTIMIZER_RANGES = (
    ("learning_rate", lambda v: v > 0, "a finite number > 0"),
    ("end_learning_rate", lambda v: v >= 0, "a finite number >= 0"),
    ("warmup_fraction", lambda v: 0 <= v < 1, "a value in [0, 1)"),
    ("weight_decay", lambda v: v >= 0, "a finite number >= 0"),
    ("adam_b1", lambda v: 0 <= v < 1, "a value in [0, 1)"),
    ("adam_b2", lambda v: 0 <= v < 1, "a value in [0, 1)"),
    ("adam_eps", lambda v: v > 0, "a finite number > 0"),
    ("grad_clip_norm", lambda v: v > 0, "a finite number > 0 (the global gradient norm's cap)"),
)


def _check_pe_options(pe_config, pe: str, model) -> None:
    """Builds PE `pe` from its options, so every value its module checks is checked here; the
    chosen PE is also checked against the model's widths (e.g. rotary's rotated dims)."""
    try:
        module = positional.build(
            {"name": pe, pe: pe_config[pe]}, num_heads=model.num_heads, d_model=model.d_model
        )
        if pe == pe_config.name:
            module.check_widths(d_model=model.d_model, head_dim=model.d_kv)
    except (ValueError, TypeError) as error:
        raise ConfigError(
            f"config.model.pe.{pe}: {' '.join(str(error).split())}. Defaults: "
            f"{positional.default_options(pe)}."
        ) from None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_known_keys(section, allowed: dict, where: str) -> None:
    unknown = sorted(set(section) - set(allowed))
    _require(
        not unknown,
        f"Unknown key(s) {', '.join(unknown)} in {where}. "
        f"Valid keys: {', '.join(sorted(allowed))}.",
    )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raises ConfigError for the first value that cannot work; returns None otherwise."""
    # Task: known name, known options, values the task accepts.
    _require(
        config.task.name in tasks.names(),
        f"Unknown task {config.task.name!r}. Valid tasks: {', '.join(tasks.names())}.",
    )
    _check_known_keys(
        config.task.options,
        tasks.default_options(config.task.name),
        f"config.task.options of task {config.task.name!r}",
    )
    try:
        tasks.get(config.task.name, **config.task.options.to_dict())
    except ValueError as error:
        raise ConfigError(f"config.task.options: {error}") from None

    # Model.
    model = config.model
    for key in ("num_layers", "d_model", "num_heads", "d_kv", "d_ff"):
        _require(
            isinstance(model[key], int) and model[key] >= 1,
            f"config.model.{key}={model[key]!r}: expected a positive integer.",
        )
    try:
        reference.check_dropout_rate(model.dropout_rate)
    except (TypeError, ValueError):
        raise ConfigError(
            f"config.model.dropout_rate={model.dropout_rate!r}: expected a value in [0, 1)."
        ) from None
    _require(
        model.dtype in DTYPES,
        f"config.model.dtype={model.dtype!r}: expected one of {', '.join(DTYPES)}.",
    )
    _require(
        model.precision in PRECISIONS,
        f"config.model.precision={model.precision!r}: expected one of {', '.join(PRECISIONS)} "
        "('highest': full float32, the paper's).",
    )
    _require(
        isinstance(model.get("scan_layers", False), bool),
        f"config.model.scan_layers={model.get('scan_layers')!r}: expected True or False.",
    )
    _require(
        model.attention_impl in attention.names(),
        f"config.model.attention_impl={model.attention_impl!r}: expected one of "
        f"{', '.join(attention.names())}.",
    )
    pe_name = model.pe.name
    _require(
        pe_name in positional.names(),
        f"Unknown positional encoding config.model.pe.name={pe_name!r}. "
        f"Valid: {', '.join(positional.names())}.",
    )
    _check_known_keys(
        {k for k in model.pe if k not in ("name", randomized.CONFIG_KEY)},
        dict.fromkeys(positional.names()),
        "config.model.pe",
    )
    try:
        randomized.max_position_of(model.pe)  # raises on a malformed M
    except ValueError as error:
        raise ConfigError(f"config.{error}") from None
    for pe in positional.names():
        if pe in model.pe:
            _check_known_keys(model.pe[pe], positional.default_options(pe), f"config.model.pe.{pe}")
            _check_pe_options(model.pe, pe, model)

    # Seed: numpy's and JAX's generators take a non-negative integer below 2**32.
    _require(
        _is_int(config.seed) and 0 <= config.seed < 2**32,
        f"config.seed={config.seed!r}: expected an integer in [0, 2**32).",
    )

    # Training schedule.
    train = config.train
    for key in (
        "batch_size",
        "num_steps",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "checkpoints_to_keep",
    ):
        _require(
            isinstance(train[key], int) and train[key] >= 1,
            f"config.train.{key}={train[key]!r}: expected a positive integer.",
        )
    # Optimizer values: every one a finite number in its range (NaN fails every comparison).
    for key, accepts, what in _OPTIMIZER_RANGES:
        value = train[key]
        _require(
            _is_number(value) and math.isfinite(value) and accepts(value),
            f"config.train.{key}={value!r}: expected {what}.",
        )
    _require(
        train.weight_decay_mask in optimizer.DECAY_RULES,
        f"config.train.weight_decay_mask={train.weight_decay_mask!r}: expected one of "
        f"{', '.join(optimizer.DECAY_RULES)}.",
    )

    # Evaluation.
    _require(
        config.eval.metric in EVAL_METRICS,
        f"config.eval.metric={config.eval.metric!r}: expected one of {', '.join(EVAL_METRICS)}.",
    )
    for key in ("batch_size", "max_new_tokens"):
        _require(
            isinstance(config.eval[key], int) and config.eval[key] >= 1,
            f"config.eval.{key}={config.eval[key]!r}: expected a positive integer.",
        )

    # Mesh and batch divisibility.
    try:
        data, _ = sharding.resolve_mesh_shape(config.mesh.shape, num_devices)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    for section in ("train", "eval"):
        batch = config[section].batch_size
        _require(
            batch % data == 0,
            f"config.{section}.batch_size={batch} is not divisible by the mesh's data axis "
            f"({data} devices). Use a multiple of {data} or change config.mesh.shape.",
        )

    # Metrics sinks (lenggen/train/metrics_log.py).
    _require(
        isinstance(config.log.tensorboard, bool),
        f"config.log.tensorboard={config.log.tensorboard!r}: expected true or false.",
    )
    _require(
        isinstance(config.log.wandb_project, str),
        f"config.log.wandb_project={config.log.wandb_project!r}: expected a W&B project name, "
        "or '' for none.",
    )
