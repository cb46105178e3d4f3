"""The lines printed at the end of a run (``tasks/evaluate.py``'s ``summarise_run``).

A split that holds labels out leads with the unseen tasks on the baseline-to-replicate scale
(:mod:`gpo_vae.evaluation.scaled`); the held-out cells of seen perturbations follow, labelled as
what they are: a check that the model reaches each perturbation's training mean.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from gpo_vae.report.scaled_terms import PAIRS, SCALED_FILE, SEEN, SINGLES, headline_lines, too_few_labels
from gpo_vae.report.tables import SCREEN_FILE, headline_table
from gpo_vae.report.verdict import NOISE_CEILING, ceiling_values

#: The terminal's names of the held-out-cells table's methods (the report's words).
TERMINAL_LABELS = {
    "model": "model",
    "sams_vae": "SAMS-VAE",
    "mean_baseline": "training mean",
    "noncontrol_mean": "non-control mean",
    "control_baseline": "no effect",
    "split_half_ceiling": "split-half replicate",
}
#: The model's ATE r within this much of the training mean's "matches" it.
MATCHES = 0.01


def cells_table(metrics: pd.DataFrame) -> list[str]:
    """The held-out-cells table as terminal lines: one row per method, r, R², specific r."""
    table = headline_table(metrics)
    shown = pd.DataFrame(
        {
            "method": [TERMINAL_LABELS.get(m, m) for m in table["method"]],
            "ATE r": table["mean_pearson"],
            "R²": table["mean_r2"],
            "specific r": table["mean_pearson_specific"],
        }
    )
    text = shown.to_string(index=False, float_format=lambda value: f"{value:.3f}", na_rep="—")
    return text.splitlines()


def cells_verdict(metrics: pd.DataFrame, unseen: bool) -> str:
    """One sentence: the model against each perturbation's training mean on held-out cells, and
    what that comparison can and cannot say."""
    table = headline_table(metrics).set_index("method")
    n = int(table["n_perturbations"].max())
    few = too_few_labels(SEEN, n)
    if few is not None:
        return f"{'check' if unseen else 'verdict'}: on held-out cells of seen perturbations, {few}"
    model, mean = float(table.loc["model", "mean_pearson"]), float(table.loc["mean_baseline", "mean_pearson"])
    if model >= mean - MATCHES:
        standing = "matches it" if model <= mean + MATCHES else f"is {model - mean:.3f} above it"
    else:
        standing = f"trails it by {mean - model:.3f}"
    found = (
        f"on held-out cells of the {n} perturbations seen in training the model's ATE r is {model:.3f} "
        f"against their training mean's {mean:.3f} ({standing})"
    )
    ceiling = ceiling_values(metrics)
    if ceiling.size and float(ceiling.mean()) < NOISE_CEILING:
        found += (
            f", though two halves of the test cells agree at r {float(ceiling.mean()):.3f} only: these "
            "effects are mostly counting noise, and no r here tells methods apart"
        )
    if unseen:
        return f"check: {found}, the bar for perturbations the model has seen."
    return (
        f"verdict: {found}. That mean is the bar here, and this split cannot rank models: hold "
        "perturbations out (--split heldout_perturbations or heldout_combinations) to compare them "
        "with the baselines on unseen labels."
    )


def run_headline(folder: str | Path, main_method: str = "model") -> list[str]:
    """The end-of-run lines of the evaluation in ``folder``: on a split with unseen labels their
    scaled table and verdict, then the held-out-cells check in one sentence; on a random split the
    held-out-cells table and its verdict."""
    folder = Path(folder)
    scores_file = folder / SCALED_FILE
    scores = pd.read_csv(scores_file) if scores_file.is_file() else pd.DataFrame(columns=["task", "metric"])
    unseen = scores[scores["task"].isin([PAIRS, SINGLES])]
    metrics = pd.read_csv(folder / "prediction_metrics.csv")
    if len(unseen):
        return [*headline_lines(unseen, main_method), cells_verdict(metrics, unseen=True)]
    return [
        "held-out ATE, mean over perturbations:",
        *cells_table(metrics),
        cells_verdict(metrics, unseen=False),
    ]


def next_steps(folder: str | Path, run_dir: str | Path | None, python: str | Path) -> list[str]:
    """Where the report is and what to run next, each command as it runs from here (``python``:
    the interpreter of this environment; cell-eval beside it when it is installed)."""
    folder = Path(folder)
    lines = [f"report: {folder / 'report.html'}  (open it in a browser)", "next:"]
    if run_dir is not None:
        lines.append(
            f'  {python} -c "from gpo_vae import GPOVAEModel; print(GPOVAEModel.load({str(run_dir)!r}))"'
        )
    if (folder / "predictions.h5ad").is_file():
        cell_eval = Path(python).with_name("cell-eval")
        command = cell_eval if cell_eval.is_file() else "cell-eval"
        install = "" if cell_eval.is_file() else f"  (first: {python} -m pip install cell-eval)"
        # with batches cell-eval must score each cell line on its own: pooled, a line's share of a
        # label's cells would read as part of its effect (cell-eval writes one result per line)
        screen = folder / SCREEN_FILE
        batches = screen.is_file() and bool((json.loads(screen.read_text()).get("batches") or {}).get("key"))
        lines.append(
            f"  {command} run -ap {folder / 'predictions.h5ad'} -ar {folder / 'real_test.h5ad'} "
            f"--control-pert non-targeting{' --celltype-col batch' if batches else ''} "
            f"-o {folder.parent.parent / 'cell-eval' / folder.name}{install}"
        )
    return lines


__all__ = ["cells_table", "cells_verdict", "headline_table", "next_steps", "run_headline"]
