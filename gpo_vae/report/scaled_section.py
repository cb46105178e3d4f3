"""The headline's scaled scores: every method of each task between baseline (0) and replicate (1)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gpo_vae.report import plots
from gpo_vae.report.html import figure_html, html_table
from gpo_vae.report.scaled_terms import (
    HEADLINE_METRIC,
    PAIRS,
    REPLICATE,
    REPLICATE_TITLE,
    SEEN,
    SINGLES,
    TASK_TITLES,
    format_interval,
    headline_rows,
    labels_phrase,
    task_verdict,
)
from gpo_vae.report.tables import EvaluationTables

MODEL = "model"
ROLE_COLORS = {"model": "#1f77b4", "baseline": "#7f7f7f", REPLICATE: "#2ca02c"}


def scaled_figure(part: pd.DataFrame) -> bytes:
    """Scaled score with its interval per method (one task, its headline metric)."""
    shown = part[np.isfinite(part["scaled"].to_numpy(dtype=float))]
    height = 0.6 + 0.32 * len(shown)

    def draw(figure: Figure) -> None:
        ax = figure.add_subplot(1, 1, 1)
        y = np.arange(len(shown))[::-1]
        for position, (_, row) in zip(y, shown.iterrows(), strict=True):
            color = ROLE_COLORS.get(str(row["role"]), "#7f7f7f")
            low, high = row["scaled_low"], row["scaled_high"]
            if np.isfinite(low) and np.isfinite(high):
                ax.plot([low, high], [position, position], color=color, lw=2.2, solid_capstyle="butt")
            ax.plot([row["scaled"]], [position], "o", color=color, ms=6)
        ax.set_yticks(y, [plots.method_label(str(m)) for m in shown["method"]], fontsize=8)
        ax.axvline(0.0, color="#999", lw=0.8, ls="--")
        ax.axvline(1.0, color="#2ca02c", lw=0.8, ls="--")
        ax.set_xlabel(f"scaled score (0 = best trivial baseline, 1 = {REPLICATE_TITLE})", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)

    return plots.render(draw, (6.4, height))


def task_block(part: pd.DataFrame) -> str:
    """One task's table, figure and verdict."""
    task, metric = str(part["task"].iloc[0]), str(part["metric"].iloc[0])
    first = part.iloc[0]
    frame = pd.DataFrame(
        {
            "method": [plots.method_label(str(m)) for m in part["method"]],
            "role": part["role"].astype(str).to_numpy(),
            "raw mean [95% CI]": [
                format_interval(m, lo, hi)
                for m, lo, hi in zip(part["mean"], part["mean_low"], part["mean_high"], strict=True)
            ],
            "scaled [95% CI]": [
                format_interval(s, lo, hi)
                for s, lo, hi in zip(part["scaled"], part["scaled_low"], part["scaled_high"], strict=True)
            ],
        }
    )
    caption = (
        f"{TASK_TITLES[task]}, {labels_phrase(part)}; {metric}: 0 = {first['baseline']} "
        f"({first['b']:.3f}), 1 = {REPLICATE_TITLE} ({first['r']:.3f})"
    )
    verdict = task_verdict(part, MODEL)
    tone = "good" if "beats" in verdict else ("bad" if "loses" in verdict else "neutral")
    body = html_table(frame, highlight=(part["method"] == MODEL).to_numpy(), caption=caption)
    if np.isfinite(part["scaled"].to_numpy(dtype=float)).sum() >= 2:
        body += figure_html(scaled_figure(part), f"scaled {metric} per method, {TASK_TITLES[task]}")
    return body + f'<p class="verdict {tone}">{html.escape(verdict)}</p>'


def scaled_headline(tables: EvaluationTables) -> str:
    """The unseen tasks on the scale (first), then the held-out cells as a check; '' without the file."""
    scores = tables.scaled_scores
    if scores is None or scores.empty:
        return ""
    rows = headline_rows(scores)
    blocks = []
    for task in (PAIRS, SINGLES):
        part = rows[rows["task"] == task]
        if len(part):
            blocks.append(task_block(part))
    seen = rows[rows["task"] == SEEN]
    if len(seen):
        first = seen.iloc[0]
        if blocks:
            lead = "The held-out cells of seen perturbations are a check that the model reaches the mean: "
        else:
            lead = (
                "This split holds out cells, not perturbations: it measures how well the model "
                "reconstructs perturbations it saw in training. "
            )
        lead += (
            f"{first['baseline']} {first['b']:.3f}, {REPLICATE_TITLE} {first['r']:.3f}, headroom "
            f"{first['headroom']:.3f} ({HEADLINE_METRIC[SEEN]})."
        )
        blocks.append(f'<p class="note">{html.escape(lead)}</p>' + task_block(seen))
    return "".join(blocks)


__all__ = ["scaled_figure", "scaled_headline", "task_block"]
