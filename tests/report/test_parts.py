"""The report's parts on hand cases: number formatting, tables, verdict arithmetic, layout, figures."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpo_vae.report import grn_plots, load_tables
from gpo_vae.report.html import format_number, html_table, png_data_uri
from gpo_vae.report.tables import metric_columns, summarise_predictions
from gpo_vae.report.verdict import baseline_verdicts, compare


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.41234, "0.412"),
        (-0.0271, "-0.0271"),
        (0.99951, "1"),
        (12345.6, "12,346"),
        (-1234.5, "-1,234"),  # round half to even
        (3, "3"),
        (np.int64(1500), "1,500"),
        (2.0, "2"),
        (2.5, "2.5"),
        (123.456, "123"),
        (1.2e-5, "1.2e-05"),
        (0.0, "0"),
        (-0.0, "0"),
        (float("nan"), "—"),
        (None, "—"),
        (np.float32("nan"), "—"),
        (float("inf"), "∞"),
        (True, "yes"),
        ("p>0.5", "p>0.5"),
    ],
)
def test_format_number(value: object, text: str) -> None:
    assert format_number(value) == text


def test_html_table_escapes_and_aligns() -> None:
    frame = pd.DataFrame({"node": ["<b>x</b>", "a&b"], "p": [0.123456, np.nan]})
    text = html_table(frame, headers=["node <name>", "p"], highlight=[False, True])
    assert "<b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text and "a&amp;b" in text
    assert "<th>node &lt;name&gt;</th>" in text and '<th class="num">p</th>' in text
    assert (
        '<td class="num">0.123</td>' in text
        and '<tr class="highlight"><td>a&amp;b</td><td class="num">—</td>' in text
    )
    with pytest.raises(ValueError, match="1 headers for 2 columns"):
        html_table(frame, headers=["one"])


def test_png_data_uri_rejects_other_bytes() -> None:
    assert png_data_uri(b"\x89PNG\r\n\x1a\nrest").startswith("data:image/png;base64,iVBORw0KGg")
    with pytest.raises(ValueError, match="not PNG"):
        png_data_uri(b"<svg/>")


def test_metric_columns_order_and_filter() -> None:
    frame = pd.DataFrame(
        columns=[
            "method",
            "jaccard_top50",
            "r2_top20",
            "pearson",
            "n_cells",
            "jaccard_top20",
            "r2",
            "pearson_top20",
        ]
    )
    assert metric_columns(frame) == [
        "pearson",
        "r2",
        "pearson_top20",
        "r2_top20",
        "jaccard_top20",
        "jaccard_top50",
    ]


def _metrics(model: list[float], baseline: list[float]) -> pd.DataFrame:
    rows = []
    for method, values in (("model", model), ("mean_baseline", baseline)):
        for i, value in enumerate(values):
            rows.append(
                {
                    "method": method,
                    "reference": "heldout_test",
                    "subset": "all_cells",
                    "perturbation": f"p{i}",
                    "pearson": value,
                    "r2": value - 1,
                }
            )
    return pd.DataFrame(rows)


def test_compare_is_paired_and_counts_wins() -> None:
    metrics = _metrics([0.5, 0.2, np.nan, 0.9], [0.4, 0.3, 0.8, 0.1])
    got = compare(metrics, "model", "mean_baseline")
    assert got is not None
    assert got.n == 3  # p2 has no model value: dropped on both sides
    assert got.mean == pytest.approx((0.5 + 0.2 + 0.9) / 3)
    assert got.other_mean == pytest.approx((0.4 + 0.3 + 0.1) / 3)
    assert (got.wins, got.losses, got.relation) == (2, 1, "above")
    other_slice = metrics.assign(reference="all_cells")
    assert compare(other_slice, "model", "mean_baseline") is None


def test_verdict_wording_by_hand() -> None:
    below = baseline_verdicts(_metrics([0.1, 0.2, 0.3], [0.5, 0.6, 0.1]))
    assert below[0].text == (
        "The model's mean Pearson r on held-out ATE (0.2) is below the per-perturbation training-mean "
        "baseline (0.4); the baseline is better on 2 of 3 perturbations."
    )
    assert below[0].tone == "bad"
    par = baseline_verdicts(_metrics([0.3, 0.5], [0.5, 0.3]))
    assert "is on par with" in par[0].text and par[0].tone == "neutral"
    no_baseline = _metrics([0.3], [0.1])
    no_baseline = no_baseline[no_baseline["method"] == "model"]
    assert baseline_verdicts(no_baseline)[0].text.startswith("Mean baseline not computed")
    assert baseline_verdicts(no_baseline.assign(method="sams_vae"))[0].text.startswith("No model rows")


def test_summarise_predictions_by_hand() -> None:
    metrics = _metrics([0.1, 0.3, np.nan], [0.5, 0.5, 0.8])
    summary = summarise_predictions(metrics).set_index(["method", "metric"])
    assert summary.loc[("model", "pearson"), "mean"] == pytest.approx(0.2)
    assert summary.loc[("model", "pearson"), "n"] == 2
    assert summary.loc[("mean_baseline", "r2"), "median"] == pytest.approx(-0.5)


def test_order_nodes_puts_p_first() -> None:
    names = ["a1", "p1", "a2", "p2"]
    mask = pd.DataFrame(np.arange(16.0).reshape(4, 4) / 16, index=names, columns=names)
    nodes = pd.DataFrame({"node": names, "kind": ["A", "P", "A", "P"]})
    ordered, n_p = grn_plots.order_nodes(mask, nodes)
    assert n_p == 2 and list(ordered.index) == ["p1", "p2", "a1", "a2"] == list(ordered.columns)
    assert ordered.loc["p2", "a1"] == mask.loc["p2", "a1"]
    assert grn_plots.order_nodes(mask, None) == (mask, None)
    with pytest.raises(ValueError, match="disagree"):
        grn_plots.order_nodes(mask, nodes.iloc[:3])


def test_spring_layout_keeps_edges_short_and_is_deterministic() -> None:
    # two triangles and an isolated pair: adjacent nodes end up closer than the rest
    sources = np.array([0, 1, 2, 3, 4, 5, 6])
    targets = np.array([1, 2, 0, 4, 5, 3, 7])
    pos = grn_plots.spring_layout(8, sources, targets)
    assert pos.shape == (8, 2) and np.abs(pos).max() == pytest.approx(1.0)
    np.testing.assert_array_equal(pos, grn_plots.spring_layout(8, sources, targets))
    distance = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    adjacent = np.zeros((8, 8), dtype=bool)
    adjacent[sources, targets] = adjacent[targets, sources] = True
    off = ~adjacent & ~np.eye(8, dtype=bool)
    assert distance[adjacent].max() < np.median(distance[off])


def test_labels_point_away_from_edges() -> None:
    pos = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    away = grn_plots.label_directions(pos, np.array([0, 0]), np.array([1, 2]))
    np.testing.assert_allclose(away[0], -np.array([1.0, 1.0]) / np.sqrt(2))
    np.testing.assert_allclose(away[1], [1.0, 0.0])  # its only edge comes from the left
    np.testing.assert_allclose(away[3], [0.0, 1.0])  # no edge: label above


def _png_size(png: bytes) -> tuple[int, int]:
    return struct.unpack(">II", png[16:24])


def test_heatmap_at_full_size_keeps_a_pixel_per_node() -> None:
    n = 655
    names = [f"N{i}" for i in range(n)]
    mask = pd.DataFrame(np.random.default_rng(0).random((n, n)), index=names, columns=names)
    start = time.perf_counter()
    png = grn_plots.heatmap_figure(mask, n_perturbed=150)
    assert time.perf_counter() - start < 20  # ~1 s here; a regression to per-cell drawing is minutes
    width, height = _png_size(png)
    assert height >= 1.2 * n and width >= height  # the image area alone spans more than n pixels


def test_pr_curves_are_thinned() -> None:
    recall = np.linspace(1, 0, 5000)
    curve = pd.DataFrame({"recall": recall, "precision": 1 - recall / 2})
    thinned = grn_plots._thin(curve)
    assert len(thinned) == grn_plots.MAX_CURVE_POINTS
    assert thinned["recall"].iloc[0] == 1 and thinned["recall"].iloc[-1] == 0  # both ends kept


def test_k_column_is_canonical(tmp_path: Path) -> None:
    header = "method,k,n_edges,n_tested,true_positives,false_positives,precision,mean_wasserstein,"
    header += "path_mean_wasserstein,false_omission_rate,negative_mean_wasserstein\n"
    rows = "model,p>0.5,3,3,1,2,0.33,0.1,0.1,0.0,0.1\nmodel,250.0,250,250,9,241,0.036,0.1,0.1,0.0,0.1\n"
    (tmp_path / "grn_statistical.csv").write_text(header + rows)
    assert load_tables(tmp_path).grn_statistical["k"].tolist() == ["p>0.5", "250"]


def test_the_report_says_which_metric_to_trust_when_r_and_r2_disagree():
    import pandas as pd

    from gpo_vae.report.sections import metrics_disagree_text

    disagree = pd.DataFrame({"pearson": [0.15, 0.31], "r2": [0.05, -0.39]}, index=["model", "mean_baseline"])
    text = metrics_disagree_text(disagree)
    assert text.startswith("The metrics disagree: Pearson r puts the model at 0.15") and "Trust r" in text
    agree = pd.DataFrame({"pearson": [0.30, 0.31], "r2": [0.05, 0.06]}, index=["model", "mean_baseline"])
    assert metrics_disagree_text(agree) == ""
    assert metrics_disagree_text(disagree.drop(index="mean_baseline")) == ""


def test_the_baseline_table_averages_every_method_over_the_same_perturbations():
    """On a held-out split the training mean has no prediction for the held-out genes: the table
    showed the model over 18 perturbations beside the mean over 14 (issue 34)."""
    import pandas as pd

    from gpo_vae.report.tables import summarise_predictions

    rows = []
    for i in range(6):
        held_out = i >= 4
        rows.append(
            {"method": "model", "perturbation": f"P{i}", "pearson": 0.1 if held_out else 0.6, "r2": 0.0}
        )
        rows.append(
            {
                "method": "mean_baseline",
                "perturbation": f"P{i}",
                "pearson": float("nan") if held_out else 0.5,
                "r2": 0.0,
            }
        )
    metrics = pd.DataFrame(rows).assign(reference="heldout_test", subset="all_cells")
    summary = summarise_predictions(metrics)
    pearson = summary[summary["metric"] == "pearson"].set_index("method")
    assert (pearson["n"] == 4).all()
    assert pearson.loc["model", "mean"] == pytest.approx(0.6) and pearson.loc[
        "mean_baseline", "mean"
    ] == pytest.approx(0.5)
