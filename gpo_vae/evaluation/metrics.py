"""Perturbation-prediction metrics (design §7): ATE agreement, QC pass ratio, summary statistics.

Definitions, per perturbation (one row of the ATE tables), over genes:

- ``pearson``: Pearson correlation of true and predicted ATE over all genes.
- ``r2``: coefficient of determination ``1 − Σ(t − p)² / Σ(t − t̄)²`` over all genes, i.e.
  ``sklearn.metrics.r2_score(true_row, pred_row)``; NaN when the true row is constant (sklearn
  would answer 0 or 1 there).
- ``pearson_top{k}`` / ``r2_top{k}``: the same on the ``k`` (20) genes with the largest
  ``|true ATE|`` of that perturbation (its top DE genes).
- ``pearson_specific`` (when a shared shift s is given): Pearson of (pred − s) against
  (true − s), s the ATE of all perturbed training cells pooled; a prediction that only knows
  the shift every perturbation shares scores 0 (undefined for s itself).
- ``jaccard_top{k}``: ``|A ∩ B| / |A ∪ B|`` of the top-``k`` genes by ``|true ATE|`` (A) and by
  ``|predicted ATE|`` (B), for k = 20 and 50.

Across perturbations (a row's score depends on the other rows of the table):

- ``discrimination_l1``: cell-eval's discrimination score. For perturbation ``i``, the L1
  distances from its predicted ATE to the true ATE of every perturbation of the table, over the
  genes other than ``i``'s targets; with ``k`` the 0-based position of its own true ATE in the
  ascending order (``numpy.argsort``, as cell-eval), the score is ``1 − k / n``: 1 when the
  prediction lies nearest its own perturbation, about 0.5 for a prediction that tells nothing.
- ``centroid_accuracy``: 1 when the prediction's nearest true ATE (Euclidean, all genes) is its
  own perturbation's, else 0 (Systema's centroid accuracy; its mean is the share told apart).

Top-k sets use ``argpartition``: genes tied with the k-th value are included in an unspecified
but deterministic order. A row holding NaN (e.g. a perturbation without cells) gets NaN metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import cdist

from gpo_vae.data.labels import label_genes
from gpo_vae.preprocessing.qc import QC_METRICS, QC_RULES, QCThresholds, apply_qc_thresholds

logger = logging.getLogger(__name__)

DEFAULT_TOP_DE = 20
DEFAULT_JACCARD_KS = (20, 50)


def row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (NaN for constant rows)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / denominator
    return np.where(denominator > 0, np.clip(r, -1.0, 1.0), np.nan)


def row_r2(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``r2_score(true[i], pred[i])`` for each row ``i`` (NaN for a constant true row)."""
    total = ((true - true.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    residual = ((true - pred) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1.0 - residual / total, np.nan)


def top_k_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest ``|values|`` of each row (unordered), shape n × k."""
    k = min(k, values.shape[1])
    return np.argpartition(-np.abs(values), k - 1, axis=1)[:, :k]


def _top_k_mask(values: np.ndarray, k: int) -> np.ndarray:
    mask = np.zeros(values.shape, dtype=bool)
    np.put_along_axis(mask, top_k_indices(values, k), True, axis=1)
    return mask


def _aligned(true_ate: pd.DataFrame, pred_ate: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    if set(true_ate.columns) != set(pred_ate.columns):
        only_true = true_ate.columns.difference(pred_ate.columns)
        only_pred = pred_ate.columns.difference(true_ate.columns)
        raise ValueError(
            f"true and predicted ATE have different genes: {len(only_true)} only in true "
            f"({list(only_true[:5])}), {len(only_pred)} only in predicted ({list(only_pred[:5])})"
        )
    common = true_ate.index.intersection(pred_ate.index, sort=False)
    if len(common) == 0:
        raise ValueError("true and predicted ATE share no perturbation")
    dropped = len(true_ate) + len(pred_ate) - 2 * len(common)
    if dropped:
        logger.info("metrics on %d common perturbations (%d rows without a partner)", len(common), dropped)
    return true_ate.loc[common], pred_ate.loc[common, true_ate.columns]


def prediction_metrics(
    true_ate: pd.DataFrame,
    pred_ate: pd.DataFrame,
    top_de: int = DEFAULT_TOP_DE,
    jaccard_ks: Sequence[int] = DEFAULT_JACCARD_KS,
    shared_shift: pd.Series | np.ndarray | None = None,
    across: bool = False,
) -> pd.DataFrame:
    """Per-perturbation agreement of predicted with true ATE (definitions in the module docstring).

    Parameters
    ----------
    true_ate, pred_ate
        Perturbations × genes; same gene set (pred is reordered to true's columns); rows are
        matched by name and only common perturbations are scored.
    shared_shift
        (G,) the shift every perturbation shares (the non-control mean's ATE, over true's
        genes): adds ``pearson_specific``, the Pearson r of (pred − shift) against (true −
        shift), which a prediction earns only with what is specific to the perturbation.
    across
        Add ``discrimination_l1`` and ``centroid_accuracy`` (each row among the table's rows).

    Returns
    -------
    DataFrame
        One row per common perturbation (true's order), columns ``pearson``, ``r2``,
        ``pearson_top{top_de}``, ``r2_top{top_de}``, ``jaccard_top{k}`` for each k.
    """
    true_df, pred_df = _aligned(true_ate, pred_ate)
    true = true_df.to_numpy(dtype=np.float64)
    pred = pred_df.to_numpy(dtype=np.float64)
    out = {"pearson": row_pearson(true, pred), "r2": row_r2(true, pred)}
    if shared_shift is not None:
        if not isinstance(shared_shift, pd.Series):
            shared_shift = pd.Series(np.asarray(shared_shift, dtype=np.float64), index=true_ate.columns)
        shift = shared_shift.reindex(true_df.columns).to_numpy(dtype=np.float64)[None, :]
        out["pearson_specific"] = row_pearson(true - shift, pred - shift)
    top = top_k_indices(true, top_de)
    true_top = np.take_along_axis(true, top, axis=1)
    pred_top = np.take_along_axis(pred, top, axis=1)
    out[f"pearson_top{top_de}"] = row_pearson(true_top, pred_top)
    out[f"r2_top{top_de}"] = row_r2(true_top, pred_top)
    for k in jaccard_ks:
        in_true, in_pred = _top_k_mask(true, k), _top_k_mask(pred, k)
        shared = (in_true & in_pred).sum(axis=1)
        size = min(k, true.shape[1])
        out[f"jaccard_top{k}"] = shared / (2 * size - shared)
    if across:
        targets = target_columns(list(true_df.index), list(true_df.columns))
        out["discrimination_l1"] = discrimination_l1(true, pred, targets)
        out["centroid_accuracy"] = centroid_accuracy(true, pred)
    frame = pd.DataFrame(out, index=true_df.index)
    incomplete = np.isnan(true).any(axis=1) | np.isnan(pred).any(axis=1)
    frame.loc[incomplete, :] = np.nan
    return frame


def discrimination_l1(
    true: np.ndarray, pred: np.ndarray, excluded: Sequence[Sequence[int]] | None = None
) -> np.ndarray:
    """cell-eval's ``discrimination_score_l1`` of each row of ``pred`` among the rows of ``true``.

    ``excluded[i]`` are the columns (row ``i``'s target genes) left out of row ``i``'s distances.
    NaN for a row holding NaN.
    """
    n = true.shape[0]
    finite = np.isfinite(true).all(axis=1) & np.isfinite(pred).all(axis=1)
    out = np.full(n, np.nan)
    if not finite.any():
        return out
    distance = cdist(pred, np.nan_to_num(true), metric="cityblock")
    if excluded is not None:
        for i, columns in enumerate(excluded):
            if len(columns):
                cols = np.asarray(columns, dtype=np.int64)
                distance[i] -= np.abs(true[:, cols] - pred[i, cols][None, :]).sum(axis=1)
    order = np.argsort(distance, axis=1)
    position = np.argmax(order == np.arange(n)[:, None], axis=1)
    out[finite] = 1.0 - position[finite] / n
    return out


def centroid_accuracy(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """1.0 where row ``i`` of ``pred`` is nearest (Euclidean) row ``i`` of ``true``, else 0.0."""
    finite = np.isfinite(true).all(axis=1) & np.isfinite(pred).all(axis=1)
    out = np.full(true.shape[0], np.nan)
    if true.shape[0] < 2 or not finite.any():
        return out
    nearest = np.argmin(cdist(pred, np.nan_to_num(true)), axis=1)
    out[finite] = (nearest == np.arange(true.shape[0]))[finite].astype(float)
    return out


def target_columns(labels: Sequence[str], genes: Sequence[str]) -> list[list[int]]:
    """Column positions of each label's target genes (``A+B`` → A and B) among ``genes``."""
    position = {str(g): i for i, g in enumerate(genes)}
    return [[position[g] for g in label_genes(str(label)) if g in position] for label in labels]


def summarise_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, median and number of non-NaN values of each metric column (rows = metrics)."""
    numeric = metrics.select_dtypes("number")
    return pd.DataFrame({"mean": numeric.mean(), "median": numeric.median(), "n": numeric.count()})


def _as_thresholds(thresholds: QCThresholds | Mapping[Any, Any]) -> QCThresholds:
    """Accept a :class:`QCThresholds`, its ``to_dict()`` form (as stored in ``uns``), or the
    mapping ``{t: {metric: (side, value)}}``."""
    if isinstance(thresholds, QCThresholds):
        return thresholds
    if "thresholds" in thresholds:
        return QCThresholds.from_dict(thresholds)
    values: dict[float, dict[str, float]] = {}
    for t, per_metric in thresholds.items():
        values[float(t)] = {}
        for metric, (side, value) in per_metric.items():
            expected = QC_RULES[metric][0]
            if side != expected:
                raise ValueError(f"QC metric {metric!r} is judged on the {expected} side, got {side!r}")
            values[float(t)][metric] = float(value)
        missing = set(QC_METRICS) - set(values[float(t)])
        if missing:
            raise ValueError(f"QC thresholds for t={t} lack {sorted(missing)}")
    return QCThresholds(values=values, n_cells_fit=0)


def qc_pass_ratio(
    metrics: pd.DataFrame, thresholds: QCThresholds | Mapping[Any, Any], nmads: Sequence[float] | None = None
) -> pd.Series:
    """Fraction of cells passing QC at each ``t`` with the data's stored thresholds (design §7).

    ``metrics`` holds the per-cell QC metrics (``compute_qc_metrics``: ``total_counts``,
    ``n_genes_by_counts``, ``pct_counts_mt``, ``pct_counts_ribo``, ``pct_counts_hb``); a cell
    passes at ``t`` when no metric lies beyond its threshold (no doublet flag for generated cells,
    as :func:`gpo_vae.preprocessing.qc.apply_qc_thresholds` with ``doublets=None``).

    Returns
    -------
    Series indexed by ``t`` (float), named ``qc_pass_ratio``.
    """
    fitted = _as_thresholds(thresholds)
    wanted = fitted.nmads if nmads is None else tuple(float(t) for t in nmads)
    unknown = set(wanted) - set(fitted.nmads)
    if unknown:
        raise ValueError(f"no stored thresholds for t={sorted(unknown)}; stored: {fitted.nmads}")
    if len(metrics) == 0:
        raise ValueError("no cells: the QC pass ratio is undefined")
    flags = apply_qc_thresholds(metrics, fitted, doublets=None, default_nmads=wanted[0])
    ratios = [1.0 - flags[f"qc_fail_t{t:g}"].to_numpy().mean() for t in wanted]
    return pd.Series(ratios, index=pd.Index(wanted, name="t"), name="qc_pass_ratio")


def _spearman(pred: pd.Series, reported: pd.Series) -> tuple[float, int]:
    joined = pd.concat([pred.rename("pred"), reported.rename("reported")], axis=1, join="inner").dropna()
    n = len(joined)
    if n < 3 or joined["pred"].nunique() < 2 or joined["reported"].nunique() < 2:
        return float("nan"), n
    return float(stats.spearmanr(joined["pred"], joined["reported"]).statistic), n


def summary_stats_agreement(
    pred_knockdown: pd.Series,
    reported_knockdown: pd.Series,
    pred_ndeg: pd.Series,
    reported_ndeg: pd.Series,
) -> dict[str, float | int]:
    """Spearman rank correlation of predicted vs reported knockdown and number of DEGs.

    Series are indexed by perturbation; each correlation uses the perturbations present (and
    not NaN) in both. Fewer than 3 such perturbations, or a constant side, give NaN.

    Returns
    -------
    ``{"knockdown_spearman", "knockdown_n", "ndeg_spearman", "ndeg_n"}``.
    """
    knockdown, n_knockdown = _spearman(pred_knockdown, reported_knockdown)
    ndeg, n_ndeg = _spearman(pred_ndeg, reported_ndeg)
    return {
        "knockdown_spearman": knockdown,
        "knockdown_n": n_knockdown,
        "ndeg_spearman": ndeg,
        "ndeg_n": n_ndeg,
    }
