"""A tiny deterministic task for the data tests: copy a few letters after a separator."""

import random

from lenggen.tasks.base import SPLITS, Example, Task

LETTERS = ("a", "b", "c", "d")


class FakeCopy(Task):
    """`"a c [SEP]"` -> `"a c"`; train/validation lengths 1..3, test lengths 4..5.

    Every split has `per_length` examples per length, drawn from `random.Random(seed)` so two
    instances with the same options yield identical examples.
    """

    name = "fake_copy"

    def __init__(self, per_length: int = 3, seed: int = 0):
        self.per_length = per_length
        self.seed = seed

    def options(self) -> dict:
        return {"per_length": self.per_length, "seed": self.seed}

    def lengths(self, split: str) -> tuple[int, ...]:
        return {"train": (1, 2, 3), "validation": (1, 2, 3), "test": (4, 5)}[split]

    def examples(self, split: str):
        rng = random.Random(f"{self.seed}-{SPLITS.index(split)}")
        for length in self.lengths(split):
            for _ in range(self.per_length):
                words = " ".join(rng.choice(LETTERS) for _ in range(length))
                yield Example(source=f"{words} [SEP]", target=words, length=length)

    def vocabulary(self) -> tuple[str, ...]:
        return tuple(sorted(LETTERS + ("[SEP]",)))

    def parse_answer(self, text: str) -> str | None:
        return text.strip() or None
