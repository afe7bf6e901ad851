"""Reading the answer out of a maths task's final sentence, "... The answer is <answer> .".

The official scorers (McGill-NLP/length-generalization, src/data/data_instance_processor/
*_instance_processor.py) search `.*The answer is\\s+(...)\\.` in what follows the scratchpad, so
the last "The answer is" counts and whatever follows its "." is ignored. The patterns here do the
same on whitespace-normalised words, but strictly: the answer must be whole words (digits, or one
word such as "Yes" or "+1") followed by the word ".".
"""

import re

# Digits one word each, optionally after a "-" word: "The answer is - 1 2 ." -> "-12".
_NUMBER = re.compile(r"(?:.* |^)The answer is((?: -)?(?: [0-9])+) \.(?: .*)?$")
# One word: "The answer is Yes ." -> "Yes".
_WORD = re.compile(r"(?:.* |^)The answer is (\S+) \.(?: .*)?$")


def normalized(text: str) -> str:
    """`text` with runs of whitespace replaced by one space, stripped."""
    return " ".join(text.split())


def number(text: str) -> str | None:
    """The integer after the last "The answer is", as a decimal string without leading zeros.

    "... The answer is 0 5 6 5 . x" -> "565" (the official scorers compare int values); None
    without "The answer is", digits and the "." word.
    """
    match = _NUMBER.match(normalized(text))
    return str(int(match.group(1).replace(" ", ""))) if match else None


def digits(text: str) -> str | None:
    """The digits after the last "The answer is", as written (leading zeros kept, no sign).

    "... The answer is 0 0 1 . x" -> "001"; None without "The answer is", digits and the "."
    word, or with a "-" sign.
    """
    match = _NUMBER.match(normalized(text))
    if not match or "-" in match.group(1):
        return None
    return match.group(1).replace(" ", "")


def word(text: str) -> str | None:
    """The single word between the last "The answer is" and a "." word (None without one)."""
    match = _WORD.match(normalized(text))
    return match.group(1) if match else None
