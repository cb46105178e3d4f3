"""Perturbation filters in the CausalBench style (design §3).

Order: strong perturbations (from the summary statistics) → knockdown filter (cells whose target
is really knocked down) → perturbations with more than ``min_cells`` cells. Each filter returns a
boolean cell mask and a record (counts before/after, removed perturbations by name); controls are
always kept. Filters compose through ``obs_mask`` without copying the count matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpo_vae.data.contract import CONTROL_LABEL, PERTURBATION_KEY
from gpo_vae.preprocessing.config import DEFAULT_TARGET_SUM, PerturbationFilterConfig
from gpo_vae.preprocessing.normalize import as_csr, library_size

logger = logging.getLogger(__name__)

_LOG_NAMES = 10  # names shown in a log line; records keep full lists
_PERCENTILE_BLOCK = 512  # target genes whose control values are densified at once


class PerturbationFilterError(ValueError):
    """A filter left no perturbation; the message names the filter, its threshold and the counts."""


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_LOG_NAMES])
    return shown + (f" … (+{len(names) - _LOG_NAMES} more)" if len(names) > _LOG_NAMES else "")


def _labels(adata: ad.AnnData, perturbation_key: str) -> np.ndarray:
    if perturbation_key not in adata.obs:
        raise KeyError(f"obs has no column {perturbation_key!r} naming each cell's perturbation")
    return adata.obs[perturbation_key].astype(str).to_numpy()


def _considered(adata: ad.AnnData, obs_mask: np.ndarray | None) -> np.ndarray:
    if obs_mask is None:
        return np.ones(adata.n_obs, dtype=bool)
    mask = np.asarray(obs_mask, dtype=bool)
    if mask.shape != (adata.n_obs,):
        raise ValueError(f"obs_mask has shape {mask.shape}, expected ({adata.n_obs},)")
    return mask


def _record(
    name: str,
    threshold: dict[str, Any],
    labels: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    control_label: str,
    **extra: Any,
) -> dict[str, Any]:
    """Counts before/after a filter; raises when no perturbation is left."""
    perts_before = sorted(set(labels[before]) - {control_label})
    perts_after = sorted(set(labels[after]) - {control_label})
    removed = sorted(set(perts_before) - set(perts_after))
    record = {
        "filter": name,
        **threshold,
        "n_perturbations_before": len(perts_before),
        "n_perturbations_after": len(perts_after),
        "n_perturbations_removed": len(removed),
        "n_cells_before": int(before.sum()),
        "n_cells_after": int(after.sum()),
        "n_cells_removed": int(before.sum() - after.sum()),
        "removed_perturbations": removed,
        **extra,
    }
    logger.info(
        "%s (%s): %d → %d perturbations, %d → %d cells%s",
        name,
        ", ".join(f"{k}={v}" for k, v in threshold.items()),
        len(perts_before),
        len(perts_after),
        record["n_cells_before"],
        record["n_cells_after"],
        f"; removed {_names(removed)}" if removed else "",
    )
    if not perts_after:
        raise PerturbationFilterError(
            f"filter {name!r} ({threshold}) left no perturbation: {len(perts_before)} perturbations and "
            f"{record['n_cells_before']} cells before, {record['n_cells_after']} cells (controls only) after."
        )
    return record


def filter_strong_perturbations(
    adata: ad.AnnData,
    strong_genes: Iterable[str],
    known_genes: Iterable[str] | None = None,
    *,
    control_label: str = CONTROL_LABEL,
    perturbation_key: str = PERTURBATION_KEY,
    keep_unknown: bool = False,
    obs_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Keep cells of perturbations in ``strong_genes``, plus controls.

    ``known_genes`` are all perturbations with a summary-statistics row: one in the data but not
    there is counted and logged, and dropped unless ``keep_unknown``. The record lists them
    (``missing_from_summary``), the weak ones (``not_strong``) and strong genes absent from the
    data (``strong_not_in_data``).
    """
    labels = _labels(adata, perturbation_key)
    before = _considered(adata, obs_mask)
    present = sorted(set(labels[before]) - {control_label})
    strong = set(map(str, strong_genes))
    known = None if known_genes is None else set(map(str, known_genes)) | strong
    missing = [] if known is None else [p for p in present if p not in known]
    not_strong = [p for p in present if p not in strong and (known is None or p in known)]
    if missing:
        logger.warning(
            "%d perturbations have no summary-statistics row (%s): %s",
            len(missing),
            "kept" if keep_unknown else "dropped",
            _names(missing),
        )
    keep = strong | ({control_label} | (set(missing) if keep_unknown else set()))
    after = before & np.isin(labels, list(keep))
    record = _record(
        "strong_perturbations",
        {"keep_unknown": keep_unknown},
        labels,
        before,
        after,
        control_label,
        n_missing_from_summary=len(missing),
        missing_from_summary=missing,
        n_not_strong=len(not_strong),
        not_strong=not_strong,
        strong_not_in_data=sorted(strong - set(present)),
    )
    return after, record


