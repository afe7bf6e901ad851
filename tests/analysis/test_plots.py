"""The figures people read: attention maps with a colorbar, token labels and a whole title;
the report's std band named in the legend; the similarity plot's y axis labelled."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lenggen.analysis import attention_maps, attention_similarity  # noqa: E402
from lenggen.report import plots  # noqa: E402


def _maps_payload(layers=2, heads=3, n=7):
    tokens = ["Copy:", "a", "b", "[SEP]", "a", "b", "</s>"][:n]
    weights = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]  # uniform causal rows
    return dict(
        label="nope (seed 1)",
        step=40,
        length=2,
        source="Copy: a b " * 12,
        target="a b " * 12 + "END",
        source_length=4,
        tokens=tokens,
        weights=np.broadcast_to(weights, (layers, heads, n, n)).tolist(),
    )


def test_attention_maps_have_colorbar_token_labels_and_whole_title():
    payload = _maps_payload()
    figure = attention_maps.draw(payload)
    try:
        figure.canvas.draw()
        axes = figure.axes
        assert len(axes) == 2 * 3 + 1  # the heatmaps and one colorbar
        colorbar = axes[-1]
        assert colorbar.get_ylabel() == "attention weight"
        assert colorbar.get_ylim() == (0.0, 1.0)
        bottom_left = axes[3]  # layer 1, head 0: both axes labelled
        assert [t.get_text() for t in bottom_left.get_xticklabels()] == payload["tokens"]
        assert [t.get_text() for t in bottom_left.get_yticklabels()] == payload["tokens"]
        assert [t.get_text() for t in axes[4].get_yticklabels()] == [""] * 7  # inner: none
        title = figure._suptitle
        assert (
            title.get_text().replace("\n", " ").endswith("END  (white lines: prompt | target)")
        )  # nothing cut
        box = title.get_window_extent()
        width, height = figure.canvas.get_width_height()
        assert 0 <= box.x0 and box.x1 <= width and box.y1 <= height  # inside the figure
    finally:
        plt.close(figure)


@pytest.mark.parametrize("n, expected_step", [(40, 1), (41, 2), (95, 3)])
def test_long_examples_label_every_kth_token(n, expected_step):
    tokens = [f"t{i}" for i in range(n)]
    ticks, labels = attention_maps.tick_labels(tokens)
    assert ticks == list(range(0, n, expected_step))
    assert labels == [tokens[i] for i in ticks]


def test_report_legend_explains_the_std_band():
    figure, axes = plt.subplots()
    try:
        curves = {
            "nope": {9: {"mean": 0.5, "std": 0.1, "n": 3}, 10: {"mean": 0.2, "std": 0.0, "n": 3}}
        }
        plots.draw_task(axes, curves, 8, plots.pe_colours(["nope"]), "Copy")
        labels = axes.get_legend_handles_labels()[1]
        assert labels == ["training lengths", "NoPE", plots.STD_BAND_LABEL]
        assert "std over seeds" in plots.STD_BAND_LABEL
    finally:
        plt.close(figure)


def test_similarity_plot_labels_its_y_axes():
    run = lambda pe: dict(label=f"{pe} (seed 1)")  # noqa: E731
    payload = dict(
        task={"name": "scan"},
        split="test",
        examples_per_length=10,
        reference=run("nope"),
        comparisons=[dict(run("t5"), jsd={"overall": 0.1}, symmetric_kl={"overall": 0.4})],
    )
    figure = attention_similarity.draw(payload)
    try:
        assert [a.get_ylabel().split("\n")[0] for a in figure.axes] == [
            "Jensen-Shannon divergence",
            "symmetric KL divergence",
        ]
        assert [a.patches[0].get_height() for a in figure.axes] == [0.1, 0.4]
    finally:
        plt.close(figure)
