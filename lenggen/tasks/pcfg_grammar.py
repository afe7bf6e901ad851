"""The PCFG SET grammar's words and meaning (Hupkes et al. 2020; github.com/MathijsMul/pcfg-set).

A source is a prefix-order expression of string-edit functions over strings of symbols, a
binary function's two arguments separated by ",":

    evaluate("append swap_first_last F1 G1 H1 , repeat I1 J1".split())
    -> ["H1", "G1", "F1", "I1", "J1", "I1", "J1"]

The functions (tasks/default.py of the generator):
  unary   copy x = x; reverse x = x reversed; shift x = x[1:] + x[0]; echo x = x + x[-1];
          swap_first_last x = x[-1] + x[1:-1] + x[0]; repeat x = x x
  binary  append x , y = x y; prepend x , y = y x; remove_first x , y = y; remove_second x , y = x
Symbols: A1 .. Z20 (26 letters x 20).
"""

import string

COMMA = ","
UNARY = ("copy", "reverse", "shift", "echo", "swap_first_last", "repeat")
BINARY = ("append", "prepend", "remove_first", "remove_second")
SYMBOLS = tuple(f"{letter}{number}" for letter in string.ascii_uppercase for number in range(1, 21))
_FUNCTION_WORDS = frozenset(UNARY + BINARY)
_SYMBOL_SET = frozenset(SYMBOLS)


def apply(function: str, *arguments: list[str]) -> list[str]:
    """The value of one string-edit function on its arguments (lists of symbols)."""
    x = arguments[0]
    match function:
        case "copy":
            return x
        case "reverse":
            return x[::-1]
        case "shift":
            return x[1:] + x[:1]
        case "echo":
            return x + x[-1:]
        case "swap_first_last":
            return x[-1:] + x[1:-1] + x[:1]
        case "repeat":
            return x + x
        case "append":
            return x + arguments[1]
        case "prepend":
            return arguments[1] + x
        case "remove_first":
            return arguments[1]
        case "remove_second":
            return x
    raise ValueError(
        f"Unknown PCFG SET function {function!r}; expected one of {', '.join(UNARY + BINARY)}."
    )


def evaluate(tokens: list[str]) -> list[str]:
    """The target of a prefix-order source (function words, symbols and commas)."""

    def expression(i: int) -> tuple[list[str], int]:  # (value, index after it)
        word = tokens[i]
        if word in UNARY:
            value, i = expression(i + 1)
            return apply(word, value), i
        if word in BINARY:
            first, i = expression(i + 1)
            second, i = expression(i + 1)  # Skips the comma.
            return apply(word, first, second), i
        end = i
        while end < len(tokens) and tokens[end] != COMMA:
            end += 1
        return tokens[i:end], end

    value, _ = expression(0)
    return value


def count_functions(source: str) -> int:
    """The number of function words of a source (its length bucket)."""
    return sum(1 for word in source.split() if word in _FUNCTION_WORDS)


def string_arguments(source: str) -> list[str]:
    """The string arguments of a source, each a space-separated run of symbols."""
    runs = " ".join(w if w in _SYMBOL_SET else "|" for w in source.split()).split("|")
    return [run.strip() for run in runs if run.strip()]
