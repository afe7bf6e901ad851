"""SCAN with its length split re-cut on action length (docs/paper.md "Tasks"; Lake & Baroni 2018).

Format, word for word:

  source  "Solve: jump opposite left twice and look [SEP]"
  target  "Left Left Jump Left Left Jump Look"

The paper's run with the "Solve: " prefix used the official `scan_bos` processor
(src/data/data_instance_processor/scan_instance_processor.py) on the `mdlen_tr25_ts48` split, with
the separator "[SEP] " (configs/data/scan.jsonnet); the official text glues it to the command
("... look[SEP] Left ..."), here it is its own word. Actions are renamed as that processor does:
I_WALK -> Walk, I_RUN -> Run, I_JUMP -> Jump, I_LOOK -> Look, I_TURN_LEFT -> Left,
I_TURN_RIGHT -> Right. The answer is the whole target.

Commands: every command of the SCAN grammar (downloading the dataset is not possible here, and
the grammar generates it exactly), 20,910 in all:
  C -> S | S and S | S after S;   S -> V | V twice | V thrice
  V -> D | U | D' opposite R | D' around R;   D -> U R | turn R
  U -> walk | look | run | jump;  D' -> U | turn;   R -> left | right
Interpretation: U -> its action; "x R" -> turn R then x ("turn R" -> turn R); "x opposite R" ->
turn R twice then x; "x around R" -> (turn R then x) four times ("turn" adds no action);
twice / thrice repeat; "a and b" -> a then b; "a after b" -> b then a.

Split (scripts/dataset_builders/make_scan_dataset.py): commands with at most 25 actions are the
training pool (17,774), longer ones the test set (26-48 actions: 3,136). 10% of the pool
(17,774 // 10 = 1,777) is held out as the validation file, leaving 15,997 for training; training
read half of the validation file (`validation_portion: 0.5`): 888. Here the held-out 1,777 are
drawn with the data seed and validation is its first 888; the other 889 are in no split, as in
the paper. Length bucket = the number of actions.
"""

import dataclasses
import functools
import itertools
from collections.abc import Iterator

import numpy as np

from lenggen.tasks import answers, options
from lenggen.tasks.base import SPLITS, Example, Task
from lenggen.tasks.bucketed import DATA_SEED

PREFIX = "Solve:"
SEPARATOR = "[SEP]"
ACTIONS = {"walk": "Walk", "look": "Look", "run": "Run", "jump": "Jump"}
TURNS = {"left": "Left", "right": "Right"}
REPEATS = {"": 1, "twice": 2, "thrice": 3}
CONJUNCTIONS = ("and", "after")
# The official script held out len(pool) // 10 of the training pool as the validation file.
HELD_OUT_FRACTION = 10
LONGEST = 48  # The most actions a SCAN command has ("... around ... thrice" twice).


def _verb_phrases() -> list[tuple[str, list[str]]]:
    """Every V with its actions: 34 phrases."""
    phrases = [(u, [a]) for u, a in ACTIONS.items()]
    for direction, turn in TURNS.items():
        phrases += [(f"{u} {direction}", [turn, a]) for u, a in ACTIONS.items()]
        phrases.append((f"turn {direction}", [turn]))
        for u, a in [*ACTIONS.items(), ("turn", None)]:
            act = [a] if a else []
            phrases.append((f"{u} opposite {direction}", [turn, turn, *act]))
            phrases.append((f"{u} around {direction}", [turn, *act] * 4))
    return phrases


def commands() -> list[tuple[str, list[str]]]:
    """Every SCAN command with its actions, in grammar order: 20,910."""
    sentences = [
        (f"{verb} {word}".strip(), actions * times)
        for verb, actions in _verb_phrases()
        for word, times in REPEATS.items()
    ]
    result = list(sentences)
    for (first, first_actions), (second, second_actions) in itertools.product(sentences, repeat=2):
        result.append((f"{first} and {second}", first_actions + second_actions))
        result.append((f"{first} after {second}", second_actions + first_actions))
    return result


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scan(Task):
    """`Solve: <command> [SEP]` -> `<actions>`; defaults are the paper's settings.

    Attributes:
      seed: the data seed (draws the held-out part and orders every split).
      max_train_actions: the most actions of a training command; longer ones are the test set.
      num_validation: validation examples, from the held-out tenth of the training pool.
    """

    name = "scan"

    seed: int = DATA_SEED
    max_train_actions: int = 25
    num_validation: int = 888

    def __post_init__(self):
        options.check_types(self)
        options.check_at_least(self, "seed", 0, "numpy seeds are non-negative")
        options.check_at_least(self, "max_train_actions", 1)
        options.check_at_most(
            self, "max_train_actions", LONGEST - 1, f"the longest command has {LONGEST} actions"
        )
        options.check_at_least(self, "num_validation", 0)
        options.check_at_most(
            self, "num_validation", self._held_out_size(), "a tenth of the training pool"
        )

    def _pool(self) -> list[Example]:
        return [e for e in _all_examples() if e.length <= self.max_train_actions]

    def _held_out_size(self) -> int:
        return len(self._pool()) // HELD_OUT_FRACTION

    @functools.cached_property
    def _splits(self) -> dict[str, list[Example]]:
        pool = self._pool()
        order = np.random.default_rng([self.seed, 0]).permutation(len(pool))
        held_out = len(pool) // HELD_OUT_FRACTION
        test = [e for e in _all_examples() if e.length > self.max_train_actions]
        test_order = np.random.default_rng([self.seed, 1]).permutation(len(test))
        return {
            "train": [pool[i] for i in order[held_out:]],
            "validation": [pool[i] for i in order[: self.num_validation]],
            "test": [test[i] for i in test_order],
        }

    # -- Task interface -------------------------------------------------------------------

    def options(self) -> dict:
        return dataclasses.asdict(self)

    def examples(self, split: str) -> Iterator[Example]:
        _check_split(split)
        return iter(self._splits[split])

    def lengths(self, split: str) -> tuple[int, ...]:
        _check_split(split)
        return tuple(sorted({e.length for e in self._splits[split]}))

    def vocabulary(self) -> tuple[str, ...]:
        words = {PREFIX, SEPARATOR, "turn", "opposite", "around", *CONJUNCTIONS}
        words |= set(ACTIONS) | set(ACTIONS.values()) | set(TURNS) | set(TURNS.values())
        return tuple(sorted(words | {w for w in REPEATS if w}))

    def parse_answer(self, text: str) -> str | None:
        """The whole text written after the prompt, whitespace-normalised (None when empty)."""
        return answers.normalized(text) or None


@functools.cache
def _all_examples() -> tuple[Example, ...]:
    return tuple(
        Example(
            source=f"{PREFIX} {command} {SEPARATOR}", target=" ".join(actions), length=len(actions)
        )
        for command, actions in commands()
    )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
