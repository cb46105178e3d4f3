"""The headline and perturbation-prediction sections of the report (HTML strings)."""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from gpo_vae.grn.ranking import ranking_sentence
from gpo_vae.report import plots
from gpo_vae.report.html import figure_html, format_number, html_table, not_computed, section
from gpo_vae.report.scaled_section import scaled_headline
from gpo_vae.report.tables import (
    ALL_CELLS,
    HELDOUT,
    EvaluationTables,
    edge_threshold,
    headline_table,
    metric_columns,
    summarise_predictions,
)
from gpo_vae.report.verdict import (
    Verdict,
    baseline_verdicts,
    grn_verdict,
    mask_verdicts,
    noise_floor_verdict,
    scarce_controls_verdict,
    statistical_verdict,
)

REFERENCE_LABELS = {HELDOUT: "held-out test cells", ALL_CELLS: "all cells (published reference)"}
SUBSET_LABELS = {ALL_CELLS: "all cells", "qc_pass": "QC-pass cells"}


def _mean_metric(metrics: pd.DataFrame | None, method: str) -> float:
    """The method's mean held-out ATE r over the perturbations every method scores (headline_table)."""
    if metrics is None or "pearson" not in metrics.columns:
        return float("nan")
    table = headline_table(metrics).set_index("method")
    return float(table.loc[method, "mean_pearson"]) if method in table.index else float("nan")


def _card(label: str, value: object, note: str = "") -> str:
    extra = f'<div class="label">{html.escape(note)}</div>' if note else ""
    return (
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(format_number(value) if not isinstance(value, str) else value)}</div>'
        f"{extra}</div>"
    )


#: run.json metrics that the cards above already show, computed from the tables.
SHOWN_ABOVE = frozenset(
    {"model_mean_pearson", "mean_baseline_mean_pearson", "grn_edges", "grn_gain_true_network_auprc"}
)


def _scaled_key(key: str) -> bool:
    """run.json keys of the scaled scores: the headline shows them as a table, not as cards."""
    return "_scaled_" in key or key.endswith(("_baseline_b", "_replicate_r"))


def headline(tables: EvaluationTables) -> str:
    """Key numbers as cards, then the verdict on the baseline comparison."""
    run: dict[str, Any] = tables.run or {}
    data = run.get("data", {})
    metrics = tables.prediction_metrics
    n_perturbations = data.get("n_perturbations")
    if n_perturbations is None and metrics is not None:
        n_perturbations = metrics["perturbation"].nunique()
    cards = [
        _card("dataset", str(run.get("dataset", "unknown"))),
        _card(
            "cells",
            data.get("n_cells"),
            f"{format_number(data['n_test_cells'])} test" if "n_test_cells" in data else "",
        ),
        _card("perturbations", n_perturbations),
    ]
    model_r, baseline_r = _mean_metric(metrics, "model"), _mean_metric(metrics, "mean_baseline")
    if np.isfinite(model_r):
        note = f"training mean {format_number(baseline_r)}" if np.isfinite(baseline_r) else ""
        cards.append(_card("model r, held-out cells", model_r, note))
    scored = scored_edges(tables)
    if scored is not None:
        total, from_perturbed, _ = scored
        note = f"{format_number(from_perturbed)} from a perturbed gene" if from_perturbed != total else ""
        cards.append(_card(f"edges p > {edge_threshold(tables):.3g}", total, note))
    numbers = run.get("metrics", {})
    gain = numbers.get("grn_gain_true_network_auprc")
    if isinstance(gain, int | float):
        cards.append(_card("AUPRC gained in training", gain, "true network, model − initial mask"))
    rest = {
        key.replace("_", " "): value
        for key, value in numbers.items()
        if isinstance(value, int | float) and key not in SHOWN_ABOVE and not _scaled_key(key)
    }
    body = f'<div class="cards">{"".join(cards)}</div>' + scaled_headline(tables)
    if metrics is not None:
        body += verdict_html(baseline_verdicts(metrics)[:1], anchor="verdict")
    cautions = [scarce_controls_verdict(tables.screen)]
    if metrics is not None:
        cautions.insert(0, noise_floor_verdict(metrics))
    cautions = [c for c in cautions if c is not None]
    if cautions:
        body += verdict_html(cautions, anchor="caution")
    grn = grn_headline_verdicts(tables)
    if grn:
        body += verdict_html(grn, anchor="grn-verdict")
    if rest:
        frame = pd.DataFrame({"number": list(rest), "value": list(rest.values())})
        body += f"<details><summary>Every number of run.json</summary>{html_table(frame)}</details>"
    if scored is not None and scored[1] != scored[0]:
        total, from_perturbed, between = scored
        body += (
            f'<p class="note">Of the {format_number(total)} edges, {format_number(from_perturbed)} start at a '
            f"perturbed gene: only those can be checked against the screen (the true network and the "
            f"CausalBench statistics score pairs with a perturbed source; biological networks the "
            f"{format_number(between)} between two perturbed genes). An edge from a downstream DEG node "
            "has no intervention in the screen to test it.</p>"
        )
    return body


