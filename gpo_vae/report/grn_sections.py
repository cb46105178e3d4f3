"""The GRN and provenance sections of the report (HTML strings)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from gpo_vae.grn.ranking import WIDE_K, ranking_sentence, reference_name
from gpo_vae.report import grn_plots, plots
from gpo_vae.report.html import figure_html, html_table, not_computed, section
from gpo_vae.report.tables import (
    MASK_FILE,
    RUN_FILE,
    SCREEN_FILE,
    SPECS,
    EvaluationTables,
    edge_threshold,
    own_graph_key,
)
from gpo_vae.report.verdict import grn_verdict

STAT_COLUMNS = {
    "k": "graph",
    "method": "method",
    "n_edges": "edges",
    "n_tested": "tested",
    "true_positives": "TP",
    "false_positives": "FP",
    "precision": "precision",
    "mean_wasserstein": "mean Wasserstein distance",
    "path_mean_wasserstein": "… along paths",
    "false_omission_rate": "FOR",
    "negative_mean_wasserstein": "… of random non-edges",
}
REFERENCE_COLUMNS = {
    "method": "method",
    "network": "network",
    "precision": "precision",
    "recall": "recall",
    "auprc": "AUPRC",
    "auroc": "AUROC",
    "n_positive": "reference edges",
    "positive_rate": "chance (positive rate)",
    "reason": "note",
}
TOP_EDGE_ROWS = 20
RANKING_COLUMNS = {
    "rank": "rank",
    "method": "method",
    "auprc": "AUPRC",
    "precision_at_k": "precision at K",
    f"precision_at_{WIDE_K}": f"precision at K = {WIDE_K:,}",
    "mean_wasserstein": "mean Wasserstein distance",
    "false_omission_rate": "FOR",
    "tied_at_k": "tied at K",
}


def ranking_section(tables: EvaluationTables) -> str:
    """Every GRN method at the model's edge count, ranked, with the verdict sentence."""
    title = "GRN methods at matched K"
    ranking = tables.grn_ranking
    if ranking is None or ranking.empty:
        return section("grn-ranking", title, not_computed("GRN ranking", [SPECS["grn_ranking"].file]))
    labels = {m: plots.method_label(m) for m in ranking["method"]}
    body = ""
    sentence = ranking_sentence(ranking, labels)
    if sentence is not None:
        body += f'<p class="verdict {sentence[1]}">{html.escape(sentence[0])}</p>'
    k = int(ranking["k"].iloc[0])
    by = str(ranking["ranked_by"].iloc[0])
    reference = reference_name(str(ranking["reference"].iloc[0]))
    if "tied_at_k" not in ranking:  # a grn_ranking.csv written before the column existed
        ranking = ranking.assign(tied_at_k=np.nan)
    shown = ranking[list(RANKING_COLUMNS)].assign(method=lambda f: f["method"].map(plots.method_label))
    body += html_table(shown, list(RANKING_COLUMNS.values()))
    ranked = (
        f"AUPRC against {reference}" if by == "auprc" else "mean Wasserstein distance (no reference network)"
    )
    lead = (
        f"Each method's graph cut to the model's size, K = {k:,} edges (its top-K scores), so every column "
        f"but AUPRC compares graphs of one size; ranked by {ranked}. Precision at K counts reference edges "
        f"among the K; at K = {WIDE_K:,} where the pairs allow it. Mean Wasserstein distance and FOR are "
        "CausalBench's, on held-out cells (section below). Tied at K counts the top-K edges picked among "
        "equal scores by pair order; where that is more than half of K (a constant score, e.g. GRNBoost2 "
        "without a measured regulator, ties all K) the method has no graph of its own at this K and its "
        "K columns are left blank. Baselines: network deconvolution (Feizi et al. "
        "2013) and an inspre-style sparse inverse (Brown et al. 2025) of the training cells' effect "
        "z-scores, |effect z| itself, |corr ΔX|, the model's mask before training, random scores and each "
        "known network given with --networks; GRNBoost2 and GIES are in benchmarks/grn.py (minutes, not "
        "every run)."
    )
    return section("grn-ranking", title, body, lead=lead)


