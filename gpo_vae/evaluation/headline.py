"""The lines printed at the end of a run (``tasks/evaluate.py``'s ``summarise_run``).

A split that holds labels out leads with the unseen tasks on the baseline-to-replicate scale
(:mod:`gpo_vae.evaluation.scaled`); the held-out cells of seen perturbations follow, labelled as
what they are: a check that the model reaches each perturbation's training mean.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gpo_vae.report.scaled_terms import PAIRS, SCALED_FILE, SEEN, SINGLES, headline_lines
from gpo_vae.report.tables import ALL_CELLS, HELDOUT


def headline_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean Pearson r, R² and perturbation-specific r of each method on the held-out ATE (all
    cells), one row per method (``mean_pearson_specific`` NaN when the table has none)."""
    held = metrics[(metrics["reference"] == HELDOUT) & (metrics["subset"] == ALL_CELLS)]
    grouped = held.groupby("method", sort=False)
    columns = {"mean_pearson": grouped["pearson"].mean(), "mean_r2": grouped["r2"].mean()}
    columns["mean_pearson_specific"] = (
        grouped["pearson_specific"].mean()
        if "pearson_specific" in held.columns
        else columns["mean_r2"] * float("nan")
    )
    columns["n_perturbations"] = grouped["pearson"].size()
    return pd.DataFrame(columns).reset_index()


def seen_check_sentence(scores: pd.DataFrame, unseen: bool) -> list[str]:
    """What the held-out-cells comparison measures (with the headroom between mean and replicate),
    then the title of its table."""
    part = scores[(scores["task"] == SEEN) & (scores["metric"] == "pearson")]
    headroom = ""
    if len(part):
        row = part.iloc[0]
        headroom = (
            f" ({row['baseline']} {row['b']:.3f}, replicate {row['r']:.3f}: headroom {row['headroom']:.3f})"
        )
    table = "held-out ATE, all cells, mean over perturbations:"
    if unseen:
        return [
            f"held-out cells of seen perturbations, a check that the model reaches the mean{headroom};",
            table,
        ]
    return [
        "this split holds out cells, not perturbations: it measures how well the model reconstructs "
        f"perturbations it saw in training, where each one's training mean is the bar{headroom}; "
        "hold perturbations out (--split heldout_perturbations or heldout_combinations) to rank models.",
        table,
    ]


def run_headline(folder: str | Path, main_method: str = "model") -> list[str]:
    """The end-of-run lines of the evaluation in ``folder``: unseen tasks first, then the check."""
    folder = Path(folder)
    scores_file = folder / SCALED_FILE
    scores = pd.read_csv(scores_file) if scores_file.is_file() else pd.DataFrame(columns=["task", "metric"])
    unseen = scores[scores["task"].isin([PAIRS, SINGLES])]
    lines = headline_lines(unseen, main_method) if len(unseen) else []
    metrics = pd.read_csv(folder / "prediction_metrics.csv")
    table = headline_table(metrics).to_string(index=False, float_format=lambda value: f"{value:.3f}")
    lines += [*seen_check_sentence(scores, bool(len(unseen))), *table.splitlines()]
    return lines


__all__ = ["headline_table", "run_headline", "seen_check_sentence"]