def scored_edges(tables: EvaluationTables) -> tuple[int, int, int] | None:
    """(edges of the model's graph, of them from a perturbed gene, between two perturbed genes), or None."""
    edges = tables.grn_edges
    if edges is None:
        return None
    edges = edges[edges["p"] > edge_threshold(tables)]
    if tables.grn_nodes is None:
        return len(edges), len(edges), len(edges)
    perturbed = set(tables.grn_nodes.loc[tables.grn_nodes["kind"] == "P", "node"].astype(str))
    source = edges["source"].astype(str).isin(perturbed)
    target = edges["target"].astype(str).isin(perturbed)
    return len(edges), int(source.sum()), int((source & target).sum())


def grn_headline_verdicts(tables: EvaluationTables) -> list[Verdict]:
    """The GRN in a sentence or two: AUPRC against the true network (else the first reference
    network), and the CausalBench mean Wasserstein distance, each beside the baselines."""
    verdicts = []
    reference = tables.grn_reference
    if reference is not None and not reference.empty:
        networks = list(dict.fromkeys(reference["network"]))
        network = "true_network" if "true_network" in networks else networks[0]
        found = grn_verdict(reference, network)
        if found is not None:
            verdicts.append(found)
    found = statistical_verdict(tables.grn_statistical)
    if found is not None:
        verdicts.append(found)
    if tables.grn_ranking is not None and not tables.grn_ranking.empty:
        labels = {m: plots.method_label(m) for m in tables.grn_ranking["method"]}
        ranked = ranking_sentence(tables.grn_ranking, labels)
        if ranked is not None:
            verdicts.append(Verdict(*ranked))
    hubs = []
    if tables.grn_edges is not None and len(tables.grn_edges):
        edges = tables.grn_edges[tables.grn_edges["p"] > edge_threshold(tables)]
        hubs = edges["source"].astype(str).value_counts(sort=True).index[:2].tolist()
    return verdicts + mask_verdicts((tables.run or {}).get("metrics", {}), hubs)


def verdict_html(verdicts: list[Verdict], anchor: str | None = None) -> str:
    """Verdict sentences as styled paragraphs; the first gets ``id=anchor``."""
    parts = []
    for i, verdict in enumerate(verdicts):
        ident = f' id="{anchor}"' if i == 0 and anchor else ""
        parts.append(f'<p class="verdict {verdict.tone}"{ident}>{html.escape(verdict.text)}</p>')
    return "".join(parts)


def ate_scale_text(tables: EvaluationTables) -> str:
    """How the ATE was scaled (``run.json`` ``data.ate_target_sum``), as a sentence."""
    data = (tables.run or {}).get("data", {})
    scale = data.get("ate_target_sum")
    if scale is None:
        return "ATE: log2(1 + x·10,000/library) per cell, mean over cells, minus the controls' mean."
    origin = data.get("ate_target_sum_from", "evaluation.ate_target_sum")
    median = data.get("median_training_library")
    depth = f"; the training cells' median library is {format_number(median)} UMIs" if median else ""
    generated = data.get("generated_library_size")
    cells = f"; the model's cells are generated with {format_number(generated)} UMIs" if generated else ""
    return (
        f"ATE: log2(1 + x·{format_number(scale)}/library) per cell ({origin}{depth}{cells}), mean "
        "over cells, minus the controls' mean."
    )


