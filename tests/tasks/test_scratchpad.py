"""Tests of lenggen/tasks/scratchpad.py: the official worked examples, every configuration, errors.

The official strings below were worked out by hand from the official code
(McGill-NLP/length-generalization: S2SAdditionDataInstanceProcessor with `stripped: true` and the
markers of configs/data/minimal_template.jsonnet, rendered by
DataInstanceProcessorWithUnifiedScratchpad.create_scratchpad_str and __call__), spaces included.
"""

import re

import pytest

from lenggen import tasks
from lenggen.tasks import TaskOptionError, addition, scratchpad

# Compute 5 3 7 + 2 8 ? (docs/paper.md's addition example), scratchpad "full", character for
# character.
OFFICIAL_537_28 = (
    "Thinking step by step:  "
    "in 7, 8 comp 7 + 8 + carry = 15 + 0 = 15 out 5 [ carry: 1 ] re 5 3 + 2  # "
    "in 3, 2 comp 3 + 2 + carry = 5 + 1 = 6 out 6 [ carry: 0 ] re 5 + 0  # "
    "in 5, 0 comp 5 + 0 + carry = 5 + 0 = 5 out 5 [ carry: 0 ] re  +   . Thus,  "
    "The answer is 5 6 5."
)
# The official processor's own example (its __main__: a = b = 53726), with the final-carry step.
OFFICIAL_53726_53726 = (
    "Thinking step by step:  "
    "in 6, 6 comp 6 + 6 + carry = 12 + 0 = 12 out 2 [ carry: 1 ] re 5 3 7 2 + 5 3 7 2  # "
    "in 2, 2 comp 2 + 2 + carry = 4 + 1 = 5 out 5 [ carry: 0 ] re 5 3 7 + 5 3 7  # "
    "in 7, 7 comp 7 + 7 + carry = 14 + 0 = 14 out 4 [ carry: 1 ] re 5 3 + 5 3  # "
    "in 3, 3 comp 3 + 3 + carry = 6 + 1 = 7 out 7 [ carry: 0 ] re 5 + 5  # "
    "in 5, 5 comp 5 + 5 + carry = 10 + 0 = 10 out 0 [ carry: 1 ] re  +   # "
    "in 0, 0 comp 0 + 0 + carry = 0 + 1 = 1 out 1 [ carry: 0 ] re  +   . Thus,  "
    "The answer is 1 0 7 4 5 2."
)
# The official steps of 537 + 28 as (input, computation, output, variables, remaining).
OFFICIAL_STEPS_537_28 = [
    ("7, 8", "7 + 8 + carry = 15 + 0 = 15", "5", ["carry: 1"], "5 3 + 2"),
    ("3, 2", "3 + 2 + carry = 5 + 1 = 6", "6", ["carry: 0"], "5 + 0"),
    ("5, 0", "5 + 0 + carry = 5 + 0 = 5", "5", ["carry: 0"], " + "),
]
# The official include_* flags (input, computation, output, variables, remaining) per name.
FLAGS = {
    "full": (1, 1, 1, 1, 1),
    "minimal": (0, 1, 1, 0, 0),
    "no_input": (0, 1, 1, 1, 1),
    "no_computation": (1, 0, 1, 1, 1),
    "no_output": (1, 1, 0, 1, 1),
    "no_intermediate": (1, 1, 1, 0, 1),
    "no_remaining": (1, 1, 1, 1, 0),
    "all_parts_off": (0, 0, 0, 0, 0),
}


def to_words(official: str) -> str:
    """The documented whitespace mapping: "," "." "?" are words, runs of spaces one space."""
    return " ".join(re.sub(r"([,.?])", r" \1 ", official).split())


def official_render(flags, steps, answer):
    """A separate rendering of the official create_scratchpad_str + __call__ (reference)."""
    rendered = []
    for step_input, computation, output, variables, remaining in steps:
        text = ""
        if flags[0]:
            text += "in " + step_input + " "
        if flags[1]:
            text += "comp " + computation + " "
        if flags[2]:
            text += "out " + output + " "
        if flags[3]:
            text += "[ " + ", ".join(variables) + " ] "
        if flags[4]:
            text += "re " + remaining + " "
        rendered.append(text)
    return "Thinking step by step: " + " " + " # ".join(rendered) + " " + ". Thus, " + " " + answer


def test_reference_renderer_matches_the_hand_worked_string():
    assert official_render(FLAGS["full"], OFFICIAL_STEPS_537_28, "The answer is 5 6 5.") == (
        OFFICIAL_537_28
    )


