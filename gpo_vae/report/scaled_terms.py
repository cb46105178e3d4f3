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
#: Fewer scored labels than this rank no methods: a mean over one to four labels is a handful of
#: noisy numbers, and its bootstrap has no spread to speak of (one held-out pair gave the interval
#: [0.61, 0.61] and "beats the baseline beyond its interval").
MIN_LABELS = 5
#: How to score more labels of a task.
HOLD_OUT_MORE = {
    PAIRS: "raise preprocess.split.heldout_fraction (default 0.2) in a run config (--config), so more "
    "pairs are held out, or use a screen with more pairs",
    SINGLES: "raise preprocess.split.heldout_fraction (default 0.2) in a run config (--config), so more "
    "genes are held out, or use a screen with more perturbations",
    SEEN: "use a screen with more perturbations (or lower the filters that removed them: inspect lists them)",
}
#: The scaled table's name of the replicate: the split-half r corrected to the full test set
#: (the held-out cells table's "split-half replicate" is the same comparison at half size).
REPLICATE_TITLE = "replicate (full size)"


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
        metric = part["metric"].iloc[0]
        first = part.iloc[0]
        lines.append(
            f"{TASK_TITLES[task]} ({labels_phrase(part)}), {metric} scaled 0 = {first['baseline']} "
            f"({first['b']:.3f}), 1 = {REPLICATE_TITLE} ({first['r']:.3f}):"
        )
        for _, row in part.iterrows():
            interval = format_interval(row["scaled"], row["scaled_low"], row["scaled_high"])
            name = REPLICATE_TITLE if row["method"] == REPLICATE else row["method"]
            lines.append(f"  {name:<28} {interval:<24} raw {row['mean']:.3f}")
        lines.append("  " + task_verdict(part, main_method))
    return lines


def labels_phrase(part: pd.DataFrame) -> str:
    """``6 labels``, or ``3 labels; 3 more left out: …`` when some method has no value for some."""
    n = int(part["n"].max())
    left = int(part["n_left_out"].max()) if "n_left_out" in part.columns else 0
    phrase = f"{n} label{'s' if n != 1 else ''}"
    if left > 0:
        why = LEFT_OUT_BECAUSE.get(str(part["task"].iloc[0]), "")
        phrase += (
            f"; {left} more left out, since some method cannot predict them{why} and every method is "
            "averaged over the same labels"
        )
    return phrase


#: Why a task's labels lack some method's prediction (for :func:`labels_phrase`).
LEFT_OUT_BECAUSE = {
    PAIRS: " (a pair without both singles in the file has no additive prediction)",
    SEEN: " (a held-out perturbation has no training cells, so no training mean)",
}


def too_few_labels(task: str, n: int) -> str | None:
    """The sentence for a task scored on fewer than :data:`MIN_LABELS` labels, else None."""
    if n >= MIN_LABELS:
        return None
    return (
        f"only {n} label{'s' if n != 1 else ''} scored, fewer than the {MIN_LABELS} a verdict needs: "
        f"the numbers rank no method. To score more, {HOLD_OUT_MORE[task]}."
    )


def task_verdict(part: pd.DataFrame, main_method: str) -> str:
    """One sentence: does ``main_method`` beat every baseline beyond its interval on this task?
    Never from fewer than :data:`MIN_LABELS` labels, nor where the replicate is not reliably above
    the baseline."""
    few = too_few_labels(str(part["task"].iloc[0]), int(part["n"].max()))
    if few is not None:
        return few
    model = part[part["method"] == main_method]
    others = part[part["role"] == "baseline"]
    if model.empty or others.empty or not np.isfinite(model["scaled"].iloc[0]):
        first = part.iloc[0]
        headroom, low = float(first["headroom"]), float(first.get("headroom_low", np.nan))
        if np.isfinite(headroom) and headroom > 0 and np.isfinite(low):
            return (
                f"the replicate is not reliably above the baseline (headroom {headroom:.3f}, interval "
                f"[{low:.3f}, {float(first['headroom_high']):.3f}]): this task cannot rank methods."
            )
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
    "MIN_LABELS",
    "PAIRS",
    "REPLICATE",
    "REPLICATE_TITLE",
    "SCALED_FILE",
    "SEEN",
    "SINGLES",
    "TASK_TITLES",
    "format_interval",
    "headline_lines",
    "headline_rows",
    "labels_phrase",
    "task_verdict",
    "too_few_labels",
]