def _size(n_bytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes / 1e3:.0f} kB"


def cell_eval_text(tables: EvaluationTables) -> str:
    """What the cell-eval files hold (``run.json`` ``data.cell_eval``), as a sentence: how many of
    the scored cells cell-eval will read, and what the files and every cell would cost on disk."""
    export = (tables.run or {}).get("data", {}).get("cell_eval")
    if not export:
        return ""
    cells, scored = export["cells_per_label"], export["scored_cells_per_label"]
    sizes = export.get("bytes", {})
    files = ", ".join(f"{name} {_size(size)}" for name, size in sizes.items())
    batches = bool(((tables.screen or {}).get("batches") or {}).get("key"))
    if batches:
        held = (
            f"predictions.h5ad holds {format_number(cells)} of the {format_number(scored)} generated "
            "cells per perturbation this evaluation scored, drawn from each cell line in the label's "
            "test shares; run cell-eval with --celltype-col batch to score each line on its own (pooled "
            "over lines, a line's share of a label's cells reads as part of its effect, and the numbers "
            "differ from this report's per-line ATE)"
        )
    elif cells >= scored:
        held = (
            f"predictions.h5ad holds every one of the {format_number(scored)} generated cells per "
            "perturbation this evaluation scored, so cell-eval's pearson_delta on it is the model's r above"
        )
    else:
        held = (
            f"predictions.h5ad holds {format_number(cells)} of the {format_number(scored)} generated cells "
            "per perturbation this evaluation scored, so cell-eval's scores of it are noisier estimates "
            "than this report's (every cell would take about "
            f"{_size(export.get('predictions_bytes_all_cells', 0))}: evaluation.cell_eval_cells null)"
        )
    baseline = (
        "; baseline_predictions.h5ad holds the training-mean baseline (each perturbation's training cells)"
        if "baseline_predictions.h5ad" in sizes
        else "; no baseline_predictions.h5ad: some test perturbations have no training cell"
    )
    return f"Files for cell-eval ({files}): {held}{baseline}."


def baseline_section(tables: EvaluationTables) -> str:
    """Baseline comparison: means per method on the held-out reference, then every slice."""
    metrics = tables.prediction_metrics
    if metrics is None:
        return section(
            "baselines", "Baseline comparison", not_computed("Prediction metrics", ["prediction_metrics.csv"])
        )
    summary = summarise_predictions(metrics)
    columns = metric_columns(metrics)
    order = {m: i for i, m in enumerate(plots.ordered_methods(metrics["method"].tolist()))}
    held = summary[(summary["reference"] == HELDOUT) & (summary["subset"] == ALL_CELLS)]
    body = (
        '<p class="note">The main verdict (the model against the training-mean baseline) is in the '
        '<a href="#headline">headline</a>; the other comparisons:</p>'
    )
    body += verdict_html(baseline_verdicts(metrics)[1:])
    if held.empty:
        body += '<p class="missing">No rows on the held-out reference over all cells.</p>'
    else:
        means = held.pivot(index="method", columns="metric", values="mean").reindex(columns=columns)
        counts = held.groupby("method")["n"].max()
        means = means.loc[sorted(means.index, key=order.get)]
        table = pd.DataFrame({"method": [plots.method_label(m) for m in means.index]})
        table["perturbations"] = counts.reindex(means.index).to_numpy().astype(int)
        for column in columns:
            table[column] = means[column].to_numpy()
        headers = ["method", "perturbations", *(plots.metric_label(c) for c in columns)]
        body += "<h3>Mean over perturbations, held-out reference, all cells</h3>"
        body += html_table(table, headers, highlight=[m == "model" for m in means.index])
        body += (
            '<p class="note">Mean baseline: each perturbation\'s ATE on its training cells. Control '
            "baseline: no effect (ATE 0; its Pearson r is undefined). Split-half ceiling: half of the "
            f"test cells predicting the other half. {ate_scale_text(tables)}</p>"
        )
        disagreement = metrics_disagree_text(means)
        if disagreement:
            body += f'<p class="verdict neutral">{html.escape(disagreement)}</p>'
        exported = cell_eval_text(tables)
        if exported:
            body += f'<p class="note">{html.escape(exported)}</p>'

    pearson = summary[summary["metric"] == "pearson"].copy()
    # held-out reference and all cells first: the slice the verdict uses
    first = {"reference": HELDOUT, "subset": ALL_CELLS}
    pearson = pearson.sort_values(
        ["reference", "subset"], key=lambda s: s != first[str(s.name)], kind="stable"
    )
    pearson["slice"] = [
        f"{REFERENCE_LABELS.get(r, r)} · {SUBSET_LABELS.get(s, s)}"
        for r, s in zip(pearson["reference"], pearson["subset"], strict=True)
    ]
    wide = pearson.pivot(index="method", columns="slice", values="mean")
    wide = wide[list(dict.fromkeys(pearson["slice"]))]
    wide = wide.loc[sorted(wide.index, key=order.get)]
    table = pd.DataFrame({"method": [plots.method_label(m) for m in wide.index]})
    for column in wide.columns:
        table[column] = wide[column].to_numpy()
    body += "<h3>Mean Pearson r by reference and cell subset</h3>" + html_table(table)
    full = summary.assign(
        method=summary["method"].map(plots.method_label), metric=summary["metric"].map(plots.metric_label)
    )
    body += (
        f"<details><summary>All summary numbers (mean, median, count)</summary>{html_table(full)}</details>"
    )
    return section("baselines", "Baseline comparison", body)


