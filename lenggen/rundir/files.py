"""What a run directory holds, and the guard that stops two experiments sharing one.

  config.json      the config the run trained with (written by `record`, once the run is known
                   to start: after its checkpoint restored, or with none to restore).
  metrics.jsonl    one JSON object per training, validation or lifecycle event.
  results.json     the final scores (lenggen/results.py describes it).
  samples.jsonl    decoded examples of the final evaluation.
  accuracy_vs_length.png   the plot of results.json.
  checksums.json   sha256 digests of every saved checkpoint (lenggen/checkpoint.py).
  checkpoints/ best/        Orbax's directories; corrupt/ and replaced-<time>/ hold what was
                   moved aside; lock.json names the run holding the workdir (lock.py).

A later run in the same workdir resumes only if the keys that shape training (seed, task, model,
train) are equal; evaluation, mesh and data-location keys, and the device-memory budget, may
change (e.g. re-evaluating on another machine). `--mode=evaluate` compares the same keys: it
scores a run only under the config that run trained with, so results.json is never rewritten
under another config (EVALUATION_KEYS lists the training-side keys evaluation alone may change).
Every file is replaced atomically (storage.py).
"""

import errno
import json
import os
import time
from typing import Any

import ml_collections
from etils import epath

from lenggen import config_defaults, json_keys
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
# Under TRAINING_KEYS, but --mode=evaluate may change them: they change how a trained model is
# scored, not what was trained (e.g. a PE's test-time scaling). A resume must keep them equal.
# Dotted keys or prefixes ("model.pe.rotary.scaling" also covers its sub-keys).
# Rotary's context extension (docs/methods/rotary_scaling.md) is meant for exactly this: a
# model trained without it, scored on longer sequences with it.
EVALUATION_KEYS: tuple[str, ...] = (
    "model.pe.rotary.scaling",
    "model.pe.rotary.scaling_factor",
    "model.pe.rotary.original_max_position",
    "model.pe.rotary.beta_fast",
    "model.pe.rotary.beta_slow",
)
# Rotary's options that configs from before the context extension lack, and the values those
# runs trained with (no extension: the paper's rotary).
_ROTARY_SCALING_DEFAULTS = {
    f"model.pe.rotary.{key}": value for key, value in config_defaults.ROTARY_SCALING.items()
}
# What a run leaves in its workdir that only a run of some config could have written.
RUN_DIRECTORIES = CHECKPOINT_DIRS


class WorkdirError(ValueError):
    """A workdir that cannot hold this run: not a directory, not writable, damaged files."""


class WorkdirConflictError(WorkdirError):
    """The workdir holds a run of a different experiment."""


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def _pe_name(config: dict) -> Any:
    return ((config.get("model") or {}).get("pe") or {}).get("name")


def differing_keys(saved: dict, current: dict, *, evaluating: bool = False) -> list[str]:
    """Dotted keys under TRAINING_KEYS whose values differ (or exist in only one); when
    `evaluating`, but for EVALUATION_KEYS.

    The options of a PE neither config uses (`model.pe.<other pe>.*`) shape nothing, so they
    are not compared: a config from before a PE was added lacks its section.
    """
    saved_flat = _flatten({k: saved.get(k) for k in TRAINING_KEYS})
    current_flat = _flatten({k: current.get(k) for k in TRAINING_KEYS})
    # Configs from before config.model.precision existed trained at full float32 ('highest'),
    # those from before rotary's scalings with none, and those from before
    # config.model.scan_layers with unrolled blocks.
    for config, flat in ((saved, saved_flat), (current, current_flat)):
        for key, value in config_defaults.MODEL.items():
            if "model" in config and f"model.{key}" not in flat:
                flat[f"model.{key}"] = value
        if "model.pe.rotary.fraction" in flat:
            for key, value in _ROTARY_SCALING_DEFAULTS.items():
                flat.setdefault(key, value)
    used = {f"model.pe.{_pe_name(saved)}", f"model.pe.{_pe_name(current)}"}
    unused = tuple(
        section
        for section in {key.rsplit(".", 1)[0] for key in saved_flat.keys() | current_flat.keys()}
        if section.startswith("model.pe.") and section.count(".") == 2 and section not in used
    )
    allowed = IGNORED_KEYS + (EVALUATION_KEYS if evaluating else ()) + unused
    return sorted(
        key
        for key in saved_flat.keys() | current_flat.keys()
        if saved_flat.get(key) != current_flat.get(key) and not _matches(key, allowed)
    )


def json_line(record: Any) -> str:
    return json.dumps(json_keys.natural_order(record)) + "\n"


def _metrics_record(raw: bytes) -> dict | None:
    """The event of one metrics.jsonl line, or None when it is not one."""
    try:
        record = json.loads(raw.decode())
    except ValueError:  # UnicodeDecodeError is a ValueError too.
        return None
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        return None
    if record["event"] in ("train", "validation") and not isinstance(record.get("step"), int):
        return None
    return record