def heatmap_section(tables: EvaluationTables) -> str:
    """The mask probabilities as a heatmap, nodes ordered P then A."""
    title = "GRN mask"
    if tables.grn_mask is None:
        return section("grn-mask", title, not_computed("GRN mask", [MASK_FILE]))
    mask, n_perturbed = grn_plots.order_nodes(tables.grn_mask, tables.grn_nodes)
    png = grn_plots.heatmap_figure(mask, n_perturbed)
    n = len(mask)
    caption = f"{n} × {n} edge probabilities (row = source, column = target); the diagonal is not an edge."
    if n > grn_plots.MAX_TICK_LABELS:
        caption += f" One node in {-(-n // grn_plots.MAX_TICK_LABELS)} is labelled."
    if n_perturbed is None:
        caption += " Node kinds unknown (no grn_nodes.csv): nodes in the mask's order."
    return section("grn-mask", title, figure_html(png, "GRN mask heatmap", caption))


def network_section(tables: EvaluationTables, top: int = 40) -> str:
    """The strongest edges drawn as a network, with the top of the edge table."""
    title = "Strongest edges"
    edges = tables.grn_edges
    if edges is None:
        return section("grn-network", title, not_computed("GRN edges", [SPECS["grn_edges"].file]))
    ranked = edges.sort_values("p", ascending=False, kind="stable")
    shown = min(top, len(ranked))
    png = grn_plots.network_figure(ranked, tables.grn_nodes, top=top)
    caption = f"The {shown} most probable of {len(ranked)} listed edges; arrows point from source to target."
    body = figure_html(png, "network of the strongest edges", caption)
    body += f"<h3>Top {min(TOP_EDGE_ROWS, len(ranked))} edges</h3>"
    body += html_table(ranked.head(TOP_EDGE_ROWS)[["source", "target", "p"]])
    return section("grn-network", title, body)


def reference_section(tables: EvaluationTables) -> str:
    """Precision-recall curves and the agreement table against reference networks."""
    title = "GRN vs reference networks"
    curves, reference = tables.grn_pr_curves, tables.grn_reference
    if curves is None and reference is None:
        files = [SPECS["grn_pr_curves"].file, SPECS["grn_reference"].file]
        return section("grn-reference", title, not_computed("Reference-network agreement", files))
    body = ""
    if reference is not None:
        for network in dict.fromkeys(reference["network"]):
            verdict = grn_verdict(reference, network)
            if verdict is not None:
                body += f'<p class="verdict {verdict.tone}">{html.escape(verdict.text)}</p>'
    if curves is not None and not curves.empty:
        png = grn_plots.pr_curves_figure(curves, reference)
        body += figure_html(
            png, "precision-recall curves", "Edges ranked by score; dashed: chance (positive rate)."
        )
    if reference is not None:
        methods = {m: i for i, m in enumerate(plots.ordered_methods(reference["method"].tolist()))}
        networks = {n: i for i, n in enumerate(dict.fromkeys(reference["network"]))}
        rank = [
            (networks[n], methods[m]) for n, m in zip(reference["network"], reference["method"], strict=True)
        ]
        table = reference.iloc[sorted(range(len(reference)), key=rank.__getitem__)]
        table = table[list(REFERENCE_COLUMNS)].assign(method=lambda f: f["method"].map(plots.method_label))
        body += (
            f"<h3>Precision and recall of the p &gt; {edge_threshold(tables):.3g} graph; ranking metrics "
            "of all scores</h3>"
        )
        body += html_table(table, list(REFERENCE_COLUMNS.values()))
    return section("grn-reference", title, body)


def _k_order(k: str, own: str) -> tuple[int, float]:
    """The thresholded graph (``own``) first, then top-K rows by K, then anything else."""
    if k == own:
        return (0, 0.0)
    return (1, float(k)) if k.isdigit() else (2, 0.0)