def metrics_disagree_text(means: pd.DataFrame, margin: float = 0.01) -> str:
    """When the model and the training mean rank one way by Pearson r and the other by R², which
    to trust and why ('' when they agree or a number is missing). ``means``: method × metric."""
    try:
        r_model, r_mean = means.loc["model", "pearson"], means.loc["mean_baseline", "pearson"]
        q_model, q_mean = means.loc["model", "r2"], means.loc["mean_baseline", "r2"]
    except KeyError:
        return ""
    if not np.isfinite([r_model, r_mean, q_model, q_mean]).all():
        return ""
    if not (
        (r_model < r_mean - margin and q_model > q_mean + margin)
        or (r_model > r_mean + margin and q_model < q_mean - margin)
    ):
        return ""
    return (
        f"The metrics disagree: Pearson r puts the model at {format_number(r_model)} against the training "
        f"mean's {format_number(r_mean)}, R² at {format_number(q_model)} against {format_number(q_mean)}. "
        "Pearson r asks whether each predicted effect profile has the observed shape (which genes move, "
        "which way), R² whether its values are right, and it counts noise at full size as error: a mean of "
        "a few shallow cells has the right shape plus its noise (an R² below 0), a model that predicts weak "
        "effects smaller has a better R² and, if it also blurs their shape, a lower r. Trust r for the "
        "question this benchmark asks (does it know the effect?) and R² for the size of its effects."
    )


def on_target_text(tables: EvaluationTables) -> str:
    """The predicted against the observed change of each perturbation's own target, as a ratio and
    a sign count beside the training mean's (``run.json`` metrics of ``on_target.csv``); empty when
    no target is measured."""
    metrics = (tables.run or {}).get("metrics", {})
    n = metrics.get("on_target_n")
    ratio = metrics.get("model_on_target_ratio_median")
    if not n or ratio is None:
        return ""
    n = int(n)

    def signs(method: str) -> int:
        return round(float(metrics[f"{method}_on_target_sign_agreement"]) * n)

    text = (
        f"On-target change ({n} perturbations whose target is measured): the model predicts a "
        f"median {format_number(ratio)} of the observed change (predicted / observed), with the "
        f"observed sign for {signs('model')} of {n}"
    )
    base = metrics.get("mean_baseline_on_target_ratio_median")
    if base is not None:
        text += f"; the training mean {format_number(base)}, {signs('mean_baseline')} of {n}"
    if ratio < 0.75:
        text += ". The model shrinks the change of the gene it targets: read its predicted effects on the target with that in mind"
    elif signs("model") < n:
        text += ". Some targets move the wrong way in its predictions"
    return text + "."