def _gather(X: sp.spmatrix | np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``X[rows[i], cols[i]]`` for every i, one sparse lookup per pair (no densifying)."""
    if rows.size == 0:  # scipy returns a 1 × 0 matrix, not an empty array, for empty fancy indices
        return np.zeros(0, dtype=np.float64)
    if sp.issparse(X):
        return np.asarray(as_csr(X)[rows, cols], dtype=np.float64).ravel()
    return np.asarray(X)[rows, cols].astype(np.float64)


def knockdown_filter(
    adata: ad.AnnData,
    percentile: float = 10.0,
    *,
    control_label: str = CONTROL_LABEL,
    perturbation_key: str = PERTURBATION_KEY,
    target_sum: float = DEFAULT_TARGET_SUM,
    obs_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Keep a perturbed cell only if its target's library-normalised expression is ≤ the
    ``percentile``-th percentile of that gene in control cells.

    Perturbations whose target is not measured (not in ``var_names``) keep all their cells and are
    listed in the record (``unmeasured_targets``). Expression is counts scaled to ``target_sum``
    per cell (no log); percentiles interpolate linearly (numpy's default), as CausalBench.
    """
    labels = _labels(adata, perturbation_key)
    before = _considered(adata, obs_mask)
    control = before & (labels == control_label)
    if not control.any():
        raise PerturbationFilterError(
            f"knockdown filter: no control cell ({control_label!r}) to set thresholds"
        )
    perts = sorted(set(labels[before]) - {control_label})
    target_col = adata.var_names.get_indexer(perts)
    measured = [p for p, c in zip(perts, target_col, strict=True) if c >= 0]
    unmeasured = [p for p, c in zip(perts, target_col, strict=True) if c < 0]
    cols = target_col[target_col >= 0]

    X = adata.X
    lib = library_size(X)
    scale = np.divide(target_sum, lib, out=np.zeros_like(lib), where=lib > 0)

    # thresholds: one sparse extraction of (control cells × all measured targets), densified per block
    ctrl_rows = np.flatnonzero(control)
    ctrl_values = X[ctrl_rows][:, cols]
    thresholds = np.empty(len(cols))
    for left in range(0, len(cols), _PERCENTILE_BLOCK):
        block = ctrl_values[:, left : left + _PERCENTILE_BLOCK]
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        thresholds[left : left + _PERCENTILE_BLOCK] = np.percentile(
            block.astype(np.float64) * scale[ctrl_rows, None], percentile, axis=0
        )

    # each perturbed cell of a measured target: its own target value, gathered in one lookup
    threshold_of = pd.Series(thresholds, index=measured, dtype=np.float64)
    target_of = pd.Series(cols, index=measured, dtype=np.int64)
    rows = np.flatnonzero(before & (pd.Index(measured).get_indexer(labels) >= 0))
    values = _gather(X, rows, target_of.loc[labels[rows]].to_numpy()) * scale[rows]
    after = before.copy()
    after[rows] = values <= threshold_of.loc[labels[rows]].to_numpy()

    record = _record(
        "knockdown",
        {"percentile": percentile},
        labels,
        before,
        after,
        control_label,
        n_unmeasured_targets=len(unmeasured),
        unmeasured_targets=unmeasured,
        control_thresholds=dict(zip(measured, thresholds.tolist(), strict=True)),
    )
    if unmeasured:
        logger.info("knockdown filter: %d targets not measured, all their cells kept", len(unmeasured))
    return after, record


def min_cells_filter(
    adata: ad.AnnData,
    min_cells: int = 100,
    *,
    control_label: str = CONTROL_LABEL,
    perturbation_key: str = PERTURBATION_KEY,
    obs_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Keep perturbations with MORE than ``min_cells`` cells (design: "> 100 cells"), plus controls."""
    labels = _labels(adata, perturbation_key)
    before = _considered(adata, obs_mask)
    counts = pd.Series(labels[before]).value_counts()
    keep = set(counts.index[counts > min_cells]) | {control_label}
    after = before & np.isin(labels, list(keep))
    record = _record("min_cells", {"min_cells": min_cells}, labels, before, after, control_label)
    return after, record


def perturbation_filter_mask(
    adata: ad.AnnData,
    strong_genes: Iterable[str],
    known_genes: Iterable[str] | None,
    config: PerturbationFilterConfig | Mapping[str, Any] | None = None,
    *,
    control_label: str = CONTROL_LABEL,
    perturbation_key: str = PERTURBATION_KEY,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Strong perturbations → knockdown → min cells (design order): the cells kept, and the records.

    Nothing is copied, so a caller can read only the kept rows of a large file afterwards.
    """
    cfg = (
        config if isinstance(config, PerturbationFilterConfig) else PerturbationFilterConfig.from_dict(config)
    )
    common = {"control_label": control_label, "perturbation_key": perturbation_key}
    mask, strong = filter_strong_perturbations(
        adata, strong_genes, known_genes, keep_unknown=cfg.keep_unknown_perturbations, **common
    )
    mask, knockdown = knockdown_filter(
        adata, cfg.knockdown_percentile, target_sum=cfg.target_sum, obs_mask=mask, **common
    )
    mask, enough = min_cells_filter(adata, cfg.min_cells, obs_mask=mask, **common)
    return mask, [strong, knockdown, enough]


def apply_perturbation_filters(
    adata: ad.AnnData,
    strong_genes: Iterable[str],
    known_genes: Iterable[str] | None,
    config: PerturbationFilterConfig | Mapping[str, Any] | None = None,
    *,
    control_label: str = CONTROL_LABEL,
    perturbation_key: str = PERTURBATION_KEY,
) -> tuple[ad.AnnData, list[dict[str, Any]]]:
    """:func:`perturbation_filter_mask`, then a filtered copy (unused perturbation categories dropped)."""
    mask, records = perturbation_filter_mask(
        adata,
        strong_genes,
        known_genes,
        config,
        control_label=control_label,
        perturbation_key=perturbation_key,
    )
    filtered = adata[mask].copy()
    labels = filtered.obs[perturbation_key]
    if isinstance(labels.dtype, pd.CategoricalDtype):
        filtered.obs[perturbation_key] = labels.cat.remove_unused_categories()
    return filtered, records
