"""Plain-language verdicts computed from the prediction metrics (no judgement written by hand).

Each verdict compares two methods on the perturbations scored by both (NaN on either side
drops the perturbation), on the held-out reference over all cells, and says "below", "above"
or "on par with" (|difference| < :data:`PAR_TOLERANCE`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gpo_vae.report.html import format_number
from gpo_vae.report.tables import ALL_CELLS, HELDOUT

PAR_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Verdict:
    """A sentence and its tone (``"good"``, ``"bad"`` or ``"neutral"``) for styling."""

    text: str
    tone: str


@dataclass(frozen=True)
class Comparison:
    """Paired means of one metric for two methods, and how often the first wins."""

    mean: float
    other_mean: float
    wins: int
    losses: int
    n: int

    @property
    def relation(self) -> str:
        """``below``, ``above`` or ``on par with`` (first method relative to the second)."""
        difference = self.mean - self.other_mean
        if abs(difference) < PAR_TOLERANCE:
            return "on par with"
        return "below" if difference < 0 else "above"


def compare(
    metrics: pd.DataFrame,
    method: str,
    other: str,
    metric: str = "pearson",
    reference: str = HELDOUT,
    subset: str = ALL_CELLS,
) -> Comparison | None:
    """Paired comparison of ``method`` with ``other``; ``None`` when no perturbation has both."""
    part = metrics[(metrics["reference"] == reference) & (metrics["subset"] == subset)]
    part = part[part["method"].isin([method, other])]
    if metric not in part.columns or part.empty:
        return None
    wide = part.pivot_table(
        index="perturbation", columns="method", values=metric, aggfunc="mean", dropna=False
    )
    if method not in wide.columns or other not in wide.columns:
        return None
    paired = wide[[method, other]].dropna()
    if paired.empty:
        return None
    a, b = paired[method].to_numpy(), paired[other].to_numpy()
    return Comparison(
        mean=float(a.mean()),
        other_mean=float(b.mean()),
        wins=int((a > b).sum()),
        losses=int((a < b).sum()),
        n=len(paired),
    )


def _tone(relation: str) -> str:
    return {"below": "bad", "above": "good"}.get(relation, "neutral")


def baseline_verdicts(metrics: pd.DataFrame) -> list[Verdict]:
    """The verdict sentences of the baseline comparison, the main one (vs the mean baseline) first.

    Sentences: Pearson r of the model vs the per-perturbation training-mean baseline (with the
    count of perturbations each wins); R² vs the zero-effect control baseline; the model vs
    SAMS-VAE when present; the split-half ceiling as context.
    """
    held = metrics[(metrics["reference"] == HELDOUT) & (metrics["subset"] == ALL_CELLS)]
    if not (held["method"] == "model").any():
        return [Verdict("No model rows on the held-out reference: no verdict computed.", "neutral")]
    verdicts = []
    main = compare(metrics, "model", "mean_baseline")
    if main is None:
        verdicts.append(
            Verdict("Mean baseline not computed: the model's numbers have no trivial reference.", "neutral")
        )
    else:
        leader = "the model" if main.relation == "above" else "the baseline"
        wins = main.wins if main.relation == "above" else main.losses
        tail = (
            ""
            if main.relation == "on par with"
            else f"; {leader} is better on {wins} of {main.n} perturbations"
        )
        verdicts.append(
            Verdict(
                f"The model's mean Pearson r on held-out ATE ({format_number(main.mean)}) is {main.relation} "
                f"the per-perturbation training-mean baseline ({format_number(main.other_mean)}){tail}.",
                _tone(main.relation),
            )
        )
    r2 = compare(metrics, "model", "control_baseline", metric="r2")
    if r2 is not None:
        consequence = (
            ": its predicted effects are further from the held-out ATE than predicting no effect at all"
            if r2.relation == "below"
            else ""
        )
        verdicts.append(
            Verdict(
                f"The model's mean R² ({format_number(r2.mean)}) is {r2.relation} that of the control "
                f"baseline, which predicts no effect ({format_number(r2.other_mean)}){consequence}.",
                _tone(r2.relation),
            )
        )
    sams = compare(metrics, "model", "sams_vae")
    if sams is not None:
        verdicts.append(
            Verdict(
                f"The model's mean Pearson r ({format_number(sams.mean)}) is {sams.relation} SAMS-VAE's "
                f"({format_number(sams.other_mean)}) on the {sams.n} perturbations both predict.",
                _tone(sams.relation),
            )
        )
    ceiling = held.loc[held["method"] == "split_half_ceiling", "pearson"].to_numpy(dtype=float)
    ceiling = ceiling[np.isfinite(ceiling)]
    if ceiling.size:
        verdicts.append(
            Verdict(
                f"For scale: two random halves of the test cells predict each other with mean Pearson r "
                f"{format_number(float(ceiling.mean()))} (split-half ceiling, {ceiling.size} perturbations), "
                "the agreement sampling noise allows between two half-size estimates.",
                "neutral",
            )
        )
    return verdicts
