"""What a workdir holds, and the guard that stops two experiments sharing one.

The config a run trained with is written to WORKDIR/config.json. A later run in the same workdir
resumes only if the keys that shape training (seed, task, model, train) are equal; evaluation,
mesh and data-location keys, and the device-memory budget, may change (e.g. re-evaluating on
another machine). Files people or scripts read are replaced atomically (a temporary file renamed
over the old one), so a crash mid-write leaves the previous version whole.
"""

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
    with open(path) as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            replayed = record.get("event") in ("train", "validation") and record["step"] > step
            if not replayed:
                kept.append(results.json_line(record))
    write_lines_atomic(path, kept)


def check(workdir: str, config: ml_collections.ConfigDict, *, overwrite: bool = False) -> None:
    """Raises WorkdirConflictError if `workdir` trained another experiment (unless `overwrite`);
    writes nothing."""
    _conflicts(workdir, json.loads(config.to_json()), overwrite=overwrite)


def _conflicts(workdir: str, current: dict, *, overwrite: bool) -> bool:
    """True when `workdir` holds another experiment and `overwrite` is set; raises if unset."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return False
    with open(path) as handle:
        saved = json.load(handle)
    differences = differing_keys(saved, current)
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


def claim(workdir: str, config: ml_collections.ConfigDict, *, overwrite: bool = False) -> None:
    """Records `config` in `workdir`, refusing a workdir that trained another experiment.

    With `overwrite`, the other run's files are moved to WORKDIR/replaced-<time>/ rather than
    deleted, so nothing is lost.

    Raises:
      WorkdirConflictError: naming the differing keys, unless `overwrite`.
    """
    os.makedirs(workdir, exist_ok=True)
    current = json.loads(config.to_json())
    if _conflicts(workdir, current, overwrite=overwrite):
        _move_aside(workdir)
    results.write_json_atomic(os.path.join(workdir, CONFIG_FILE), current)


def _move_aside(workdir: str) -> str:
    """Moves every entry of `workdir` (but earlier replaced-* folders) into a new subfolder."""
    backup = os.path.join(workdir, time.strftime("replaced-%Y%m%d-%H%M%S"))
    os.makedirs(backup)
    for entry in os.listdir(workdir):
        if not entry.startswith("replaced-"):
            os.replace(os.path.join(workdir, entry), os.path.join(backup, entry))
    return backup
