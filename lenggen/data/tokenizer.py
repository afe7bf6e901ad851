"""A word-level tokenizer whose vocabulary is a task's grammar.

The paper used the pretrained t5-base SentencePiece model (32,100 pieces, no BOS, digits
space-separated so each digit is one piece). That model cannot be downloaded here, so each task
gets a word-level vocabulary instead (docs/paper.md "Model" accepts this substitute): every
whitespace-separated word the task can emit is one token. Since the task formats space out every
digit and symbol, the token sequences have the same lengths in words as the paper's prompts.

Ids: `PAD_ID = 0`, `EOS_ID = 1`, then `task.vocabulary()` in order (T5 also puts pad at 0 and
EOS at 1). There is no BOS, as in the paper.
"""

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence

PAD_ID = 0
EOS_ID = 1
PAD = "<pad>"
EOS = "</s>"
SPECIALS = (PAD, EOS)

# Recorded in the JSON file so a reader can tell what it is holding.
_FORMAT = "lenggen.word_tokenizer"
_FORMAT_VERSION = 1


class TokenizerError(ValueError):
    """A word or id outside the vocabulary, or a malformed vocabulary or tokenizer file."""


@dataclasses.dataclass(frozen=True, eq=True)
class Tokenizer:
    """Maps whitespace-separated words to ids and back.

    Attributes:
      vocabulary: the task's words, in id order starting at id 2 (PAD and EOS excluded).
      task: the name of the task the vocabulary came from (for error messages and records).
    """

    vocabulary: tuple[str, ...]
    task: str = ""

    def __post_init__(self):
        vocabulary = tuple(self.vocabulary)
        object.__setattr__(self, "vocabulary", vocabulary)
        seen = set()
        for word in vocabulary:
            if not isinstance(word, str) or not word or word.split() != [word]:
                raise TokenizerError(
                    f"Vocabulary of task {self.task!r} holds {word!r}; expected non-empty "
                    "strings without whitespace."
                )
            if word in SPECIALS:
                raise TokenizerError(
                    f"Vocabulary of task {self.task!r} holds the reserved word {word!r}; "
                    f"{SPECIALS} are added by the tokenizer."
                )
            if word in seen:
                raise TokenizerError(
                    f"Vocabulary of task {self.task!r} holds {word!r} twice; expected unique words."
                )
            seen.add(word)
        object.__setattr__(self, "_ids", {w: i for i, w in enumerate(SPECIALS + vocabulary)})

    @classmethod
    def from_task(cls, task) -> "Tokenizer":
        """The tokenizer of a `lenggen.tasks.base.Task`: its `vocabulary()` after PAD and EOS."""
        return cls(vocabulary=tuple(task.vocabulary()), task=task.name)

    @property
    def words(self) -> tuple[str, ...]:
        """Every token, indexed by id: `words[PAD_ID] == "<pad>"`, `words[EOS_ID] == "</s>"`."""
        return SPECIALS + self.vocabulary

    @property
    def digit_ids(self) -> tuple[int, ...]:
        """The ids of the words "0" .. "9" the vocabulary holds, ascending (the digits whose
        place in their number the arithmetic PEs embed: lenggen.model.digit_runs)."""
        return tuple(i for i, word in enumerate(self.words) if len(word) == 1 and word.isdigit())

    @property
    def vocab_size(self) -> int:
        """The number of ids, specials included."""
        return len(SPECIALS) + len(self.vocabulary)

    def encode(self, text: str) -> list[int]:
        """The ids of the whitespace-separated words of `text` (no EOS appended)."""
        ids = []
        for word in text.split():
            try:
                ids.append(self._ids[word])
            except KeyError:
                raise TokenizerError(
                    f"Word {word!r} (in {text!r}) is not in the vocabulary of task "
                    f"{self.task!r}, which has {len(self.vocabulary)} words: "
                    f"{_preview(self.vocabulary)}."
                ) from None
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The words of `ids` joined by single spaces, up to the first EOS; PADs are dropped."""
        words = []
        for token in ids:
            token = int(token)
            if token == EOS_ID:
                break
            if token == PAD_ID:
                continue
            if not 0 <= token < self.vocab_size:
                raise TokenizerError(
                    f"Id {token} is outside the vocabulary of task {self.task!r}; expected an "
                    f"id in [0, {self.vocab_size})."
                )
            words.append(self.words[token])
        return " ".join(words)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "format_version": _FORMAT_VERSION,
                "task": self.task,
                "words": list(self.words),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str, *, origin: str = "<string>") -> "Tokenizer":
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise TokenizerError(f"{origin} is not JSON ({error}).") from None
        if not isinstance(record, dict) or record.get("format") != _FORMAT:
            raise TokenizerError(f"{origin} is not a tokenizer file; expected format {_FORMAT!r}.")
        if record.get("format_version") != _FORMAT_VERSION:
            raise TokenizerError(
                f"{origin} has format_version {record.get('format_version')!r}; expected "
                f"{_FORMAT_VERSION}."
            )
        words = record["words"]
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise TokenizerError(f"{origin} starts with {words[:2]!r}; expected {list(SPECIALS)}.")
        return cls(vocabulary=tuple(words[len(SPECIALS) :]), task=record["task"])

    def save(self, path: str | os.PathLike) -> None:
        """Writes the vocabulary to a JSON file (a workdir's record of what it trained with)."""
        with open(path, "w") as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        with open(path) as f:
            return cls.from_json(f.read(), origin=os.fspath(path))


def _preview(words: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(repr(w) for w in words[:limit])
    return shown + (", ..." if len(words) > limit else "")
