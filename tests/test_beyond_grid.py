"""Tests of configs/grids/beyond.py: its runs, their configs, and the methods it names."""

import os

import pytest

from lenggen import grid
from lenggen.model import positional

GRID = os.path.join(grid.REPO, "configs", "grids", "beyond.py")
HERE = "abacus+coupling+nope+t5+alibi+rotary+ape"  # the methods registered on every branch


def _runs(arg: str) -> dict[str, grid.Run]:
    return {run.name: run for run in grid.load_grid(f"{GRID}:{arg}")}


def test_run_names_and_order():
    runs = _runs(f"pes={HERE}")
    names = list(runs)
    # long addition first, then Copy-Repeat; the pes in the given order; rotary+yarn after them.
    assert names[0] == "long_addition/abacus/256788"
    assert names[7] == "long_addition/rotary+yarn/256788"
    assert names[8] == "copy_repeat/abacus/256788"
    assert len(names) == 16 and len(_runs(f"pes={HERE},yarn=false")) == 14


def test_the_default_names_every_method():
    """The default runs the paper's five and every method after it: all of them once merged,
    and on a branch without some of them the error names the missing ones."""
    everything = ("nope", "t5", "alibi", "rotary", "ape", "abacus", "coupling", "cope", "kerple")
    missing = [pe for pe in everything if pe not in positional.names()]
    if missing:
        with pytest.raises(grid.GridError, match="unknown positional encoding"):
            grid.load_grid(GRID)
    else:
        runs = grid.load_grid(GRID)
        assert {run.name.split("/")[1] for run in runs} == {*everything, "rotary+yarn"}


@pytest.mark.parametrize(
    "name",
    ["long_addition/abacus/256788", "long_addition/coupling/256788", "copy_repeat/t5/256788"],
)
def test_configs_resolve(name):
    config = grid.resolve_config(_runs(f"pes={HERE},yarn=false")[name])
    if name.startswith("long_addition"):
        options = config.task.options
        assert (options.max_train_digits, options.max_test_digits) == (10, 30)
        assert options.digit_order == "lsb_first" and config.train.num_steps == 2_000
    else:
        assert config.train.num_steps == 1_000 and config.task.options.max_test_length == 16
    assert config.model.pe.abacus.offset_max == config.model.pe.coupling.offset_max == 30
    # Coupling's long addition is zero-padded (its paper's format), the others' is not.
    assert config.task.options.get("zero_pad", False) == (name == "long_addition/coupling/256788")
    assert (config.model.num_layers, config.model.d_model) == (2, 128)  # cpu_mini's model


def test_yarn_variant_overrides():
    run = _runs("pes=nope")["long_addition/rotary+yarn/256788"]
    overrides = dict(run.overrides)
    assert overrides["model.pe.rotary.scaling"] == "yarn"
    assert overrides["model.pe.rotary.scaling_factor"] == 2.5
    assert overrides["model.pe.rotary.original_max_position"] == 40


def test_empty_grid_is_refused():
    with pytest.raises(grid.GridError, match="pes= is empty and yarn=false"):
        grid.load_grid(f"{GRID}:pes=,yarn=false")
