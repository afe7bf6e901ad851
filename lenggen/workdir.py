"""What a workdir holds, and the guard that stops two experiments sharing one.

The config a run trained with is written to WORKDIR/config.json, once the run is known to start
(after its checkpoint restored, or with none to restore). A later run in the same workdir
resumes only if the keys that shape training (seed, task, model, train) are equal; evaluation,
mesh and data-location keys, and the device-memory budget, may change (e.g. re-evaluating on
another machine). `--mode=evaluate` compares the same keys: it scores a run only under the
config that run trained with, so results.json is never rewritten under another config
(EVALUATION_KEYS lists the training-side keys evaluation alone may change). Files people or
scripts read are replaced atomically (a temporary file renamed over the old one), so a crash
mid-write leaves the previous version whole.
"""

import errno
import json
import os
import tempfile
import time
from typing import Any

import ml_collections

from lenggen import results

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
PLOT_FILE = "accuracy_vs_length.png"
TRAINING_KEYS = ("seed", "task", "model", "train")
# Under TRAINING_KEYS but not shaping what is trained: a budget for the up-front memory check.
IGNORED_KEYS = ("train.max_bytes_per_device",)
# Under TRAINING_KEYS, but --mode=evaluate may change them: they change how a trained model is
# scored, not what was trained (e.g. a PE's test-time scaling). A resume must keep them equal.
# Dotted keys or prefixes ("model.pe.rotary.scaling" also covers its sub-keys).
EVALUATION_KEYS: tuple[str, ...] = ()
# What a run leaves in its workdir that only a run of some config could have written.
RUN_DIRECTORIES = ("checkpoints", "best")


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


def differing_keys(saved: dict, current: dict, *, evaluating: bool = False) -> list[str]:
    """Dotted keys under TRAINING_KEYS whose values differ (or exist in only one); when
    `evaluating`, but for EVALUATION_KEYS."""
    saved_flat = _flatten({k: saved.get(k) for k in TRAINING_KEYS})
    current_flat = _flatten({k: current.get(k) for k in TRAINING_KEYS})
    allowed = IGNORED_KEYS + (EVALUATION_KEYS if evaluating else ())
    return sorted(
        key for key in saved_flat.keys() | current_flat.keys()
        if saved_flat.get(key) != current_flat.get(key) and not _matches(key, allowed)
    )


def write_lines_atomic(path: str, lines: list[str]) -> None:
    """Writes `lines` (each ending in a newline) to `path` via a temporary file and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
        try:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            handle.close()
            os.unlink(handle.name)
            raise
    os.replace(handle.name, path)


def trim_metrics(workdir: str, step: int) -> None:
    """Drops the train and validation events of METRICS_FILE logged after `step` (a run
    resumed at `step` logs them again, so the file reads as one uninterrupted run) and any line
    a crash cut short. Other events (resumed, preempted, ...) are history and stay."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return
    kept = []
    for record in _metrics_lines(path):
        replayed = record.get("event") in ("train", "validation") and record["step"] > step
        if not replayed:
            kept.append(results.json_line(record))
    write_lines_atomic(path, kept)


def _metrics_lines(path: str) -> list[dict]:
    """The events of a metrics file, but for a last line a crash cut short (the text after
    the last newline: dropped). Any other line that does not read is damage a run must not
    paper over: WorkdirError names the file and line."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as handle:
        lines = handle.read().split(b"\n")
    records = []
    for number, raw in enumerate(lines[:-1], start=1):
        record = _metrics_record(raw)
        if record is None:
            raise WorkdirError(
                f"{path} line {number} is not a metrics record ({raw[:60]!r}): fix or delete "
                "that line, then run the same command again."
            )
        records.append(record)
    return records


def read_events(workdir: str) -> list[dict]:
    """Every event of METRICS_FILE, skipping lines that do not read (see `trim_metrics`)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path, "rb") as handle:
        records = [_metrics_record(raw) for raw in handle.read().split(b"\n")]
    return [record for record in records if record is not None]


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


def check(workdir: str, config: ml_collections.ConfigDict, *, overwrite: bool = False,
          evaluating: bool = False) -> None:
    """Raises WorkdirError unless `workdir` can hold this run; writes nothing.

    Refused: a path that is not a directory or cannot be written; a workdir of another
    experiment (unless `overwrite`); checkpoints without the config.json that says whose they
    are (unless `overwrite`); and, when `evaluating`, a workdir with no run in it.
    """
    _check_writable(workdir)
    has_config = os.path.exists(os.path.join(workdir, CONFIG_FILE))
    if evaluating and not has_config:
        raise WorkdirError(
            f"Workdir {workdir} holds no run to evaluate (no {CONFIG_FILE}): train first, "
            "e.g. with --mode=train_and_evaluate."
        )
    if not has_config and not overwrite:
        found = [d for d in RUN_DIRECTORIES if _non_empty_directory(os.path.join(workdir, d))]
        if found:
            raise WorkdirError(
                f"Workdir {workdir} has {' and '.join(f'{d}/' for d in found)} but no "
                f"{CONFIG_FILE}, so nothing says which experiment they belong to. Put that "
                "run's config.json back, use another --workdir, or pass --overwrite to move "
                "them aside and start from scratch."
            )
    if overwrite and not evaluating:
        return  # Everything there is moved aside before the run starts (`prepare`).
    _conflicts(workdir, json.loads(config.to_json()), overwrite=False, evaluating=evaluating)
    if not evaluating:
        _metrics_lines(os.path.join(workdir, METRICS_FILE))  # a resume rewrites it: read first


