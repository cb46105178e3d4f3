"""Names and words of the scaled scores (``scaled_scores.csv``), shared by the report and the
terminal headline; the scores themselves are computed in :mod:`gpo_vae.evaluation.scaled`."""

from __future__ import annotations

import numpy as np
import pandas as pd

SCALED_FILE = "scaled_scores.csv"
REPLICATE = "replicate"
#: Tasks: held-out A+B pairs, unseen single genes, held-out cells of seen perturbations.
PAIRS, SINGLES, SEEN = "unseen_pairs", "unseen_singles", "heldout_cells"
TASK_TITLES = {
    PAIRS: "held-out pairs A+B",
    SINGLES: "unseen genes",
    SEEN: "held-out cells of seen perturbations",
}
#: Pairs: the Pearson-delta (Ahlmann-Eltze et al.'s bar is the additive sum); unseen genes: the
#: Pearson-delta against the perturbed centroid (most of an unseen gene's Pearson-delta is the
#: shift every perturbation shares, Systema); seen perturbations: the Pearson-delta.
HEADLINE_METRIC = {PAIRS: "pearson", SINGLES: "pearson_specific", SEEN: "pearson"}


def headline_rows(scaled: pd.DataFrame) -> pd.DataFrame:
    """Each task's headline metric, every method, best scaled score first (replicate last)."""
    parts = []
    for task, metric in HEADLINE_METRIC.items():
        part = scaled[(scaled["task"] == task) & (scaled["metric"] == metric)]
        if part.empty:
            continue
        order = part.assign(_last=part["role"] == REPLICATE).sort_values(
            ["_last", "scaled"], ascending=[True, False], kind="stable"
        )
        parts.append(order.drop(columns="_last"))
    return pd.concat(parts, ignore_index=True) if parts else scaled.iloc[0:0]


def format_interval(value: float, low: float, high: float) -> str:
    """``0.42 [0.31, 0.55]``; ``n/a`` for NaN."""
    if not np.isfinite(value):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.2f}"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def headline_lines(scaled: pd.DataFrame, main_method: str) -> list[str]:
    """Lines for the end of a run: each task's headline metric on the scale, and a verdict."""
    rows = headline_rows(scaled)
    lines = []
    for task in dict.fromkeys(rows["task"]):
        part = rows[rows["task"] == task]
        metric, n = part["metric"].iloc[0], int(part["n"].max())
        first = part.iloc[0]
        lines.append(
            f"{TASK_TITLES[task]} ({n} labels), {metric} scaled 0 = {first['baseline']} "
            f"({first['b']:.3f}), 1 = replicate ({first['r']:.3f}):"
        )
        for _, row in part.iterrows():
            interval = format_interval(row["scaled"], row["scaled_low"], row["scaled_high"])
            lines.append(f"  {row['method']:<28} {interval:<24} raw {row['mean']:.3f}")
        lines.append("  " + task_verdict(part, main_method))
    return lines


def task_verdict(part: pd.DataFrame, main_method: str) -> str:
    """One sentence: does ``main_method`` beat every baseline beyond its interval on this task?"""
    model = part[part["method"] == main_method]
    others = part[part["role"] == "baseline"]
    if model.empty or others.empty or not np.isfinite(model["scaled"].iloc[0]):
        return "no headroom between the baseline and the replicate: this task cannot rank methods."
    best = others.loc[others["scaled"].idxmax()]
    low, high = model["scaled_low"].iloc[0], model["scaled_high"].iloc[0]
    if low > best["scaled"]:
        return f"{main_method} beats the best baseline ({best['method']}) beyond its interval."
    if high < best["scaled"]:
        return f"{main_method} loses to {best['method']} beyond its interval."
    return f"{main_method} and {best['method']} are not told apart (intervals overlap)."


__all__ = [
    "HEADLINE_METRIC",
    "PAIRS",
    "REPLICATE",
    "SCALED_FILE",
    "SEEN",
    "SINGLES",
    "TASK_TITLES",
    "format_interval",
    "headline_lines",
    "headline_rows",
    "task_verdict",
]