@pytest.mark.parametrize(
    "a, b, official", [(537, 28, OFFICIAL_537_28), (53726, 53726, OFFICIAL_53726_53726)]
)
def test_addition_worked_examples_reproduced(a, b, official):
    answer = f"The answer is {' '.join(str(a + b))} ."
    ours = scratchpad.target("full", addition.steps(a, b), answer)
    assert ours == to_words(official)


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_every_configuration_matches_the_official_rendering(name):
    ours = scratchpad.target(name, addition.steps(537, 28), "The answer is 5 6 5 .")
    official = official_render(FLAGS[name], OFFICIAL_STEPS_537_28, "The answer is 5 6 5.")
    assert ours == to_words(official)


def test_minimal_by_hand():
    assert scratchpad.target("minimal", addition.steps(537, 28), "The answer is 5 6 5 .") == (
        "Thinking step by step: comp 7 + 8 + carry = 15 + 0 = 15 out 5 # "
        "comp 3 + 2 + carry = 5 + 1 = 6 out 6 # comp 5 + 0 + carry = 5 + 0 = 5 out 5 . Thus , "
        "The answer is 5 6 5 ."
    )


def test_all_parts_off_keeps_the_wrapping_and_one_separator_between_steps():
    # The official renderer with every include_* false: each step is "", joined by " # ".
    assert (
        scratchpad.target("all_parts_off", addition.steps(537, 28), "The answer is 5 6 5 .")
        == "Thinking step by step: # # . Thus , The answer is 5 6 5 ."
    )
    one_step = [scratchpad.Step(input="q", computation="", output="-1", remaining="")]
    assert scratchpad.render("all_parts_off", one_step) == "Thinking step by step: . Thus ,"
    for name in ("lego", "sort_single_token", "parity"):  # every maths task accepts it
        example = next(tasks.get(name, scratchpad="all_parts_off").examples("test"))
        assert example.target.startswith("Thinking step by step:")
        assert set(example.target.split(" . Thus , ")[0].split()[4:]) <= {"#"}


def test_none_is_the_answer_alone():
    assert scratchpad.render("none", addition.steps(537, 28)) == ""
    assert scratchpad.target("none", addition.steps(537, 28), "The answer is 5 6 5 .") == (
        "The answer is 5 6 5 ."
    )


def test_steps_without_intermediate_variables_and_empty_parts():
    steps = [
        scratchpad.Step(input="q", computation="", output="-1", remaining="t = - q"),
        scratchpad.Step(input="t", computation="- q = - -1", output="+1", remaining=""),
    ]
    assert scratchpad.render("full", steps) == (
        "Thinking step by step: in q comp out -1 re t = - q # in t comp - q = - -1 out +1 re "
        ". Thus ,"
    )
    assert scratchpad.render("no_input", steps).startswith("Thinking step by step: comp out -1")


def test_names_and_words():
    assert scratchpad.NAMES == (
        "none",
        "full",
        "minimal",
        "no_input",
        "no_computation",
        "no_output",
        "no_intermediate",
        "no_remaining",
        "all_parts_off",
    )
    assert scratchpad.WORDS == {
        "Thinking",
        "step",
        "by",
        "step:",
        ".",
        "Thus",
        ",",
        "#",
        "[",
        "]",
        "in",
        "comp",
        "out",
        "re",
    }


@pytest.mark.parametrize(
    "name, value, message",
    [
        (
            "addition",
            "Full",
            "Task 'addition': option scratchpad='Full' is not a scratchpad configuration; expected "
            "one of none, full, minimal, no_input, no_computation, no_output, no_intermediate, "
            "no_remaining, all_parts_off.",
        ),
        ("polynomial", "", "option scratchpad='' is not a scratchpad configuration"),
        (
            "sort_single_token",
            "no_intermediate",
            "Task 'sort_single_token': option scratchpad='no_intermediate' is not a scratchpad "
            "configuration (sort_single_token steps have no intermediate variables, so "
            "'no_intermediate' would repeat 'full'); expected one of none, full, minimal, "
            "no_input, no_computation, no_output, no_remaining, all_parts_off.",
        ),
        ("lego_shuffled", "no_intermediate", "lego_shuffled steps have no intermediate"),
    ],
)
def test_bad_names(name, value, message):
    with pytest.raises(TaskOptionError, match=re.escape(message)):
        tasks.get(name, scratchpad=value)


def test_bad_type():
    with pytest.raises(TaskOptionError, match="option scratchpad=1 has type int; expected str"):
        tasks.get("parity", scratchpad=1)