def scatter_section(tables: EvaluationTables) -> str:
    """Perturbation by perturbation: the model's r against the training mean's (ranked), the
    on-target change, and predicted vs observed effects of perturbations across the r range."""
    title = "Perturbation by perturbation"
    metrics = tables.prediction_metrics
    body = ""
    if metrics is not None:
        held = metrics[(metrics["reference"] == HELDOUT) & (metrics["subset"] == ALL_CELLS)]
        methods = [m for m in ("mean_baseline", "model", "split_half_ceiling") if m in set(held["method"])]
        if "model" in methods and len(held):
            png = plots.ranked_r_figure(held, methods)
            wins = held.pivot_table(index="perturbation", columns="method", values="pearson", aggfunc="first")
            caption = "Each column is a perturbation, ranked by the training mean's r on its held-out cells."
            if "mean_baseline" in wins.columns:
                both = wins[["model", "mean_baseline"]].dropna()
                ahead = int((both["model"] > both["mean_baseline"]).sum())
                caption += f" The model is ahead of the training mean on {ahead} of {len(both)}."
            body += figure_html(png, "per-perturbation Pearson r, model and baselines, ranked", caption)
    target = on_target_text(tables)
    if target:
        body += f'<p class="note">{html.escape(target)}</p>'
    if tables.ate_scatter is not None and not tables.ate_scatter.empty:
        n = tables.ate_scatter["perturbation"].nunique()
        png = plots.ate_scatter_figure(tables.ate_scatter)
        shown = min(n, plots.MAX_SCATTER_PANELS)
        caption = (
            f"Each point is a gene. {shown} perturbations spread over the model's r, best first "
            "(evaluation.n_scatter); the red diamond is the perturbation's own target when it is "
            "measured. Dashed: identity (a perfect prediction lies on it)."
        )
        body += figure_html(png, "predicted vs observed ATE scatter", caption)
    if not body:
        return section("scatter", title, not_computed("Per-perturbation effects", ["prediction_metrics.csv"]))
    return section("scatter", title, body)


def distribution_section(tables: EvaluationTables) -> str:
    """Per-perturbation metric distributions per method (held-out reference, all cells)."""
    title = "Per-perturbation metrics"
    metrics = tables.prediction_metrics
    if metrics is None:
        return section("distributions", title, not_computed("Prediction metrics", ["prediction_metrics.csv"]))
    held = metrics[(metrics["reference"] == HELDOUT) & (metrics["subset"] == ALL_CELLS)]
    if held.empty:
        return section("distributions", title, '<p class="missing">No rows on the held-out reference.</p>')
    png = plots.metric_distribution_figure(held, metric_columns(metrics))
    caption = "One point per perturbation; boxes span the quartiles, the line is the median."
    return section("distributions", title, figure_html(png, "metric distributions per method", caption))


def qc_section(tables: EvaluationTables) -> str:
    """QC pass ratio of generated cells vs the data at t = 3, 4, 5."""
    title = "QC pass ratio of generated cells"
    if tables.qc_ratio is None or tables.qc_ratio.empty:
        return section("qc", title, not_computed("QC pass ratio", ["qc_ratio.csv"]))
    png = plots.qc_ratio_figure(tables.qc_ratio)
    caption = "Fraction of cells within t MADs on every QC metric, using the data's stored thresholds."
    table = tables.qc_ratio.sort_values("t")[["t", "pass_ratio_generated", "pass_ratio_data"]]
    body = '<div class="two">' + figure_html(png, "QC pass ratio", caption)
    body += html_table(table, ["t (MADs)", "generated cells", "data cells"]) + "</div>"
    return section("qc", title, body)


def summary_stats_section(tables: EvaluationTables) -> str:
    """Agreement of predicted knockdown and number of DEGs with the published summary statistics."""
    title = "Agreement with published summary statistics"
    agreement, points = tables.summary_stats_agreement, tables.summary_stats_points
    if agreement is None and points is None:
        files = ["summary_stats_agreement.csv", "summary_stats_points.csv"]
        return section("summary-stats", title, not_computed("Summary-statistics agreement", files))
    body = ""
    if points is not None and not points.empty:
        png = plots.summary_stats_figure(points, agreement)
        body += figure_html(png, "summary statistics agreement", "One point per perturbation.")
    if agreement is not None:
        table = agreement[["quantity", "spearman", "n"]]
        body += html_table(table, ["quantity", "Spearman ρ (predicted vs reported)", "perturbations"])
    return section("summary-stats", title, body)
