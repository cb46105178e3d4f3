"""The report section on unseen labels: held-out ``A+B`` pairs and held-out single genes."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gpo_vae.report import plots
from gpo_vae.report.html import figure_html, format_number, html_table, not_computed, section
from gpo_vae.report.tables import ALL_CELLS, HELDOUT, EvaluationTables
from gpo_vae.report.verdict import Verdict, compare
from gpo_vae.stats.common_labels import on_common_labels

TITLE = "Unseen perturbations"
MODEL = "model"
BASELINE_TEXT = {
    "additive": ("the additive prediction", "control + the singles' training shifts"),
    "matching_mean": ("the matching mean", "the mean of the singles' training shifts"),
    "noncontrol_mean": ("the non-control mean", "the shift all perturbed training cells share"),
    "grn_neighbour_mean": ("the GRN-neighbour mean", "its GRN neighbours' training shifts"),
    "network_neighbour_mean": ("the network-neighbour mean", "its reference-network neighbours' shifts"),
    "model_own_node": ("the model's own untrained node", "the node no training cell dosed"),
    "regulator_regression": ("the regulator regression", "the same weights on the training shifts, no model"),
    "model_neighbours": ("the model dosed through GRN neighbours", "the other mode"),
    "model_regulators": ("the model dosed through regulators", "the other mode"),
}
INTERACTION_R, SPECIFIC_R = "interaction Pearson r", "perturbation-specific Pearson r"
#: (baseline, metric, what it measures) of each verdict sentence, in order.
PAIR_VERDICTS = (
    ("additive", "interaction_pearson", INTERACTION_R),
    ("matching_mean", "interaction_pearson", INTERACTION_R),
    ("noncontrol_mean", "interaction_pearson", INTERACTION_R),
    ("additive", "interaction_r2", "interaction R² (the size of the interaction, not only its shape)"),
    ("additive", "pearson", "ATE Pearson r"),
)
SINGLE_VERDICTS = (
    ("noncontrol_mean", "pearson", "ATE Pearson r"),
    ("regulator_regression", "pearson_specific", SPECIFIC_R),
    ("grn_neighbour_mean", "pearson_specific", SPECIFIC_R),
    ("network_neighbour_mean", "pearson_specific", SPECIFIC_R),
    ("model_own_node", "pearson_specific", SPECIFIC_R),
    ("noncontrol_mean", "rank_normalised", "normalised rank"),
)
PAIR_COLUMNS = (
    "pearson",
    "pearson_top20",
    "interaction_pearson",
    "interaction_pearson_top20",
    "interaction_r2",
    "interaction_sign_right",
)
SINGLE_COLUMNS = ("pearson", "pearson_specific", "pearson_top20", "r2", "rank", "rank_normalised")
COLUMN_LABELS = {
    "interaction_pearson": "interaction r",
    "interaction_pearson_top20": "interaction r, top-20 DE",
    "interaction_r2": "interaction R²",
    "interaction_sign_right": "direction right (significant pairs)",
    "rank": "rank (1 = best)",
    "rank_normalised": "rank, normalised (0 best, 0.5 chance)",
}


def _comparable(metrics: pd.DataFrame, kind: str) -> pd.DataFrame:
    """One kind's rows shaped like ``prediction_metrics.csv`` so :func:`compare` can pair them."""
    part = on_common_labels(metrics[metrics["kind"] == kind], "pearson").copy()
    part["reference"], part["subset"] = HELDOUT, ALL_CELLS
    return part


def _sentence(metrics: pd.DataFrame, other: str, metric: str, what: str, kind_text: str) -> Verdict | None:
    result = compare(metrics, MODEL, other, metric=metric)
    if result is None:
        return None
    if metric == "rank_normalised":  # lower is better
        relation = {"below": "better than", "above": "worse than"}.get(result.relation, result.relation)
        tone = {"better than": "good", "worse than": "bad"}.get(relation, "neutral")
    else:
        relation = result.relation
        tone = {"above": "good", "below": "bad"}.get(relation, "neutral")
    wins = result.wins if metric != "rank_normalised" else result.losses
    name, description = BASELINE_TEXT.get(other, (other, ""))
    return Verdict(
        f"On {result.n} {kind_text}, the model's {what} is {format_number(result.mean)}, {relation} "
        f"{name}'s {format_number(result.other_mean)} ({description}); the model is ahead on "
        f"{wins} of {result.n}.",
        tone,
    )


