"""Figure labels that do not run into each other: the tick labels of the per-perturbation box
plots (rotated, parallel) and the node labels of the edge graph, measured on the drawn figure."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gpo_vae.report import grn_plots, plots
from gpo_vae.report.tables import metric_columns
from tests.report.test_report import write_eval_dir


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Every figure the report's plotting functions draw, laid out as render lays them out."""
    figures: list[Figure] = []

    def keep(draw, size, dpi=plots.DPI) -> bytes:
        with mpl.rc_context(plots.STYLE):
            figure = Figure(figsize=size, dpi=dpi, layout="constrained")
            FigureCanvasAgg(figure)
            draw(figure)
            figure.draw_without_rendering()
        figures.append(figure)
        return b""

    monkeypatch.setattr(plots, "render", keep)
    monkeypatch.setattr(grn_plots, "render", keep)
    return figures


def test_the_box_plot_labels_of_six_methods_keep_apart(drawn: list[Figure]):
    """Parallel labels rotated by θ and anchored at ticks Δx apart are Δx·sin θ apart across their
    direction: that must exceed a label's height, or neighbours overlap."""
    methods = list(plots.METHOD_ORDER[:6])  # the model, SAMS-VAE, and the four baselines
    rng = np.random.default_rng(0)
    rows = [
        {
            "method": m,
            "perturbation": f"P{i}",
            "pearson": rng.uniform(),
            "r2": rng.uniform(),
            "jaccard_top20": rng.uniform(),
        }
        for m in methods
        for i in range(20)
    ]
    held = pd.DataFrame(rows)
    plots.metric_distribution_figure(held, metric_columns(held))
    figure = drawn[-1]
    renderer = figure.canvas.get_renderer()
    for ax in figure.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        assert len(labels) == len(methods)
        x = np.sort([ax.transData.transform((t.get_position()[0], 0))[0] for t in labels])
        angle = math.radians(labels[0].get_rotation())
        _, height, _ = renderer.get_text_width_height_descent(
            "Mg", labels[0].get_fontproperties(), ismath=False
        )
        assert np.diff(x).min() * math.sin(angle) >= height, (ax.get_title(), np.diff(x).min(), height)
        assert all(t.get_rotation_mode() == "anchor" for t in labels), "anchored at the tick, not centred"


def test_the_edge_graph_labels_do_not_overlap(drawn: list[Figure], tmp_path: Path):
    root = write_eval_dir(tmp_path / "eval")
    grn_plots.network_figure(pd.read_csv(root / "grn_edges.csv"), pd.read_csv(root / "grn_nodes.csv"))
    figure = drawn[-1]
    renderer = figure.canvas.get_renderer()
    texts = [t for t in figure.axes[0].texts if t.get_text()]
    assert len(texts) >= 5
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    crossing = [
        (a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)
    ]
    assert crossing == []
