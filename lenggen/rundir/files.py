"""What a run directory holds, and the guard that stops two experiments sharing one.

  config.json      the config the run trained with (written by `claim`).
  metrics.jsonl    one JSON object per training, validation or lifecycle event.
  results.json     the final scores (lenggen/results.py describes it).
  samples.jsonl    decoded examples of the final evaluation.
  accuracy_vs_length.png   the plot of results.json.
  checksums.json   per-array checksums of every saved checkpoint (lenggen/checkpoint.py).
  checkpoints/ best/        Orbax's directories; corrupt/ and replaced-<time>/ hold what was
                   moved aside; lock.json names the run holding the workdir (lock.py).

A later run in the same workdir resumes only if the keys that shape training (seed, task, model,
train) are equal; evaluation, mesh and data-location keys, and the device-memory budget, may
change (e.g. re-evaluating on another machine). Every file is replaced atomically (storage.py).
"""

import json
import os
import time
from typing import Any

import ml_collections
from etils import epath

from lenggen import json_keys
from lenggen.rundir import lock, storage

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
PLOT_FILE = "accuracy_vs_length.png"
CHECKSUMS_FILE = "checksums.json"
CHECKPOINT_DIRS = ("checkpoints", "best")
CORRUPT_DIR = "corrupt"
REPLACED_PREFIX = "replaced-"
TRAINING_KEYS = ("seed", "task", "model", "train")
# Under TRAINING_KEYS but not shaping what is trained: a budget for the up-front memory check.
IGNORED_KEYS = ("train.max_bytes_per_device",)


class WorkdirConflictError(ValueError):
    """The workdir holds a run of a different experiment."""


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def differing_keys(saved: dict, current: dict) -> list[str]:
    """Dotted keys under TRAINING_KEYS whose values differ (or exist in only one)."""
    saved_flat = _flatten({k: saved.get(k) for k in TRAINING_KEYS})
    current_flat = _flatten({k: current.get(k) for k in TRAINING_KEYS})
    # Configs from before config.model.precision existed trained at full float32 ('highest').
    for config, flat in ((saved, saved_flat), (current, current_flat)):
        if "model" in config and "model.precision" not in flat:
            flat["model.precision"] = "highest"
    return sorted(
        key for key in saved_flat.keys() | current_flat.keys()
        if saved_flat.get(key) != current_flat.get(key) and key not in IGNORED_KEYS
    )


def json_line(record: Any) -> str:
    return json.dumps(json_keys.natural_order(record)) + "\n"


class RunDir:
    """One run directory, local or gs://. Reading never creates anything.

    Attributes:
      path: the directory as an epath.Path (absolute when local).
    """

    def __init__(self, workdir: str | os.PathLike):
        self.path = storage.resolve(workdir)

    def __str__(self) -> str:
        return os.fspath(self.path)

    def file(self, name: str) -> epath.Path:
        return self.path / name

    # ---- Reading.

    def has(self, name: str) -> bool:
        return storage.exists(self.file(name))

    def read_json(self, name: str) -> Any:
        """The parsed file, or None when it does not exist."""
        path = self.file(name)
        if not storage.exists(path):
            return None
        return json.loads(storage.read_text(path))

    def config(self) -> dict | None:
        return self.read_json(CONFIG_FILE)

    # ---- Writing (process 0 only, in a multi-process run).

    def write_json(self, name: str, payload: Any) -> None:
        storage.write_json(self.file(name), payload)

    def write_lines(self, name: str, lines: list[str]) -> None:
        storage.write_lines(self.file(name), lines)

    def write_bytes(self, name: str, data: bytes) -> None:
        storage.write_bytes(self.file(name), data)

    def append_event(self, record: Any) -> None:
        storage.append_line(self.file(METRICS_FILE), json_line(record))

    def trim_metrics(self, step: int) -> None:
        """Drops the train and validation events of METRICS_FILE logged after `step` (a run
        resumed at `step` logs them again, so the file reads as one uninterrupted run) and any
        line a crash cut short. Other events (resumed, preempted, ...) are history and stay."""
        path = self.file(METRICS_FILE)
        if not storage.exists(path):
            return
        kept = []
        for line in storage.read_text(path).splitlines(keepends=True):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            replayed = record.get("event") in ("train", "validation") and record["step"] > step
            if not replayed:
                kept.append(json_line(record))
        storage.write_lines(path, kept)

    def lock(self, **kwargs) -> lock.WorkdirLock:
        """An exclusive lock on this directory (acquire it, or use `with`)."""
        return lock.WorkdirLock(os.fspath(self.path), **kwargs)

    # ---- The guard.

    def check(self, config: ml_collections.ConfigDict, *, overwrite: bool = False) -> None:
        """Raises WorkdirConflictError if this directory trained another experiment (unless
        `overwrite`); writes nothing."""
        self._conflicts(json.loads(config.to_json()), overwrite=overwrite)

    def _conflicts(self, current: dict, *, overwrite: bool) -> bool:
        """True when the directory holds another experiment and `overwrite` is set."""
        saved = self.config()
        if saved is None:
            return False
        differences = differing_keys(saved, current)
        if differences and not overwrite:
            shown = ", ".join(
                f"{key} (saved {_flatten(saved).get(key)!r}, now {_flatten(current).get(key)!r})"
                for key in differences[:8]
            )
            raise WorkdirConflictError(
                f"Workdir {self} holds a run of a different config: {shown}"
                f"{' ...' if len(differences) > 8 else ''}. Use another --workdir, or pass "
                "--overwrite to start this config there from scratch."
            )
        return bool(differences)

    def claim(self, config: ml_collections.ConfigDict, *, overwrite: bool = False,
              provenance: dict | None = None) -> None:
        """Records `config`, refusing a directory that trained another experiment.

        `provenance` (lenggen.provenance.collect) is stored beside the config under
        "provenance"; the guard ignores it, so a resume on other code or devices is not refused.

        With `overwrite`, the other run's files are moved to WORKDIR/replaced-<time>/ rather
        than deleted, so nothing is lost.

        Raises:
          WorkdirConflictError: naming the differing keys, unless `overwrite`.
        """
        current = json.loads(config.to_json())
        if self._conflicts(current, overwrite=overwrite):
            self.move_aside()
        if provenance is not None:
            current["provenance"] = provenance
        self.write_json(CONFIG_FILE, current)

    def move_aside(self) -> epath.Path:
        """Moves every entry (but earlier replaced-* folders and the lock) into a new
        WORKDIR/replaced-<time>/."""
        backup = self.path / time.strftime(f"{REPLACED_PREFIX}%Y%m%d-%H%M%S")
        for entry in storage.resolve_fresh(self.path).iterdir():
            if not entry.name.startswith(REPLACED_PREFIX) and entry.name != lock.LOCK_FILE:
                storage.move(entry, backup / entry.name)
        return backup


# Function forms of the guard, for callers holding a path.

def check(workdir: str, config: ml_collections.ConfigDict, *, overwrite: bool = False) -> None:
    RunDir(workdir).check(config, overwrite=overwrite)


def claim(workdir: str, config: ml_collections.ConfigDict, *, overwrite: bool = False,
          provenance: dict | None = None) -> None:
    RunDir(workdir).claim(config, overwrite=overwrite, provenance=provenance)


def trim_metrics(workdir: str, step: int) -> None:
    RunDir(workdir).trim_metrics(step)
