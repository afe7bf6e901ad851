"""Fuzzing the parsers of user input: any input parses or raises ValueError with a message.

`config_args.parse` reads the text after the colon of `--config=FILE:ARGS`; `tasks.get` takes a
task name and options from the config. Neither may fail with another exception type (a
TypeError or KeyError would reach the user as a traceback instead of one clear line).
"""

import math
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lenggen import config_args, tasks

# Derandomized: the same examples on every run of one Python version (they differ between
# versions, which is how CI on 3.13 found the `name` collision below).
_SETTINGS = settings(max_examples=300, deadline=None, database=None, derandomize=True)

_DEFAULTS = {"task": "copy", "pe": "nope", "seed": 7, "smoke": False, "rate": 0.5}
_NAMES = st.sampled_from(sorted(_DEFAULTS)) | st.text(max_size=6)
_VALUES = (
    st.text(max_size=8)
    | st.integers().map(str)
    | st.floats().map(repr)
    | st.sampled_from(
        ["true", "False", "yes", "0", "", " ", "=", ",", "1e999", "nan", "1_000", "٣"]
    )
)


def _pieces() -> st.SearchStrategy[str]:
    """`key=value` pieces, sometimes without '=', joined by ',' (the grammar and its errors)."""
    piece = st.tuples(_NAMES, st.sampled_from(["=", "", "=="]), _VALUES).map("".join)
    return st.lists(piece, max_size=4).map(",".join)


def _check_parse(arg) -> None:
    try:
        values = config_args.parse(arg, **_DEFAULTS)
    except ValueError as error:
        assert isinstance(error, config_args.ConfigArgumentError) and str(error)
        return
    assert set(values) == set(_DEFAULTS)
    for key, default in _DEFAULTS.items():
        assert type(values[key]) is type(default), (key, values[key])


@_SETTINGS
@given(st.text(max_size=40) | _pieces())
def test_config_arguments_parse_or_raise_a_config_argument_error(arg):
    _check_parse(arg)


@_SETTINGS
@given(st.none() | st.integers() | st.binary(max_size=8) | st.lists(st.text(max_size=3)))
def test_config_arguments_of_other_types_raise_a_config_argument_error(arg):
    _check_parse(arg)


_WORD = st.text(string.ascii_letters + string.digits + "_-./", min_size=1, max_size=8)


@_SETTINGS
@given(
    task=_WORD,
    pe=_WORD,
    seed=st.integers(-(10**30), 10**30),
    smoke=st.booleans(),
    rate=st.floats(allow_nan=False, allow_infinity=False),
)
def test_config_arguments_round_trip(task, pe, seed, smoke, rate):
    written = {"task": task, "pe": pe, "seed": seed, "smoke": smoke, "rate": rate}
    text = ",".join(
        f"{key}={value!r}" if key == "rate" else f"{key}={value}" for key, value in written.items()
    )
    parsed = config_args.parse(text, **_DEFAULTS)
    assert parsed == written and math.copysign(1, parsed["rate"]) == math.copysign(1, rate)


_OPTION_VALUES = (
    st.integers(-(10**12), 10**12)
    | st.booleans()
    | st.text(max_size=5)
    | st.floats()
    | st.none()
    | st.lists(st.integers(), max_size=2)
)


@_SETTINGS
@given(name=st.sampled_from(tasks.names()) | st.text(max_size=8), data=st.data())
def test_task_options_build_a_task_or_raise_a_value_error(name, data):
    known = sorted(tasks.default_options(name)) if name in tasks.names() else []
    keys = data.draw(
        st.lists(st.sampled_from(known) | _WORD, max_size=3, unique=True)
        if known
        else st.lists(_WORD, max_size=2, unique=True)
    )
    options = {key: data.draw(_OPTION_VALUES) for key in keys}
    try:
        task = tasks.get(name, **options)
    except ValueError as error:
        assert str(error)
        return
    # Built: it is the named task and kept every option given.
    assert task.name == name
    assert all(task.options()[key] == value for key, value in options.items())


def test_a_config_argument_may_be_called_arg():
    # parse()'s own parameter is positional-only, so no argument name can collide with it.
    assert config_args.parse("arg=3,seed=2", arg=1, seed=0) == {"arg": 3, "seed": 2}


@pytest.mark.parametrize("task_name", ["copy", ""])
def test_a_task_option_called_name_raises_a_value_error(task_name):
    # Found by the fuzzer above on Python 3.13: `name` collided with get()'s own parameter.
    with pytest.raises(ValueError, match="Unknown"):
        tasks.get(task_name, name="copy")
