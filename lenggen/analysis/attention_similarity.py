r"""How close are other PEs' attention patterns to NoPE's? (the paper's attention analysis)

The paper (docs/paper.md, "Analyses"): on SCAN, teacher-forced, 10 examples per length; per
layer the distance (JSD, and symmetric KL) between the per-query attention distributions of
NoPE's heads and another PE's heads, minimum over head pairs, averaged over layers; the
reference "NoPE'" is NoPE against NoPE of another seed. The paper found NoPE closest to T5's
relative bias.

Every compared run must be trained on the same task as the reference. Each example's distance is
the mean over layers of `divergence.layer_distance` (all its real queries and keys); reported per
comparison: the mean over examples, per layer and per length bucket.

  python -m lenggen.analysis.attention_similarity --reference=runs/scan/nope/256788 \
      --compare=runs/scan/nope/234054,runs/scan/t5/256788,runs/scan/alibi/256788 \
      --output_dir=runs/scan/analysis

Writes OUTPUT_DIR/attention_similarity.json and attention_similarity.png. `--variant=official`
computes what the official code did instead (head pairs i < j only, its own "JSD" with the
mixture first, validation and test lengths averaged together; `divergence.official_jsd`), and
`--variant=both` both, so numbers can be set next to the paper's: the official variant's absolute
values differ from the standard ones, the order of the PEs is what compares.
"""

import os
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from lenggen import quiet_logs, results
from lenggen.analysis import divergence
from lenggen.analysis import runs as runs_lib

JSON_FILE = "attention_similarity.json"
PLOT_FILE = "attention_similarity.png"
AXIS_NAMES = {"jsd": "Jensen-Shannon divergence", "symmetric_kl": "symmetric KL divergence"}


def _check_comparable(reference: runs_lib.Run, other: runs_lib.Run) -> None:
    if other.config.task.to_dict() != reference.config.task.to_dict():
        raise ValueError(
            f"Run {other.workdir} trained on task {other.config.task.to_dict()}, the reference "
            f"{reference.workdir} on {reference.config.task.to_dict()}; expected the same task."
        )
    if other.model.num_layers != reference.model.num_layers:
        raise ValueError(
            f"Run {other.workdir} has {other.model.num_layers} layers, the reference "
            f"{reference.model.num_layers}; expected the same depth (distances are per layer)."
        )


def _summary(per_example: np.ndarray, lengths: np.ndarray) -> dict:
    """per_example `[examples, layers]` -> overall, by_layer and by_length means."""
    return dict(
        overall=float(per_example.mean()),
        by_layer=[float(x) for x in per_example.mean(axis=0)],
        by_length={
            str(length): float(per_example[lengths == length].mean())
            for length in sorted(set(lengths.tolist()))
        },
    )


VARIANTS = ("standard", "official", "both")
# The official analysis compares attention on the validation and the test lengths together.
OFFICIAL_SPLITS = ("validation", "test")


def _distances(reference, others, records, batch_size, batch_fn, metrics) -> dict:
    """{(comparison index, metric): [examples, layers]} of `batch_fn` on `records`."""
    layers = reference.model.num_layers
    distances = {
        (c, metric): np.zeros((len(records), layers))
        for c in range(len(others))
        for metric in metrics
    }
    for batch in runs_lib.batches(records, batch_size):
        rows = np.flatnonzero(batch["example_mask"])
        examples = batch["index"][rows]
        ours = runs_lib.attention(reference, batch)  # [layers, batch, heads, T, T]
        for c, other in enumerate(others):
            theirs = runs_lib.attention(other, batch)
            for layer in range(layers):
                found = batch_fn(ours[layer], theirs[layer], batch["valid"])
                for metric, values in found.items():
                    distances[c, metric][examples, layer] = np.asarray(values)[rows]
    return distances


