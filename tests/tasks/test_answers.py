"""Tests of lenggen/tasks/answers.py: reading "The answer is ... ." sentences."""

import pytest

from lenggen.tasks import answers


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("The answer is 3 .", "3"),
        ("The answer is 0 5 6 5 .", "565"),  # int value, as the official scorers compare
        ("The answer is - 1 2 .", "-12"),
        ("  The answer is   4 2 .  ", "42"),
        ("Thinking step by step: in 3 out 3 . Thus , The answer is 3 .", "3"),
        ("The answer is 1 . The answer is 2 .", "2"),  # the last one counts
        ("The answer is 7 . 1 2", "7"),  # what follows the "." is ignored
        ("The answer is 7", None),
        ("The answer is - .", None),
        ("The answer is 7 x .", None),
        ("The answer is Yes .", None),
        ("answer is 7 .", None),
        ("", None),
    ],
)
def test_number(text, parsed):
    assert answers.number(text) == parsed


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("The answer is Yes .", "Yes"),
        ("The answer is +1 .", "+1"),
        ("Thinking step by step: in b out -1 . Thus , The answer is -1 .", "-1"),
        ("The answer is No . The answer is Yes .", "Yes"),
        ("The answer is Yes", None),
        ("The answer is Yes No .", None),
        ("The answer is .", None),
        ("", None),
    ],
)
def test_word(text, parsed):
    assert answers.word(text) == parsed


def test_normalized():
    assert answers.normalized("  a \n b\t c ") == "a b c"
    assert answers.normalized("   ") == ""