class RunDir:
    """One run directory, local or gs://. Reading never creates anything.

    Attributes:
      path: the directory as an epath.Path (absolute when local).
    """

    def __init__(self, workdir: str | os.PathLike):
        self.given = os.fspath(workdir)
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

    def read_config(self) -> dict | None:
        """The config.json of this directory as a dict; None when there is none.

        Raises:
          WorkdirError: the file is not a JSON object (naming the file and line).
        """
        path = self.file(CONFIG_FILE)
        if not storage.exists(path):
            return None
        try:
            saved = json.loads(storage.read_bytes(path).decode())
        except json.JSONDecodeError as error:
            raise WorkdirError(
                f"{path} line {error.lineno} column {error.colno}: {error.msg}. Restore that "
                "run's config.json, or pass --overwrite to move the run aside and start from "
                "scratch."
            ) from None
        except ValueError as error:  # not UTF-8
            raise WorkdirError(
                f"{path} is not a text file ({error}). Restore that run's "
                "config.json, or pass --overwrite to start from scratch."
            ) from None
        if not isinstance(saved, dict):
            raise WorkdirError(
                f"{path} line 1: expected a JSON object, got {type(saved).__name__}."
            )
        return saved

    def config(self) -> dict | None:
        """The same as `read_config`."""
        return self.read_config()

    def _metrics_lines(self) -> list[dict]:
        """The events of METRICS_FILE, but for a last line a crash cut short (the text after
        the last newline: dropped). Any other line that does not read is damage a run must not
        paper over: WorkdirError names the file and line."""
        path = self.file(METRICS_FILE)
        if not storage.exists(path):
            return []
        lines = storage.read_bytes(path).split(b"\n")
        records = []
        for number, raw in enumerate(lines[:-1], start=1):
            record = _metrics_record(raw)
            if record is None:
                raise WorkdirError(
                    f"{path} line {number} is not a metrics record ({raw[:60]!r}): fix or "
                    "delete that line, then run the same command again."
                )
            records.append(record)
        return records

    def read_events(self) -> list[dict]:
        """Every event of METRICS_FILE, skipping lines that do not read (see `trim_metrics`)."""
        path = self.file(METRICS_FILE)
        if not storage.exists(path):
            return []
        records = [_metrics_record(raw) for raw in storage.read_bytes(path).split(b"\n")]
        return [record for record in records if record is not None]

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
        resumed at `step` logs them again, so the file reads as one uninterrupted run) and a
        last line a crash cut short. Other events (resumed, preempted, ...) are history and
        stay.

        Raises:
          WorkdirError: a line other than the last does not read (naming the file and line).
        """
        path = self.file(METRICS_FILE)
        if not storage.exists(path):
            return
        kept = []
        for record in self._metrics_lines():
            replayed = record.get("event") in ("train", "validation") and record["step"] > step
            if not replayed:
                kept.append(json_line(record))
        storage.write_lines(path, kept)

    def lock(self, **kwargs) -> lock.WorkdirLock:
        """An exclusive lock on this directory (acquire it, or use `with`)."""
        return lock.WorkdirLock(os.fspath(self.path), **kwargs)

    # ---- The guard.

    def check(
        self,
        config: ml_collections.ConfigDict,
        *,
        overwrite: bool = False,
        evaluating: bool = False,
    ) -> None:
        """Raises WorkdirError unless this directory can hold this run; writes nothing.

        Refused: a path that is not a directory or cannot be written; a workdir of another
        experiment (unless `overwrite`); checkpoints without the config.json that says whose
        they are (unless `overwrite`); and, when `evaluating`, a workdir with no run in it.
        """
        self._check_writable()
        has_config = self.has(CONFIG_FILE)
        if evaluating and not has_config:
            raise WorkdirError(
                f"Workdir {self} holds no run to evaluate (no {CONFIG_FILE}): train first, "
                "e.g. with --mode=train_and_evaluate."
            )
        if not has_config and not overwrite:
            found = [d for d in RUN_DIRECTORIES if self._non_empty_directory(d)]
            if found:
                raise WorkdirError(
                    f"Workdir {self} has {' and '.join(f'{d}/' for d in found)} but no "
                    f"{CONFIG_FILE}, so nothing says which experiment they belong to. Put that "
                    "run's config.json back, use another --workdir, or pass --overwrite to move "
                    "them aside and start from scratch."
                )
        if overwrite and not evaluating:
            return  # Everything there is moved aside before the run starts (`prepare`).
        self._conflicts(json.loads(config.to_json()), overwrite=False, evaluating=evaluating)
        if not evaluating:
            self._metrics_lines()  # a resume rewrites it: read it first

    def _non_empty_directory(self, name: str) -> bool:
        path = storage.resolve_fresh(self.file(name))
        return path.is_dir() and any(True for _ in path.iterdir())

    def _check_writable(self) -> None:
        """Raises WorkdirError when a local workdir is not a directory or cannot be created or
        written. On gs:// there is nothing to ask (storage.check_reachable reached the bucket;
        an object path has no mode bits or mounts)."""
        if storage.is_gcs(self.path):
            return
        workdir = os.fspath(self.path)
        existing = workdir
        while not os.path.exists(existing):
            parent = os.path.dirname(existing)
            if parent == existing:
                break
            existing = parent
        if not os.path.isdir(existing):
            what = "is" if existing == workdir else f"is under {existing}, which is"
            raise WorkdirError(f"--workdir={self.given} {what} a file; expected a directory.")
        # Asked, not probed: every process checks, and only process 0 writes to the workdir.
        # os.access answers for the mode bits (always yes to root), statvfs for read-only
        # mounts.
        if os.statvfs(existing).f_flag & os.ST_RDONLY:
            reason = os.strerror(errno.EROFS)
        elif not os.access(existing, os.W_OK | os.X_OK):
            reason = os.strerror(errno.EACCES)
        else:
            return
        raise WorkdirError(
            f"--workdir={self.given} cannot be written ({existing}: {reason}); choose a "
            "writable directory."
        )

    def _conflicts(self, current: dict, *, overwrite: bool, evaluating: bool = False) -> bool:
        """True when the directory holds another experiment and `overwrite` is set; raises if
        unset."""
        saved = self.read_config()
        if saved is None:
            return False
        differences = differing_keys(saved, current, evaluating=evaluating)
        shown = ", ".join(
            f"{key} (saved {_flatten(saved).get(key)!r}, now {_flatten(current).get(key)!r})"
            for key in differences[:8]
        )
        more = " ..." if len(differences) > 8 else ""
        if differences and evaluating:
            raise WorkdirConflictError(
                f"Workdir {self} trained another config: {shown}{more}. --mode=evaluate scores "
                "a run only under the config it trained with (it may change eval.*, mesh.* and "
                "data.*): drop those overrides."
            )
        if differences and not overwrite:
            raise WorkdirConflictError(
                f"Workdir {self} holds a run of a different config: {shown}{more}. Use another "
                "--workdir, or pass --overwrite to start this config there from scratch."
            )
        return bool(differences)

    def prepare(self, *, overwrite: bool = False) -> epath.Path | None:
        """Creates the directory; with `overwrite`, moves everything in it (but the lock) to
        WORKDIR/replaced-<time>/ (the run then starts from scratch, whatever config was there).
        Returns that folder, if any."""
        path = storage.resolve_fresh(self.path)
        if not storage.is_gcs(path):  # gs:// has no directories to create
            path.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            return None
        if overwrite and any(self._movable(entry.name) for entry in path.iterdir()):
            return self.move_aside()
        return None

    def record(self, config: ml_collections.ConfigDict, *, provenance: dict | None = None) -> None:
        """Writes `config` to WORKDIR/config.json (atomically).

        `provenance` (lenggen.provenance.collect) is stored beside the config under
        "provenance"; the guard ignores it, so a resume on other code or devices is not refused.
        """
        current = json.loads(config.to_json())
        if provenance is not None:
            current["provenance"] = provenance
        self.write_json(CONFIG_FILE, current)

    def claim(
        self,
        config: ml_collections.ConfigDict,
        *,
        overwrite: bool = False,
        provenance: dict | None = None,
    ) -> None:
        """Records `config`, refusing a directory that trained another experiment.

        With `overwrite`, what the directory held is moved to WORKDIR/replaced-<time>/ rather
        than deleted, so nothing is lost.

        Raises:
          WorkdirConflictError: naming the differing keys, unless `overwrite`.
        """
        if not overwrite:
            self._conflicts(json.loads(config.to_json()), overwrite=False)
        self.prepare(overwrite=overwrite)
        self.record(config, provenance=provenance)

    @staticmethod
    def _movable(name: str) -> bool:
        return not name.startswith(REPLACED_PREFIX) and name != lock.LOCK_FILE

    def move_aside(self) -> epath.Path:
        """Moves every entry (but earlier replaced-* folders and the lock) into a new
        WORKDIR/replaced-<time>/."""
        backup = self.path / time.strftime(f"{REPLACED_PREFIX}%Y%m%d-%H%M%S")
        for entry in storage.resolve_fresh(self.path).iterdir():
            if self._movable(entry.name):
                storage.move(entry, backup / entry.name)
        return backup


# Function forms, for callers holding a path.


def check(
    workdir: str,
    config: ml_collections.ConfigDict,
    *,
    overwrite: bool = False,
    evaluating: bool = False,
) -> None:
    RunDir(workdir).check(config, overwrite=overwrite, evaluating=evaluating)


def read_config(workdir: str) -> dict | None:
    return RunDir(workdir).read_config()


def prepare(workdir: str, *, overwrite: bool = False) -> epath.Path | None:
    return RunDir(workdir).prepare(overwrite=overwrite)


def record(
    workdir: str, config: ml_collections.ConfigDict, *, provenance: dict | None = None
) -> None:
    RunDir(workdir).record(config, provenance=provenance)


def claim(
    workdir: str,
    config: ml_collections.ConfigDict,
    *,
    overwrite: bool = False,
    provenance: dict | None = None,
) -> None:
    RunDir(workdir).claim(config, overwrite=overwrite, provenance=provenance)


def trim_metrics(workdir: str, step: int) -> None:
    RunDir(workdir).trim_metrics(step)


def read_events(workdir: str) -> list[dict]:
    return RunDir(workdir).read_events()
