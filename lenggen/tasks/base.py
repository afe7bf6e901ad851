"""The task interface: a pure, seeded generator of text examples plus its scorer.

A task knows nothing of tokens ids, arrays or models. The model sees
`source + " " + target + EOS` and is trained on the target tokens and EOS only.
"""

import dataclasses
from collections.abc import Iterator

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Example:
    """One text example.

    Attributes:
      source: the prompt, separator included (e.g. "Reverse: a b c [SEP]").
      target: what the model must write after the prompt (e.g. "c b a").
      length: the length bucket the paper reports this example under.
    """

    source: str
    target: str
    length: int


class Task:
    """Base class of every task. Subclasses set `name` and implement the abstract methods.

    Subclasses take their options as keyword arguments in `__init__` (all with defaults equal
    to the paper's settings) and expose them through `options()`.
    """

    name: str = ""
    # The version of this task's generator output. Bump it (semver: minor when examples change
    # for the same options, major when their format does) whenever the same options would yield
    # other examples: the TFDS builder keeps each version in its own directory, so a dataset is
    # never silently reused across a change. Subclasses override it; it is not an option.
    version: str = "1.0.0"

    def options(self) -> dict:
        """The task's options as a plain dict (what `tasks.get(name, **options)` accepts)."""
        raise NotImplementedError

    def examples(self, split: str) -> Iterator[Example]:
        """Yields the examples of `split` (one of SPLITS), deterministically from the seed."""
        raise NotImplementedError

    def lengths(self, split: str) -> tuple[int, ...]:
        """The length buckets `split` covers, ascending."""
        raise NotImplementedError

    def vocabulary(self) -> tuple[str, ...]:
        """Every whitespace-separated word any example of this task can contain, sorted."""
        raise NotImplementedError

    def parse_answer(self, text: str) -> str | None:
        """The answer inside a model output or target (None when there is none)."""
        raise NotImplementedError

    def score(self, prediction: str, target: str) -> bool:
        """The paper's exact match: the parsed answers are equal and the target's exists."""
        gold = self.parse_answer(target)
        return gold is not None and self.parse_answer(prediction) == gold
