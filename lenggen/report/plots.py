"""Exact match against length, per task, in the style of the paper's figures.

One line per PE (mean over seeds) with a ±1 std band, the training lengths shaded; one PNG per
task and a summary grid of every task with one shared legend.
"""

import math
import os
from collections.abc import Mapping, Sequence

import matplotlib

from lenggen.report.paper import PAPER_PE_ORDER, pe_label, task_label

# One fixed colour per PE across every figure (matplotlib's tab10), the paper's PEs first.
_PALETTE = matplotlib.colormaps["tab10"].colors
STD_BAND_LABEL = "band: mean ± 1 std over seeds"


def pe_colours(pes: Sequence[str]) -> dict[str, tuple]:
    others = [pe for pe in pes if pe not in PAPER_PE_ORDER]
    colours = {pe: _PALETTE[i] for i, pe in enumerate(PAPER_PE_ORDER)}
    for i, pe in enumerate(others):
        colours[pe] = _PALETTE[(len(PAPER_PE_ORDER) + i) % len(_PALETTE)]
    return {pe: colours[pe] for pe in pes}


def draw_task(
    axes,
    curves: Mapping[str, Mapping[int, dict]],
    train_max_length: int,
    colours: Mapping[str, tuple],
    title: str,
) -> None:
    """Draws one task's curves on `axes`.

    Args:
      curves: `{pe: {length: {"mean", "std", "n"}}}` (aggregate.by_length_table's per task).
      colours: `{pe: colour}` for every PE, in the order the legend lists them.
    """
    lengths = sorted({length for by_length in curves.values() for length in by_length})
    axes.axvspan(
        min(lengths) - 0.5, train_max_length + 0.5, color="0.92", zorder=0, label="training lengths"
    )
    for pe in colours:  # the PEs in report order (the paper's first)
        if pe not in curves:
            continue
        by_length = curves[pe]
        xs = sorted(by_length)
        means = [by_length[x]["mean"] for x in xs]
        stds = [by_length[x]["std"] or 0.0 for x in xs]
        axes.plot(
            xs,
            means,
            marker="o",
            markersize=2.5,
            linewidth=1.4,
            color=colours[pe],
            label=pe_label(pe),
        )
        axes.fill_between(
            xs,
            [max(m - s, 0.0) for m, s in zip(means, stds, strict=True)],
            [min(m + s, 1.0) for m, s in zip(means, stds, strict=True)],
            color=colours[pe],
            alpha=0.18,
            linewidth=0,
        )
    # An empty band whose only job is the legend entry that says what the bands are.
    axes.fill_between([], [], [], color="0.55", alpha=0.35, linewidth=0, label=STD_BAND_LABEL)
    axes.set_xlim(min(lengths) - 0.5, max(lengths) + 0.5)
    axes.set_ylim(-0.02, 1.02)
    axes.set_title(title)
    axes.set_xlabel("length")
    axes.set_ylabel("exact match")
    axes.grid(alpha=0.3)


def write_plots(
    out_dir: str,
    by_length: Mapping[str, Mapping],
    train_max_length: Mapping[str, int],
    pes: Sequence[str],
) -> dict[str, str]:
    """Writes plots/<task>.png per task and summary.png; returns `{task or "summary": path
    relative to out_dir}`."""
    matplotlib.use("Agg")  # files only, no display (as lenggen/results.py)
    import matplotlib.pyplot as plt

    colours = pe_colours(pes)
    os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
    written = {}
    for task, curves in by_length.items():
        figure, axes = plt.subplots(figsize=(6.4, 4.0))
        draw_task(axes, curves, train_max_length[task], colours, task_label(task))
        axes.legend(loc="best", fontsize="small")
        figure.tight_layout()
        written[task] = os.path.join("plots", f"{task}.png")
        figure.savefig(os.path.join(out_dir, written[task]), dpi=110)
        plt.close(figure)

    columns = min(5, len(by_length))
    rows = math.ceil(len(by_length) / columns)
    legend_inches = 0.4
    figure, grid = plt.subplots(
        rows, columns, squeeze=False, figsize=(3.4 * columns, 2.9 * rows + legend_inches)
    )
    # The grid may have more panels than tasks (hidden below).
    for axes, (task, curves) in zip(grid.flat, by_length.items(), strict=False):
        draw_task(axes, curves, train_max_length[task], colours, task_label(task))
    for axes in list(grid.flat)[len(by_length) :]:
        axes.set_visible(False)
    legend = {}  # label -> handle, over every panel (a PE may miss from some tasks)
    for axes in grid.flat:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    figure.legend(
        legend.values(), legend.keys(), loc="lower center", ncol=len(legend), frameon=False
    )
    figure.tight_layout(rect=(0, legend_inches / (2.9 * rows + legend_inches), 1, 1))
    written["summary"] = "summary.png"
    figure.savefig(os.path.join(out_dir, written["summary"]), dpi=110)
    plt.close(figure)
    return written
