"""Plain-language verdicts computed from the prediction metrics (no judgement written by hand).

Each verdict compares two methods on the perturbations scored by both (NaN on either side
drops the perturbation), on the held-out reference over all cells, and says "below", "above"
or "on par with" (|difference| < :data:`PAR_TOLERANCE`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gpo_vae.preprocessing.split_plan import scarce_controls_note
from gpo_vae.report.html import format_number
from gpo_vae.report.tables import ALL_CELLS, HELDOUT, own_graph_key

PAR_TOLERANCE = 1e-3
#: Below this mean split-half Pearson r, two halves of the same test cells share under a tenth of
#: their ATE's variance: the held-out ATE is mostly counting noise and no method can be ranked on it.
NOISE_CEILING = 0.3
#: Baseline graphs of the GRN verdicts and how a sentence names them.
GRN_BASELINES = {"correlation": "|corr ΔX|", "effect_z": "|effect z|", "random": "a random graph"}


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
        return relation_of(self.mean, self.other_mean)


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
    shared = compare(metrics, "model", "noncontrol_mean")
    if shared is not None:
        verdicts.append(
            Verdict(
                f"The model's mean Pearson r ({format_number(shared.mean)}) is {shared.relation} that of the "
                f"non-control mean ({format_number(shared.other_mean)}), which predicts for every "
                "perturbation the shift all perturbed training cells share.",
                _tone(shared.relation),
            )
        )
    specific = compare(metrics, "model", "mean_baseline", metric="pearson_specific")
    if specific is not None:
        verdicts.append(
            Verdict(
                f"With that shared shift taken out of prediction and observation, the model's "
                f"perturbation-specific Pearson r is {format_number(specific.mean)}, "
                f"{specific.relation} the training-mean baseline's ({format_number(specific.other_mean)}); "
                "the non-control mean has no score here (its prediction minus the shift is 0).",
                _tone(specific.relation),
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
    ceiling = ceiling_values(metrics)
    if ceiling.size:
        verdicts.append(
            Verdict(
                f"For scale: two random halves of the test cells predict each other with mean Pearson r "
                f"{format_number(float(ceiling.mean()))} (split-half ceiling, {ceiling.size} perturbations). "
                "Each half has half the cells, so this is how far counting noise alone keeps two "
                "estimates of the same effect apart; a prediction compared with all test cells can "
                "score above it.",
                "neutral",
            )
        )
    return verdicts


def ceiling_values(metrics: pd.DataFrame) -> np.ndarray:
    """The finite split-half ceiling Pearson r of every perturbation (held-out reference, all cells)."""
    held = metrics[(metrics["reference"] == HELDOUT) & (metrics["subset"] == ALL_CELLS)]
    ceiling = held.loc[held["method"] == "split_half_ceiling", "pearson"].to_numpy(dtype=float)
    return ceiling[np.isfinite(ceiling)]


def relation_of(value: float, other: float) -> str:
    """``below``, ``above`` or ``on par with`` (|difference| < :data:`PAR_TOLERANCE`)."""
    if abs(value - other) < PAR_TOLERANCE:
        return "on par with"
    return "below" if value < other else "above"


def _against_baselines(model: float, scores: pd.Series, ratio: bool) -> tuple[list[str], list[bool]]:
    """Phrases "above |corr ΔX| (0.12, 2.0×)" for each GRN baseline in ``scores`` (method → value)
    and whether the model beats each; the ratio only where it does and ``ratio`` is asked."""
    parts, beaten = [], []
    for method, label in GRN_BASELINES.items():
        if method not in scores.index or not np.isfinite(float(scores[method])):
            continue
        value = float(scores[method])
        relation = relation_of(model, value)
        times = f", {model / value:.1f}×" if ratio and relation == "above" and value > 0 else ""
        beaten.append(relation == "above")
        parts.append(f"{relation} {label} ({format_number(value)}{times})")
    return parts, beaten


def grn_verdict(reference: pd.DataFrame | None, network: str = "true_network") -> Verdict | None:
    """One sentence: the model's AUPRC against ``network`` beside the |corr ΔX|, |effect z| and
    random graphs' (``grn_reference.csv`` rows); None when the model has no row for it."""
    if reference is None or reference.empty:
        return None
    rows = reference[reference["network"] == network].set_index("method")
    if "model" not in rows.index:
        return None
    auprc = pd.to_numeric(rows["auprc"], errors="coerce")
    model = float(auprc["model"])
    if not np.isfinite(model):
        return None
    parts, beaten = _against_baselines(model, auprc, ratio=True)
    tone = ("good" if all(beaten) else "bad") if beaten else "neutral"
    chance = pd.to_numeric(rows["positive_rate"], errors="coerce").get("model", np.nan)
    chance_text = f"; chance is {format_number(float(chance))}" if np.isfinite(chance) else ""
    name = "the true network" if network == "true_network" else network
    return Verdict(
        f"Against {name} the model's graph has AUPRC {format_number(model)}: "
        + ", ".join(parts)
        + chance_text
        + ".",
        tone,
    )