def _opening(
    metrics: pd.DataFrame, kind: str, kind_text: str, title: str, sentences: tuple[tuple[str, str, str], ...]
) -> tuple[pd.DataFrame, str]:
    """One kind's rows (comparable) and its heading with the verdict sentences."""
    part = _comparable(metrics, kind)
    verdicts = [_sentence(part, other, metric, what, kind_text) for other, metric, what in sentences]
    body = f"<h3>{html.escape(title)}</h3>" + "".join(
        f'<p class="verdict {v.tone}">{html.escape(v.text)}</p>' for v in verdicts if v is not None
    )
    return part, body


def _means_table(part: pd.DataFrame, columns: tuple[str, ...]) -> str:
    present = [c for c in columns if c in part.columns]
    means = part.groupby("method", sort=False)[present].mean()
    counts = part.groupby("method", sort=False).size()
    table = pd.DataFrame({"method": [plots.method_label(m) for m in means.index]})
    table["labels"] = counts.reindex(means.index).to_numpy()
    for column in present:
        table[column] = means[column].to_numpy()
    headers = ["method", "labels", *(COLUMN_LABELS.get(c, plots.metric_label(c)) for c in present)]
    return html_table(table, headers, highlight=[m == MODEL for m in means.index])


def interaction_figure(scatter: pd.DataFrame) -> bytes:
    """Predicted vs observed genetic interaction (observed − additive) per gene, a colour per pair."""
    pairs = list(dict.fromkeys(scatter["perturbation"]))

    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        observed = scatter["observed"].to_numpy(dtype=float)
        predicted = scatter["predicted"].to_numpy(dtype=float)
        size, alpha = plots.point_style(observed.size, spread=30.0)
        for i, pair in enumerate(pairs):
            rows = (scatter["perturbation"] == pair).to_numpy()
            color = plots.DISCRETE_COLORS[i % len(plots.DISCRETE_COLORS)]
            ax.scatter(observed[rows], predicted[rows], s=size * 2, alpha=alpha, lw=0, c=color, label=pair)
        lo = float(np.nanmin(np.r_[observed, predicted, 0.0]))
        hi = float(np.nanmax(np.r_[observed, predicted, 0.0]))
        pad = 0.05 * ((hi - lo) or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#9aa5b1", lw=0.8, ls="--")
        ax.axhline(0.0, color="#cbd2d9", lw=0.8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("observed interaction (held-out ATE − additive)")
        ax.set_ylabel("predicted interaction (model − additive)")
        r = plots.pearson_of(observed, predicted)
        ax.set_title(f"{len(pairs)} held-out pairs, their top-20 DE genes: r = {format_number(r)}")
        if len(pairs) <= 12:
            ax.legend(loc="upper left", fontsize=7, ncols=2 if len(pairs) > 6 else 1)

    return plots.render(draw, (5.6, 5.0))


def _pairs_body(tables: EvaluationTables, metrics: pd.DataFrame) -> str:
    part, body = _opening(metrics, "combination", "held-out pairs", "Held-out pairs A+B", PAIR_VERDICTS)
    model = part[part["method"] == MODEL]
    unseen_genes = set() if tables.unseen_neighbours is None else set(tables.unseen_neighbours["gene"])
    with_unseen = [p for p in model["perturbation"] if unseen_genes & set(p.split("+"))]
    if with_unseen:
        body += (
            f'<p class="note">{len(with_unseen)} of these pairs hold a gene that no training cell carries '
            "(<code>split.unseen_single</code>): their additive prediction counts only the seen single, so "
            "their interaction holds the unseen gene's whole effect too.</p>"
        )
    if "interaction_significant" in model.columns:
        significant = model["interaction_significant"].astype(str).str.lower() == "true"
        right = model.loc[significant, "interaction_sign_right"].sum()
        body += (
            f'<p class="note">{int(significant.sum())} of {len(model)} pairs have a significant observed '
            "interaction along their additive profile (|z| above <code>evaluation.interaction_z</code>); "
            f"the model predicts its direction (buffering or synergy) for {int(right)} of them. Additivity "
            "predicts no interaction, so it is never right.</p>"
        )
    body += _means_table(part, PAIR_COLUMNS)
    scatter = tables.unseen_interaction_scatter
    if scatter is not None and not scatter.empty:
        caption = (
            "Each point is a gene among a pair's 20 largest held-out effects: x the observed interaction, "
            "y the model's. A model that only adds the singles lies on y = 0; the dashed line is a perfect "
            "prediction."
        )
        body += figure_html(interaction_figure(scatter), "predicted vs observed genetic interaction", caption)
    if not model.empty:
        columns = [
            c
            for c in (
                "perturbation",
                "interaction_pearson",
                "interaction_z",
                "interaction_sign_right",
                "pearson",
            )
            if c in model.columns
        ]
        body += (
            "<details><summary>Per pair (model)</summary>"
            + html_table(model[columns], [COLUMN_LABELS.get(c, c) for c in columns])
            + "</details>"
        )
    return body


def _singles_body(tables: EvaluationTables, metrics: pd.DataFrame) -> str:
    part, body = _opening(
        metrics, "single", "unseen genes", "Held-out single genes (no training cell)", SINGLE_VERDICTS
    )
    body += (
        '<p class="note">An unseen gene\'s node was never dosed in training, but its column of the GRN was: '
        "every seen perturbation that moves the gene's own expression regulates it. In mode "
        "<code>regulators</code> (default) the model doses the gene over those perturbations' nodes with "
        "least-squares weights (what moves with the gene across them, scaled to the screen's typical "
        "on-target change); in mode <code>neighbours</code> over its strongest GRN neighbours. The "
        "non-control mean predicts the same profile for every gene: its specific r is undefined and its "
        "rank is chance (0.5).</p>"
    )
    body += _means_table(part, SINGLE_COLUMNS)
    neighbours = tables.unseen_neighbours
    if neighbours is not None and not neighbours.empty:
        mine = neighbours[neighbours["method"] == MODEL]
        listed = mine.groupby("gene", sort=False).apply(
            lambda g: ", ".join(
                f"{n} ({format_number(w)})" for n, w in zip(g["neighbour"], g["weight"], strict=True)
            ),
            include_groups=False,
        )
        table = pd.DataFrame({"gene": listed.index, "neighbours (weight)": listed.to_numpy()})
        body += (
            "<details><summary>Neighbours of each unseen gene (model)</summary>"
            + html_table(table)
            + "</details>"
        )
    return body


def unseen_section(tables: EvaluationTables) -> str:
    """Held-out pairs and genes against their baselines; a note when the split has none."""
    metrics = tables.unseen_metrics
    if metrics is None or metrics.empty:
        body = not_computed("Unseen-label predictions", ["unseen_metrics.csv"]) + (
            '<p class="note">The evaluation writes it when the split holds labels no training cell carries. '
            "Set <code>preprocess.split.mode</code> (or <code>--split</code>) to "
            "<code>heldout_combinations</code> (pairs) or <code>heldout_perturbations</code> (genes) to "
            "measure predictions of experiments not run.</p>"
        )
        return section("unseen", TITLE, body)
    body = ""
    if (metrics["kind"] == "combination").any():
        body += _pairs_body(tables, metrics)
    if (metrics["kind"] == "single").any():
        body += _singles_body(tables, metrics)
    body += (
        '<p class="note">Predicted cells of every unseen label (and generated controls) are in '
        "<code>unseen_cells.h5ad</code> next to this report.</p>"
    )
    return section("unseen", TITLE, body)