def compare(
    reference: runs_lib.Run,
    others: Sequence[runs_lib.Run],
    *,
    split: str = "test",
    examples_per_length: int = 10,
    batch_size: int = 16,
    variant: str = "standard",
) -> dict:
    """Distances between the reference's attention and each other run's, on the same examples.

    Args:
      variant: "standard": `divergence.METRICS`, every head pair, on `split`. "official": the
        official code's computation (`divergence.official_layer_distance`: head pairs i < j
        only, its own "JSD"), on the validation and test lengths together (`split` unused),
        reported as `official_jsd` and `official_symmetric_kl`; their absolute values are not
        comparable with the standard ones, their order is. "both": both sets of metrics.
    Returns:
      The JSON payload: the reference, `metrics` (the names computed) and, per comparison,
      `{metric: {overall, by_layer, by_length}}`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: expected one of {', '.join(VARIANTS)}.")
    for other in others:
        _check_comparable(reference, other)
    summaries: list[dict] = [{} for _ in others]
    payload = dict(
        task=reference.config.task.to_dict(), split=split, examples_per_length=examples_per_length
    )
    jobs = []
    if variant in ("standard", "both"):
        jobs.append(("", (split,), divergence.batch_layer_distances, divergence.METRICS))
    if variant in ("official", "both"):
        jobs.append(
            (
                "official_",
                OFFICIAL_SPLITS,
                divergence.batch_official_layer_distances,
                divergence.OFFICIAL_METRICS,
            )
        )
    for prefix, splits, batch_fn, metrics in jobs:
        records = [
            record
            for name in splits
            for record in runs_lib.examples_per_length(
                reference.task, reference.tokenizer, name, examples_per_length
            )
        ]
        lengths = np.array([int(r["length"]) for r in records])
        distances = _distances(reference, others, records, batch_size, batch_fn, metrics)
        for c in range(len(others)):
            for metric in metrics:
                summaries[c][prefix + metric] = _summary(distances[c, metric], lengths)
        payload[f"{prefix}num_examples" if prefix else "num_examples"] = len(records)
    payload["metrics"] = list(summaries[0]) if others else []
    payload["reference"] = _describe(reference)
    payload["comparisons"] = [
        dict(_describe(other), **summaries[c]) for c, other in enumerate(others)
    ]
    return payload


def _describe(run: runs_lib.Run) -> dict:
    return dict(
        workdir=run.workdir,
        label=run.label,
        pe=run.config.model.pe.name,
        seed=run.config.seed,
        step=run.step,
    )


def plot(payload: dict, path: str) -> None:
    """Writes `draw(payload)` to `path` (PNG)."""
    import matplotlib.pyplot as plt

    figure = draw(payload)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def draw(payload: dict):
    """One bar per comparison and metric (mean over layers and examples). Returns the Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = tuple(payload.get("metrics", divergence.METRICS))
    labels = [c["label"] for c in payload["comparisons"]]
    figure, axes = plt.subplots(
        1, len(metrics), figsize=(4 + 1.2 * len(labels), 4.4), layout="constrained"
    )
    for axis, metric in zip(np.atleast_1d(axes), metrics, strict=True):
        values = [c[metric]["overall"] for c in payload["comparisons"]]
        axis.bar(range(len(labels)), values, color="tab:blue")
        axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        axis.set_title(f"{metric} to {payload['reference']['label']}")
        # Each example's distance: per layer the closest head pair, averaged over layers.
        axis.set_ylabel(
            f"{AXIS_NAMES.get(metric, metric)}\n(closest head pair; mean over layers and examples)",
            fontsize=9,
        )
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(
        f"attention distance, {payload['task']['name']} ({payload['split']}, "
        f"{payload['examples_per_length']} per length)"
    )
    return figure


def run(
    reference: str,
    compare_with: Sequence[str],
    output_dir: str,
    *,
    split: str = "test",
    examples_per_length: int = 10,
    batch_size: int = 16,
    checkpoint: str = "best",
    variant: str = "standard",
) -> dict:
    """Loads the workdirs, compares them and writes the JSON and PNG into `output_dir`."""
    if not compare_with:
        raise ValueError("expected at least one workdir to compare with the reference, got none")
    payload = compare(
        runs_lib.load(reference, checkpoint),
        [runs_lib.load(workdir, checkpoint) for workdir in compare_with],
        split=split,
        examples_per_length=examples_per_length,
        batch_size=batch_size,
        variant=variant,
    )
    os.makedirs(output_dir, exist_ok=True)
    results.write_json_atomic(os.path.join(output_dir, JSON_FILE), payload)
    plot(payload, os.path.join(output_dir, PLOT_FILE))
    return payload


def _define_flags() -> None:
    """Command-line flags, defined only when run as a command (importing defines none)."""
    flags.DEFINE_string("reference", None, "Workdir of the reference run (NoPE).")
    flags.DEFINE_list(
        "compare",
        None,
        "Workdirs to compare with the reference (e.g. NoPE of "
        "another seed, T5, ALiBi, Rotary, APE).",
    )
    flags.DEFINE_string("output_dir", None, "Where the JSON and PNG are written.")
    flags.DEFINE_enum("split", "test", ("train", "validation", "test"), "Examples' split.")
    flags.DEFINE_integer("examples_per_length", 10, "Examples per length bucket.")
    flags.DEFINE_integer("batch_size", 16, "Examples per forward pass.")
    flags.DEFINE_enum("checkpoint", "best", runs_lib.CHECKPOINTS, "Which checkpoint.")
    flags.DEFINE_enum(
        "variant",
        "standard",
        VARIANTS,
        "standard: JSD and symmetric KL over "
        "all head pairs on --split; official: the official code's computation "
        "(pairs i<j, its 'JSD', validation + test lengths); both.",
    )
    flags.mark_flags_as_required(["reference", "compare", "output_dir"])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    quiet_logs.warnings_only_unless_asked()  # Orbax and JAX log dozens of INFO lines.
    flag = flags.FLAGS
    payload = run(
        flag.reference,
        flag.compare,
        flag.output_dir,
        split=flag.split,
        examples_per_length=flag.examples_per_length,
        batch_size=flag.batch_size,
        checkpoint=flag.checkpoint,
        variant=flag.variant,
    )
    for comparison in payload["comparisons"]:
        print(
            f"{comparison['label']:<28} "
            + "  ".join(f"{m} {comparison[m]['overall']:.4f}" for m in payload["metrics"])
        )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
