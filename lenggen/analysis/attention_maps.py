r"""A trained run's attention maps for one example: every layer and head, teacher-forced.

  python -m lenggen.analysis.attention_maps --workdir=runs/copy/nope/256788 \
      --output_dir=runs/copy/nope/256788/analysis --split=test --length=30

Writes OUTPUT_DIR/attention_maps.json (the example, its tokens and the weights
`[layers][heads][query][key]`) and attention_maps.png (a grid: one row per layer, one column per
head; query down, key across; the prompt/target boundary marked).
"""

import os
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from lenggen import quiet_logs, results
from lenggen.analysis import runs as runs_lib

JSON_FILE = "attention_maps.json"
PLOT_FILE = "attention_maps.png"


def pick_example(run: runs_lib.Run, split: str, length: int | None, index: int) -> dict:
    """The `index`-th example of length bucket `length` (default: the longest) of `split`."""
    records = runs_lib.examples_per_length(run.task, run.tokenizer, split, index + 1)
    lengths = sorted({int(r["length"]) for r in records})
    length = lengths[-1] if length is None else length
    if length not in lengths:
        raise ValueError(f"length {length} is not a bucket of split {split!r}; buckets: {lengths}")
    chosen = [r for r in records if int(r["length"]) == length]
    if index >= len(chosen):
        raise ValueError(
            f"split {split!r} has {len(chosen)} examples of length {length}; got index {index}"
        )
    return chosen[index]


def maps(run: runs_lib.Run, record: dict) -> dict:
    """The JSON payload: the example and its attention `[layers][heads][tokens][tokens]`."""
    batch = next(runs_lib.batches([record], batch_size=1))
    n = len(record["tokens"])
    weights = runs_lib.attention(run, batch)[:, 0, :, :n, :n]  # -> [layers, heads, n, n]
    return dict(
        workdir=run.workdir,
        label=run.label,
        pe=run.config.model.pe.name,
        seed=run.config.seed,
        step=run.step,
        length=int(record["length"]),
        source=_text(record["source"]),
        target=_text(record["target"]),
        source_length=int(record["source_length"]),
        tokens=[run.tokenizer.words[int(t)] for t in record["tokens"]],
        weights=np.round(weights.astype(np.float64), 5).tolist(),
    )


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def tick_labels(tokens: Sequence[str], max_labels: int = 40) -> tuple[list[int], list[str]]:
    """Tick positions and token labels for one axis: every token up to `max_labels`, else every
    k-th (k = ceil(n / max_labels)) so the labels stay legible."""
    step = max(1, -(-len(tokens) // max_labels))
    ticks = list(range(0, len(tokens), step))
    return ticks, [tokens[i] for i in ticks]


def plot(payload: dict, path: str) -> None:
    """Writes `draw(payload)` to `path` (PNG)."""
    import matplotlib.pyplot as plt

    figure = draw(payload)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def draw(payload: dict):
    """A layers x heads grid of heatmaps (query down, key across, token labels on the outer
    axes), the prompt/target boundary drawn on each, one shared colorbar. Returns the Figure."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = np.asarray(payload["weights"])  # [layers, heads, n, n]
    layers, heads, n, _ = weights.shape
    tokens = payload.get("tokens") or [str(i) for i in range(n)]
    ticks, labels = tick_labels(tokens)
    size = max(2.2, 0.11 * n)  # inches per heatmap: room for one label per token
    figure, axes = plt.subplots(
        layers,
        heads,
        figsize=(size * heads + 1.6, size * layers + 1.4),
        squeeze=False,
        layout="constrained",
    )
    boundary = payload["source_length"] - 0.5
    font = 6 if n > 16 else 7
    image = None
    for layer in range(layers):
        for head in range(heads):
            axis = axes[layer, head]
            image = axis.imshow(weights[layer, head], cmap="viridis", vmin=0.0, vmax=1.0)
            axis.axhline(boundary, color="white", linewidth=0.6)
            axis.axvline(boundary, color="white", linewidth=0.6)
            axis.set_xticks(
                ticks, labels if layer == layers - 1 else [], rotation=90, fontsize=font
            )
            axis.set_yticks(ticks, labels if head == 0 else [], fontsize=font)
            if layer == 0:
                axis.set_title(f"head {head}", fontsize=9)
            if head == 0:
                axis.set_ylabel(f"layer {layer}\nquery", fontsize=9)
            if layer == layers - 1:
                axis.set_xlabel("key", fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    title = (
        f"{payload['label']}, step {payload['step']}, length {payload['length']}: "
        f"{payload['source']} => {payload['target']}  (white lines: prompt | target)"
    )
    width = max(40, int(12 * (size * heads + 1.6)))  # characters that fit the figure's width
    figure.suptitle(textwrap.fill(title, width), fontsize=9)
    return figure


def run(
    workdir: str,
    output_dir: str,
    *,
    split: str = "test",
    length: int | None = None,
    index: int = 0,
    checkpoint: str = "best",
) -> dict:
    """Loads the run, renders one example's maps; writes the JSON and PNG into `output_dir`."""
    trained = runs_lib.load(workdir, checkpoint)
    payload = maps(trained, pick_example(trained, split, length, index))
    os.makedirs(output_dir, exist_ok=True)
    results.write_json_atomic(os.path.join(output_dir, JSON_FILE), payload)
    plot(payload, os.path.join(output_dir, PLOT_FILE))
    return payload


def _define_flags() -> None:
    """Command-line flags, defined only when run as a command (importing defines none)."""
    flags.DEFINE_string("workdir", None, "Workdir of the trained run.")
    flags.DEFINE_string("output_dir", None, "Where the JSON and PNG are written.")
    flags.DEFINE_enum("split", "test", ("train", "validation", "test"), "Example's split.")
    flags.DEFINE_integer("length", None, "Length bucket (default: the split's longest).")
    flags.DEFINE_integer("index", 0, "Which example of that length (0: the first).")
    flags.DEFINE_enum("checkpoint", "best", runs_lib.CHECKPOINTS, "Which checkpoint.")
    flags.mark_flags_as_required(["workdir", "output_dir"])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    quiet_logs.warnings_only_unless_asked()  # Orbax and JAX log dozens of INFO lines.
    flag = flags.FLAGS
    payload = run(
        flag.workdir,
        flag.output_dir,
        split=flag.split,
        length=flag.length,
        index=flag.index,
        checkpoint=flag.checkpoint,
    )
    print(
        f"{payload['label']}: {len(payload['weights'])} layers, example of length "
        f"{payload['length']} -> {os.path.join(flag.output_dir, PLOT_FILE)}"
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
