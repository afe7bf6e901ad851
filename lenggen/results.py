"""Results files a script can read, and the table and plot a person looks at.

  results.json   {"train_max_length": int, "step": int,
                  "splits": {"validation": S, "test": S}}, with
                 S = {"overall": float, "by_length": {"<length>": {"exact_match": float, "n": int}}}
  metrics.jsonl  one JSON object per logged training or validation event.
  accuracy_vs_length.png   exact match per length bucket, train lengths shaded.
Writes are atomic (lenggen/rundir/storage.py: a temporary file renamed over the old one on a
local disk, one object upload on GCS): a crash mid-write leaves the previous file intact.
"""

import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from lenggen import json_keys
from lenggen.rundir import storage


def write_json_atomic(path: str, payload: Any) -> None:
    """Replaces `path` (local or gs://) with `payload` as JSON, atomically (lenggen.rundir)."""
    storage.write_json(path, payload)


def json_line(record: Mapping[str, Any]) -> str:
    return json.dumps(json_keys.natural_order(record)) + "\n"


def append_jsonl(path: str, record: Mapping[str, Any]) -> None:
    storage.append_line(path, json_line(record))


def bucket_exact_match(lengths: Iterable[int], correct: Iterable[bool]) -> dict:
    """Exact match per length bucket and micro-averaged over all examples (the paper's S)."""
    lengths = np.asarray(list(lengths), dtype=np.int64)
    correct = np.asarray(list(correct), dtype=bool)
    if lengths.shape != correct.shape:
        raise ValueError(f"lengths {lengths.shape} and correct {correct.shape} differ in shape.")
    by_length = {}
    for length in np.unique(lengths):
        selected = correct[lengths == length]
        by_length[str(int(length))] = dict(exact_match=float(selected.mean()), n=int(selected.size))
    overall = float(correct.mean()) if correct.size else 0.0
    return dict(overall=overall, by_length=by_length)


def format_table(results: Mapping[str, Any]) -> str:
    """A plain-text table: one row per length, one column per split, `*` on train lengths."""
    splits = results["splits"]
    lengths = sorted({int(k) for s in splits.values() for k in s["by_length"]})
    names = list(splits)
    header = f"{'length':>8} " + " ".join(f"{name:>16}" for name in names)
    lines = [header, "-" * len(header)]
    for length in lengths:
        cells = []
        for name in names:
            entry = splits[name]["by_length"].get(str(length))
            cells.append(
                f"{entry['exact_match']:>8.3f} (n={entry['n']:>4})" if entry else f"{'':>16}"
            )
        marker = "*" if length <= results["train_max_length"] else " "
        lines.append(f"{length:>7}{marker} " + " ".join(cells))
    lines.append("-" * len(header))
    lines.append(f"{'overall':>8} " + " ".join(f"{splits[n]['overall']:>16.3f}" for n in names))
    lines.append("* = a training length (in distribution)")
    return "\n".join(lines)


def plot_accuracy_vs_length(results: Mapping[str, Any], path: str, title: str) -> None:
    """Exact match against length, one line per split, training lengths shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, split in results["splits"].items():
        lengths = sorted(int(k) for k in split["by_length"])
        values = [split["by_length"][str(k)]["exact_match"] for k in lengths]
        axes.plot(lengths, values, marker="o", markersize=3, label=name)
    axes.axvspan(
        axes.get_xlim()[0],
        results["train_max_length"] + 0.5,
        color="0.9",
        zorder=0,
        label="training lengths",
    )
    axes.set_xlabel("length bucket")
    axes.set_ylabel("exact match")
    axes.set_ylim(-0.02, 1.02)
    axes.set_title(title)
    axes.legend(loc="best")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=120)
    plt.close(figure)
    storage.write_bytes(path, image.getvalue())  # Atomic, local or gs://.
