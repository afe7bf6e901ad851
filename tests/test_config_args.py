import pytest

from lenggen import config_args


def test_defaults_when_no_argument():
    assert config_args.parse(None, task="copy", seed=1) == {"task": "copy", "seed": 1}
    assert config_args.parse("", task="copy", seed=1) == {"task": "copy", "seed": 1}


def test_values_take_the_type_of_their_default():
    values = config_args.parse(
        "seed=7, smoke=true,rate=0.5,task=reverse", task="copy", seed=1, smoke=False, rate=1.0
    )
    assert values == {"task": "reverse", "seed": 7, "smoke": True, "rate": 0.5}
    assert isinstance(values["seed"], int) and isinstance(values["rate"], float)


@pytest.mark.parametrize(
    "arg, message",
    [
        ("seed", "'seed' is not key=value"),
        ("colour=red", "Unknown config argument 'colour'. Valid arguments: seed, task."),
        ("seed=abc", "seed='abc': expected int"),
        ("seed=1,seed=2", "'seed' is given twice"),
    ],
)
def test_malformed_arguments_name_the_problem(arg, message):
    with pytest.raises(config_args.ConfigArgumentError, match=message.replace("(", r"\(")):
        config_args.parse(arg, task="copy", seed=1)


def test_boolean_parsing_rejects_other_words():
    with pytest.raises(config_args.ConfigArgumentError, match="expected a boolean"):
        config_args.parse("smoke=maybe", smoke=False)


def test_load_file_runs_a_file_as_a_named_module(tmp_path):
    path = tmp_path / "some_config.py"
    path.write_text("VALUE = 6 * 7\n")
    module = config_args.load_file(str(path), "lenggen_test_module")
    assert module.VALUE == 42 and module.__name__ == "lenggen_test_module"
