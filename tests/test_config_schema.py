"""Config validation: each bad value gets one clear error naming the key and what is expected."""

import pytest

from configs import base
from lenggen import config_schema


@pytest.fixture
def config():
    return base.get_config("task=copy,pe=nope,seed=1")


def test_base_config_is_the_papers_recipe_and_validates(config):
    config_schema.validate(config, num_devices=1)
    assert (
        config.model.num_layers,
        config.model.d_model,
        config.model.num_heads,
        config.model.d_kv,
        config.model.d_ff,
    ) == (12, 768, 12, 64, 3072)
    assert config.model.dropout_rate == 0.1 and config.model.dtype == "float32"
    train = config.train
    assert (
        train.batch_size,
        train.num_steps,
        train.learning_rate,
        train.end_learning_rate,
        train.warmup_fraction,
        train.weight_decay,
        train.grad_clip_norm,
    ) == (64, 40_000, 3e-5, 1e-7, 0.06, 0.05, 1.0)
    assert (train.adam_b1, train.adam_b2, train.adam_eps) == (0.9, 0.999, 1e-8)
    assert train.eval_every == 2_000
    assert base.PAPER_SEEDS == (256788, 234054, 146317)
    assert config.eval.max_new_tokens == 256
    assert config.model.pe.t5.to_dict() == {"num_buckets": 32, "max_distance": 128}
    assert config.model.pe.rotary.fraction == 0.25 and config.model.pe.rotary.base == 10000.0
    assert config.model.pe.ape.kind == "sinusoidal" and config.model.pe.ape.max_length == 16384


def test_every_task_and_pe_builds_a_valid_config():
    from lenggen import tasks
    from lenggen.model import positional

    for task in tasks.names():
        for pe in positional.names():
            config_schema.validate(base.get_config(f"task={task},pe={pe}"), num_devices=1)


def test_unknown_names_in_the_config_string():
    with pytest.raises(ValueError, match="Unknown task 'kopy'. Valid tasks: addition, copy"):
        base.get_config("task=kopy")
    with pytest.raises(
        config_schema.ConfigError, match="Unknown positional encoding 'rope'. Valid: "
    ):
        base.get_config("pe=rope")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: setattr(c.model.pe, "name", "rope"), "config.model.pe.name='rope'. Valid: "),
        (lambda c: setattr(c.task, "name", "kopy"), "Unknown task 'kopy'"),
        (lambda c: c.task.options.update(num_train=0), "num_train=0"),
        (lambda c: c.task.options.update(min_length=30), "min_length"),
        (
            lambda c: setattr(c.model, "num_heads", 0),
            "config.model.num_heads=0: expected a positive integer",
        ),
        (lambda c: setattr(c.model, "dropout_rate", 1.5), "dropout_rate=1.5"),
        (lambda c: setattr(c.model, "dtype", "float8"), "config.model.dtype='float8'"),
        (lambda c: setattr(c.model, "attention_impl", "flash9"), "attention_impl='flash9'"),
        (  # a JSON-read config may hold an integer where a bool belongs
            lambda c: (c.model.__delitem__("scan_layers"), setattr(c.model, "scan_layers", 1)),
            "config.model.scan_layers=1: expected True or False",
        ),
        (lambda c: setattr(c.train, "warmup_fraction", 1.0), "warmup_fraction=1.0"),
        (lambda c: setattr(c.train, "learning_rate", 0.0), "learning_rate=0.0"),
        (lambda c: setattr(c.eval, "metric", "bleu"), "config.eval.metric='bleu'"),
        (
            lambda c: setattr(c.train, "batch_size", 6),
            "config.train.batch_size=6 is not divisible by the mesh's data axis (4 devices)",
        ),
        (lambda c: setattr(c.mesh, "shape", (3, 1)), "needs 3 devices but 4 are available"),
        (lambda c: setattr(c.mesh, "shape", (-1, 3)), "4 is not divisible by 3"),
        (lambda c: setattr(c.mesh, "shape", (2, 2, 1)), "expected 2 entries"),
    ],
)
def test_impossible_values_are_refused(config, edit, message):
    config.unlock()
    edit(config)
    with pytest.raises(config_schema.ConfigError) as error:
        config_schema.validate(config, num_devices=4)
    assert message in str(error.value)


def test_unknown_option_keys_of_plug_ins_are_refused(config):
    config.task.options["colour"] = 1
    with pytest.raises(config_schema.ConfigError, match="Unknown key.*colour.*Valid keys"):
        config_schema.validate(config, num_devices=1)
    config = base.get_config("task=copy,pe=rotary")
    config.model.pe.rotary["theta"] = 1.0
    with pytest.raises(config_schema.ConfigError, match=r"theta in config.model.pe.rotary"):
        config_schema.validate(config, num_devices=1)


def test_smoke_switch_shrinks_every_task_and_keeps_it_valid():
    from lenggen import tasks

    for task in tasks.names():
        config = base.get_config(f"task={task},smoke=true")
        config_schema.validate(config, num_devices=1)
        assert config.model.num_layers == 2 and config.train.num_steps == 20
        options = config.task.options
        # SCAN is the whole grammar's command set: it has no size to shrink but its split.
        assert options.get("num_train", 256) == 256
        assert all(options[k] == 2 for k in options if k.startswith("num_test")), task


def test_randomized_positions_are_configured_and_checked(config):
    assert config.model.pe.randomized_max_position == 0  # off by default, as in the paper
    config.model.pe.randomized_max_position = 512
    for metric in ("exact", "teacher_forced"):  # greedy decoding samples positions too
        config.eval.metric = metric
        config_schema.validate(config, num_devices=1)
    config.model.pe.randomized_max_position = -3
    with pytest.raises(
        config_schema.ConfigError, match="randomized_max_position must be a non-neg"
    ):
        config_schema.validate(config, num_devices=1)