def _non_empty_directory(path: str) -> bool:
    return os.path.isdir(path) and bool(os.listdir(path))


def _check_writable(workdir: str) -> None:
    """Raises WorkdirError when `workdir` is not a directory or cannot be created or written."""
    existing = workdir
    while not os.path.exists(existing):
        parent = os.path.dirname(os.path.abspath(existing))
        if parent == os.path.abspath(existing):
            break
        existing = parent
    if not os.path.isdir(existing):
        what = "is" if existing == workdir else f"is under {existing}, which is"
        raise WorkdirError(f"--workdir={workdir} {what} a file; expected a directory.")
    # Asked, not probed: every process checks, and only process 0 writes to the workdir.
    # os.access answers for the mode bits (always yes to root), statvfs for read-only mounts.
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        reason = os.strerror(errno.EROFS)
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = os.strerror(errno.EACCES)
    else:
        return
    raise WorkdirError(
        f"--workdir={workdir} cannot be written ({existing}: {reason}); choose a writable "
        "directory."
    )


def read_config(workdir: str) -> dict | None:
    """The config.json of `workdir` as a dict; None when there is none.

    Raises:
      WorkdirError: the file is not a JSON object (naming the file and line).
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as handle:
            saved = json.loads(handle.read().decode())
    except json.JSONDecodeError as error:
        raise WorkdirError(
            f"{path} line {error.lineno} column {error.colno}: {error.msg}. Restore that run's "
            "config.json, or pass --overwrite to move the run aside and start from scratch."
        ) from None
    except ValueError as error:  # not UTF-8
        raise WorkdirError(f"{path} is not a text file ({error}). Restore that run's "
                           "config.json, or pass --overwrite to start from scratch.") from None
    if not isinstance(saved, dict):
        raise WorkdirError(f"{path} line 1: expected a JSON object, got {type(saved).__name__}.")
    return saved


def _conflicts(workdir: str, current: dict, *, overwrite: bool, evaluating: bool = False
               ) -> bool:
    """True when `workdir` holds another experiment and `overwrite` is set; raises if unset."""
    saved = read_config(workdir)
    if saved is None:
        return False
    differences = differing_keys(saved, current, evaluating=evaluating)
    if differences and evaluating:
        shown = ", ".join(
            f"{key} (saved {_flatten(saved).get(key)!r}, now {_flatten(current).get(key)!r})"
            for key in differences[:8]
        )
        raise WorkdirConflictError(
            f"Workdir {workdir} trained another config: {shown}"
            f"{' ...' if len(differences) > 8 else ''}. --mode=evaluate scores a run only "
            "under the config it trained with (it may change eval.*, mesh.* and data.*): "
            "drop those overrides."
        )
    if differences and not overwrite:
        shown = ", ".join(
            f"{key} (saved {_flatten(saved).get(key)!r}, now {_flatten(current).get(key)!r})"
            for key in differences[:8]
        )
        raise WorkdirConflictError(
            f"Workdir {workdir} holds a run of a different config: {shown}"
            f"{' ...' if len(differences) > 8 else ''}. Use another --workdir, or pass "
            "--overwrite to start this config there from scratch."
        )
    return bool(differences)


def prepare(workdir: str, *, overwrite: bool = False) -> str | None:
    """Creates `workdir`; with `overwrite`, moves everything in it to WORKDIR/replaced-<time>/
    (the run then starts from scratch, whatever config was there). Returns that folder, if any.
    """
    os.makedirs(workdir, exist_ok=True)
    if overwrite and any(not e.startswith("replaced-") for e in os.listdir(workdir)):
        return _move_aside(workdir)
    return None


def record(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Writes `config` to WORKDIR/config.json (atomically)."""
    results.write_json_atomic(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json()))


def claim(workdir: str, config: ml_collections.ConfigDict, *, overwrite: bool = False) -> None:
    """Records `config` in `workdir`, refusing a workdir that trained another experiment.

    With `overwrite`, what the workdir held is moved to WORKDIR/replaced-<time>/ rather than
    deleted, so nothing is lost.

    Raises:
      WorkdirConflictError: naming the differing keys, unless `overwrite`.
    """
    if not overwrite:
        _conflicts(workdir, json.loads(config.to_json()), overwrite=False)
    prepare(workdir, overwrite=overwrite)
    record(workdir, config)


def _move_aside(workdir: str) -> str:
    """Moves every entry of `workdir` (but earlier replaced-* folders) into a new subfolder."""
    backup = os.path.join(workdir, time.strftime("replaced-%Y%m%d-%H%M%S"))
    os.makedirs(backup)
    for entry in os.listdir(workdir):
        if not entry.startswith("replaced-"):
            os.replace(os.path.join(workdir, entry), os.path.join(backup, entry))
    return backup