def statistical_section(tables: EvaluationTables) -> str:
    """CausalBench statistics per method and K, matched-K rows highlighted."""
    title = "CausalBench statistical evaluation (held-out cells)"
    stats = tables.grn_statistical
    if stats is None or stats.empty:
        return section(
            "grn-statistical", title, not_computed("CausalBench statistics", [SPECS["grn_statistical"].file])
        )
    order = {m: i for i, m in enumerate(plots.ordered_methods(stats["method"].tolist()))}
    own_key, threshold = own_graph_key(stats), edge_threshold(tables)
    rank = [(*_k_order(k, own_key), order[m]) for k, m in zip(stats["k"], stats["method"], strict=True)]
    table = stats.iloc[sorted(range(len(stats)), key=rank.__getitem__)]
    own = table[(table["method"] == "model") & (table["k"] == own_key)]["n_edges"]
    matched = str(int(own.iloc[0])) if len(own) and pd.notna(own.iloc[0]) else None
    figure_table = table
    if matched is not None:
        # every method's graph at the model's size is its thresholded row already (the model's own
        # threshold, the others' top K at that K): the top-K row of the same K repeats it
        table = table[table["k"] != matched]
    highlight = (table["k"] == own_key).to_list()
    shown = table[list(STAT_COLUMNS)].assign(
        method=lambda f: f["method"].map(plots.method_label),
        k=[
            _graph_label(k, m, matched, own_key, threshold)
            for k, m in zip(table["k"], table["method"], strict=True)
        ],
    )
    negatives = pd.to_numeric(stats.get("n_negatives", pd.Series(dtype=float)), errors="coerce").dropna()
    n_negatives = f"{int(negatives.iloc[0]):,}" if len(negatives) else "the"
    lead = (
        "Mean Wasserstein distance (CausalBench's μWD): for each edge a → b, the 1-Wasserstein distance "
        "between b's expression in held-out cells perturbed at a and in held-out controls, averaged "
        "over the graph's edges; larger means the graph's edges carry stronger measured effects. An "
        "edge is a true positive (TP) when that difference is significant (Mann-Whitney p < 0.05). "
        f"FOR (false omission rate): the share of {n_negatives} random non-edges that test significant."
    )
    body = ""
    if len(figure_table) > 1:
        body += figure_html(
            grn_plots.statistics_by_k_figure(figure_table), "CausalBench statistics against K"
        )
    body += html_table(shown, list(STAT_COLUMNS.values()), highlight=highlight)
    if matched is not None:
        body += (
            f'<p class="note">Highlighted: the model\'s own graph (p &gt; {threshold:.3g}, K = {html.escape(matched)} '
            "edges) and every other method's top K at that size: the comparison at matched K.</p>"
        )
    return section("grn-statistical", title, body, lead=lead)


def _graph_label(k: str, method: str, matched: str | None, own: str, threshold: float) -> str:
    if k != own:
        return f"top K = {k}"
    if method == "model":
        return f"p > {threshold:.3g} (K = {matched})" if matched is not None else f"p > {threshold:.3g}"
    return f"top K = {matched} (matched)" if matched is not None else "matched K"


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str | None]]:
    rows = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(_flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) or value is None else json.dumps(value, default=str)
            rows.append((name, text))
    return rows


def provenance_section(tables: EvaluationTables) -> str:
    """Run identity, versions and config from ``run.json``, and which inputs were present."""
    title = "Provenance"
    present = tables.present()
    files = {
        "run": RUN_FILE,
        "screen": SCREEN_FILE,
        "grn_mask": MASK_FILE,
        **{name: spec.file for name, spec in SPECS.items()},
    }
    inputs = pd.DataFrame(
        {"file": [files[name] for name in present], "present": [present[name] for name in present]}
    )
    inputs_html = f"<details><summary>Evaluation files found</summary>{html_table(inputs)}</details>"
    if tables.run is None:
        return section("provenance", title, not_computed("Provenance", [RUN_FILE]) + inputs_html)
    run = dict(tables.run)
    config, packages = run.pop("config", {}), run.pop("packages", {})
    top = pd.DataFrame(_flatten(run), columns=["field", "value"])
    body = html_table(top)
    if packages:
        body += "<h3>Packages</h3>" + html_table(
            pd.DataFrame(_flatten(packages), columns=["package", "version"])
        )
    if config:
        config_table = html_table(pd.DataFrame(_flatten(config), columns=["setting", "value"]))
        body += f"<details><summary>Configuration ({len(_flatten(config))} settings)</summary>{config_table}</details>"
    return section("provenance", title, body + inputs_html)