def statistical_verdict(statistical: pd.DataFrame | None) -> Verdict | None:
    """One sentence: the model graph's mean Wasserstein distance (CausalBench's μWD, held-out
    cells) beside each baseline's top-K graph of the same size; None without a model row."""
    if statistical is None or statistical.empty:
        return None
    own_graph = own_graph_key(statistical)
    own = statistical[(statistical["method"] == "model") & (statistical["k"] == own_graph)]
    if own.empty or not np.isfinite(float(own["mean_wasserstein"].iloc[0])):
        return None
    k = int(own["n_edges"].iloc[0])
    model = float(own["mean_wasserstein"].iloc[0])
    matched = statistical[statistical["k"] == str(k)].set_index("method")["mean_wasserstein"]
    parts, beaten = _against_baselines(model, pd.to_numeric(matched, errors="coerce"), ratio=False)
    if not parts:
        return None
    return Verdict(
        f"On held-out cells the model's {k} edges have mean Wasserstein distance {format_number(model)} "
        f"between target expression under the source's perturbation and in controls (larger: stronger "
        f"effects along the edges): " + ", ".join(parts) + f" at the same K = {k}.",
        "good" if all(beaten) else "bad",
    )


#: Below this median change of its probabilities the mask "barely moved" from its start.
BARELY_MOVED = 0.05
#: At least this share of the graph's edges kept from the start: training changed little of it.
MOSTLY_KEPT = 0.9
#: At least this share of edges saturated, or leaving the two biggest hubs, is said.
SATURATED_SHARE, HUB_SHARE = 0.25, 0.25


def mask_verdicts(metrics: dict, hubs: list[str]) -> list[Verdict]:
    """What the learned graph is and is not (``run.json`` metrics of
    :func:`gpo_vae.grn.calibration.mask_movement`): a graph still at its start, a threshold
    calibrated because the start was the threshold, saturated probabilities, hubs."""
    n = metrics.get("grn_edges")
    threshold = metrics.get("grn_threshold")
    if not isinstance(n, int | float) or threshold is None:
        return []
    n = int(n)
    change = metrics.get("grn_mask_median_change")
    start, kept = metrics.get("grn_edges_at_start"), metrics.get("grn_edges_kept_from_start")
    if n == 0:
        return [
            Verdict(
                f"The graph has no edge above p > {threshold:.3g} (median change of the mask's "
                f"probabilities in training {format_number(change)}): on this screen it reports no "
                "regulation; the screen section says which genes are measured nodes.",
                "neutral",
            )
        ]
    verdicts = []
    if metrics.get("grn_threshold_calibrated"):
        verdicts.append(
            Verdict(
                "Every mask probability started at the configured threshold, so it would count every "
                f"edge that rose by noise: the graph keeps the mask's top {n} pairs instead (p > "
                f"{threshold:.3g}, evaluation.grn_density; median change from the start "
                f"{format_number(change)}).",
                "neutral",
            )
        )
    elif n and start and kept is not None and kept / n >= MOSTLY_KEPT:
        verdicts.append(
            Verdict(
                f"Training changed little of the graph: {int(kept)} of its {n} edges were above "
                f"p > {threshold:.3g} before training, in the effect statistics the mask starts from "
                f"(median change {format_number(change)}). Read it as those statistics' graph.",
                "bad",
            )
        )
    elif isinstance(change, int | float) and change < BARELY_MOVED:
        verdicts.append(
            Verdict(
                f"The mask barely moved from its start (median change of its probabilities "
                f"{format_number(change)}): its {n} edges say little beyond where it began.",
                "bad",
            )
        )
    saturated = metrics.get("grn_saturated_edges")
    if n and isinstance(saturated, int | float) and saturated / n >= SATURATED_SHARE:
        verdicts.append(
            Verdict(
                f"{int(saturated)} of the {n} edges sit at p > 0.99: there the probability no longer "
                "ranks edges; rank them by the CausalBench statistics or the reference networks instead.",
                "bad",
            )
        )
    share = metrics.get("grn_hub_share")
    if n >= 8 and isinstance(share, int | float) and share >= HUB_SHARE and hubs:
        verdicts.append(
            Verdict(
                f"{share:.0%} of the edges leave two genes ({', '.join(hubs)}): hubs like these can "
                "stand for one strong perturbation's many effects rather than regulation.",
                "neutral",
            )
        )
    return verdicts


def scarce_controls_verdict(screen: dict | None) -> Verdict | None:
    """A caution when the test split holds fewer controls than ``min_test_controls`` asks for
    (``screen.json`` splits ``scarce_controls``); None otherwise."""
    splits = (screen or {}).get("splits") or {}
    scarce = splits.get("scarce_controls") or {}
    if not scarce:
        return None
    note = scarce_controls_note(scarce, int(splits.get("min_test_controls", 50)))
    return Verdict(
        f"Caution: {note}. The same noise is in every method's score, so a gap between the model and "
        "a baseline smaller than the seeds' spread is not a difference.",
        "bad",
    )


def noise_floor_verdict(metrics: pd.DataFrame) -> Verdict | None:
    """A caution when the split-half ceiling is below :data:`NOISE_CEILING`; None otherwise."""
    ceiling = ceiling_values(metrics)
    if not ceiling.size or float(ceiling.mean()) >= NOISE_CEILING:
        return None
    return Verdict(
        f"Caution: two random halves of the test cells predict each other with mean Pearson r "
        f"{format_number(float(ceiling.mean()))} only (split-half ceiling): on this screen the held-out "
        "ATE is mostly counting noise, so no method's Pearson r can be told apart from another's; "
        "weak effects, few cells or shallow counts do this.",
        "bad",
    )
