"""Scores placed between the trivial baseline and a second experiment (``scaled_scores.csv``).

A raw mean cannot rank models across tasks: a Pearson r of 0.9 is nothing where the training
mean already reaches 0.9, and much where it reaches 0.3. For a *task* (held-out pairs, unseen
genes, the held-out cells of seen perturbations) and a metric with per-label values, every
method's mean ``u`` is placed on

    s = (u − b) / (r − b)

- ``b``: the mean of the task's best *trivial* baseline on that metric (the one with the best
  mean among :data:`TRIVIAL_BASELINES` of the task: the training means, the additive sum for
  pairs, and the no-effect prediction): 0 is "no better than a trivial guess";
- ``r``: the replicate, the same metric with one random half of every label's held-out test cells
  as the truth and the other half as the prediction (each against its own half of the test
  controls), Pearson-type metrics Spearman–Brown corrected to full size (``2r / (1 + r)``);
  the cross-label metrics (discrimination, centroid accuracy) have no such
  formula and are left at half size, which understates the replicate: 1 is "as good as a second
  experiment of half the cells".

A method above 1 beats the replicate (possible where a model shrinks noise). Every method is
averaged over the same labels: those where every method that scores the metric at all has a value
(a pair whose singles are not in the file has no additive prediction: it is left out of the
task's table, ``n_left_out`` counts such labels, and its per-label row stays in the metrics
files). Intervals are percentile bootstraps over those labels, resampled jointly for ``u``, ``b``
and ``r`` (``n_boot`` resamples, seeded), the baseline's identity fixed. The headroom ``r − b``
gets an interval too: where it reaches 0 (``r ≤ b``, or a replicate the labels cannot tell from
the baseline), or where fewer than ``MIN_LABELS`` labels are scored, the scale is undefined and
``s`` is NaN, instead of a ratio of noise (scores of ±40 on a headroom of 0.01). ``cell-eval``'s 2026 suite uses the same scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from gpo_vae.evaluation.baselines import spearman_brown
from gpo_vae.report.scaled_terms import (
    HEADLINE_METRIC,
    MIN_LABELS,
    PAIRS,
    REPLICATE,
    SCALED_FILE,
    SEEN,
    SINGLES,
    TASK_TITLES,
    headline_rows,
)
from gpo_vae.stats.common_labels import common_label_mask

#: The no-effect prediction (ATE 0): its Pearson-delta is undefined, but against the perturbed
#: centroid it scores well wherever a label moves less than the average perturbation, so it is a
#: trivial baseline of every metric it defines.
NO_EFFECT = "control_baseline"
#: The trivial baselines of each task (b is the best of them per metric).
TRIVIAL_BASELINES = {
    PAIRS: ("additive", "matching_mean", "noncontrol_mean", NO_EFFECT),
    SINGLES: ("noncontrol_mean", NO_EFFECT),
    SEEN: ("mean_baseline", "noncontrol_mean", NO_EFFECT),
}
#: Metrics placed on the scale, each with True when larger is better.
SCALED_METRICS = {
    "pearson": True,
    "pearson_specific": True,
    "interaction_pearson": True,
    "discrimination_l1": True,
    "centroid_accuracy": True,
}
#: The metric of a task's headline.
CORRECTED_PREFIXES = ("pearson", "interaction_pearson")
DEFAULT_BOOTSTRAP = 1000
DEFAULT_LEVEL = 0.95


def corrected_replicate(metrics: pd.DataFrame) -> pd.DataFrame:
    """Half-vs-half metrics with the Pearson-type columns Spearman–Brown corrected to full size."""
    out = metrics.copy()
    for column in out.columns:
        if any(column.startswith(prefix) for prefix in CORRECTED_PREFIXES) and out[column].dtype.kind == "f":
            out[column] = spearman_brown(out[column].clip(-1.0, 1.0))
    return out


def _bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _resampled_means(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(methods × n_boot) NaN-ignoring means of ``values`` (methods × labels) over each resample."""
    taken = values[:, indices]  # methods × n_boot × n
    finite = np.isfinite(taken)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite, taken, 0.0).sum(axis=2) / finite.sum(axis=2)


def _quantiles(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if not finite.size:
        return np.nan, np.nan
    return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha))


def scaled_table(
    task: str,
    per_label: Mapping[str, pd.DataFrame],
    replicate: pd.DataFrame,
    baselines: Sequence[str],
    models: Sequence[str],
    metrics: Sequence[str] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> pd.DataFrame:
    """Scaled scores of every method of one task (module docstring).

    Parameters
    ----------
    task
        The task's name (a column of the output).
    per_label
        method → per-label metrics (labels × metrics); every method, the baselines included.
    replicate
        Per-label metrics of the replicate (corrected as the module says), the same labels.
    baselines
        The methods of ``per_label`` that are trivial baselines of the task (b is their best).
    models
        The methods that are trained models (role ``model``); every other is a ``baseline``.
    metrics
        Columns to scale (default: those of :data:`SCALED_METRICS` present).

    Returns
    -------
    DataFrame
        One row per (metric, method), the replicate included: ``task``, ``metric``, ``method``,
        ``role`` (``model``, ``baseline``, ``replicate``), ``n`` (labels averaged over, the same for
        every method), ``n_left_out`` (labels some method has no value for), ``mean``, ``mean_low``,
        ``mean_high``, ``baseline`` (b's method), ``b``, ``r``, ``headroom`` (r − b),
        ``headroom_low``, ``headroom_high``, ``scaled``, ``scaled_low``, ``scaled_high``.
    """
    labels = replicate.index
    methods = [m for m in per_label if m != REPLICATE]
    wanted = metrics if metrics is not None else list(SCALED_METRICS)
    present = [m for m in wanted if m in replicate.columns and all(m in per_label[x] for x in methods)]
    alpha = (1.0 - level) / 2.0
    rows = []
    for metric in present:
        larger = SCALED_METRICS.get(metric, True)
        names = [*methods, REPLICATE]
        values = np.vstack(
            [per_label[m][metric].reindex(labels).to_numpy(dtype=float) for m in methods]
            + [replicate[metric].to_numpy(dtype=float)]
        )
        keep = common_label_mask(values)
        values, n_left_out = values[:, keep], int((~keep).sum())
        indices = _bootstrap_indices(values.shape[1], n_boot, seed) if values.shape[1] else None
        with np.errstate(invalid="ignore"):
            means = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in values])
        candidates = [
            names.index(b) for b in baselines if b in methods and np.isfinite(means[names.index(b)])
        ]
        if not candidates:
            continue
        best = max(candidates, key=lambda i: means[i] if larger else -means[i])
        b, r = means[best], means[-1]
        if not np.isfinite(r):
            continue  # the replicate does not score this metric (held-out cells: the centred r)
        boot = _resampled_means(values, indices) if indices is not None else np.full((len(names), 1), np.nan)
        headroom = (r - b) if larger else (b - r)
        boot_headroom = (boot[-1] - boot[best]) if larger else (boot[best] - boot[-1])
        headroom_low, headroom_high = _quantiles(boot_headroom, alpha)
        # fewer labels than a verdict needs: the raw means only (a bootstrap of one label is no interval)
        scale = headroom > 0 and headroom_low > 0 and values.shape[1] >= MIN_LABELS
        with np.errstate(invalid="ignore", divide="ignore"):
            scaled = (means - b) / (r - b) if scale else np.full(len(names), np.nan)
            boot_scaled = (boot - boot[best]) / (boot[-1] - boot[best])[None, :]
        for i, name in enumerate(names):
            finite = boot[i][np.isfinite(boot[i])]
            finite_scaled = boot_scaled[i][np.isfinite(boot_scaled[i])] if scale else np.array([])
            role = REPLICATE if name == REPLICATE else ("model" if name in models else "baseline")
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "method": name,
                    "role": role,
                    "n": int(np.isfinite(values[i]).sum()),
                    "n_left_out": n_left_out,
                    "mean": means[i],
                    "mean_low": float(np.quantile(finite, alpha)) if finite.size else np.nan,
                    "mean_high": float(np.quantile(finite, 1 - alpha)) if finite.size else np.nan,
                    "baseline": names[best],
                    "b": b,
                    "r": r,
                    "headroom": r - b,
                    "headroom_low": headroom_low if larger else -headroom_high,
                    "headroom_high": headroom_high if larger else -headroom_low,
                    "scaled": scaled[i],
                    "scaled_low": float(np.quantile(finite_scaled, alpha)) if finite_scaled.size else np.nan,
                    "scaled_high": float(np.quantile(finite_scaled, 1 - alpha))
                    if finite_scaled.size
                    else np.nan,
                }
            )
    return pd.DataFrame(rows)


#: Rows of ``prediction_metrics.csv`` that are no method of the held-out-cells task.
NOT_SCALED = ("split_half_ceiling",)


def heldout_cells_scaled(held: pd.DataFrame, corrected: bool, seed: int = 0) -> pd.DataFrame:
    """Scaled scores of the held-out-cells task from ``prediction_metrics.csv``'s rows of one
    reference and subset (``split_half_ceiling`` is the replicate; ``corrected``: its Pearson
    columns are Spearman–Brown corrected already)."""
    per_label = {
        str(method): frame.set_index("perturbation")
        for method, frame in held.groupby("method", sort=False)
        if method not in NOT_SCALED
    }
    replicate = held[held["method"] == "split_half_ceiling"].set_index("perturbation")
    if not corrected:
        replicate = corrected_replicate(replicate)
    metrics = [m for m in SCALED_METRICS if m != "interaction_pearson"]
    models = [m for m in per_label if m not in TRIVIAL_BASELINES[SEEN]]
    return scaled_table(SEEN, per_label, replicate, TRIVIAL_BASELINES[SEEN], models, metrics, seed=seed)


def headline_numbers(scaled: pd.DataFrame) -> dict[str, float]:
    """run.json keys of the headline rows: ``<method>_scaled_<task>`` with ``_low``, ``_high``,
    and ``<task>_baseline_b`` / ``<task>_replicate_r`` (the scale's ends)."""
    out: dict[str, float] = {}
    for _, row in headline_rows(scaled).iterrows():
        stem = f"{row['method']}_scaled_{row['task']}"
        out[stem] = float(row["scaled"])
        out[f"{stem}_low"] = float(row["scaled_low"])
        out[f"{stem}_high"] = float(row["scaled_high"])
        out[f"{row['task']}_baseline_b"] = float(row["b"])
        out[f"{row['task']}_replicate_r"] = float(row["r"])
    return out


__all__ = [
    "HEADLINE_METRIC",
    "NO_EFFECT",
    "PAIRS",
    "REPLICATE",
    "SCALED_FILE",
    "SCALED_METRICS",
    "SEEN",
    "SINGLES",
    "TASK_TITLES",
    "TRIVIAL_BASELINES",
    "corrected_replicate",
    "headline_numbers",
    "heldout_cells_scaled",
    "scaled_table",
]
