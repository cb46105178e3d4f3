"""Perturbation filters in the CausalBench style (design §3), by modality, with their table.

Order: strong perturbations (from the summary statistics) → on-target filter (cells whose target
moved the way the modality moves it) → perturbations with at least ``min_cells`` cells. Each
filter returns a boolean cell mask and a record (counts before/after, removed perturbations by
name); controls are always kept. Filters compose through ``obs_mask`` without copying the count
matrix. :func:`perturbation_filter_mask` runs the three and fills the perturbation table
(:mod:`gpo_vae.preprocessing.filter_table`): one row per label saying what each filter saw and
which one removed it, with the value that failed and the config key that sets the threshold.

Labels are canonical (:mod:`gpo_vae.data.labels`): ``A+B`` is one label whose targets are A and
B, judged per label by the statistics and, per measured target, by the on-target filter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpo_vae.data.contract import CONTROL_LABEL, PERTURBATION_KEY
from gpo_vae.data.labels import label_genes, labels_in
from gpo_vae.preprocessing.config import DEFAULT_TARGET_SUM, PerturbationFilterConfig
from gpo_vae.preprocessing.filter_table import (
    KEPT,
    PerturbationFilterError,
    filter_error,
    perturbation_table,
    protect_singles,
    singles_of_kept_pairs,
    strong_decisions,
    too_few_error,
)
from gpo_vae.preprocessing.normalize import as_csr, library_size, on_disk, rows_and_columns

logger = logging.getLogger(__name__)

Resolved = Literal["crispri", "crispra", "knockout"]
_LOG_NAMES = 10  # names shown in a log line; records keep full lists
_PERCENTILE_BLOCK = 512  # target genes whose control values are densified at once

__all__ = [
    "PerturbationFilterConfig",
    "PerturbationFilterError",
    "min_cells_filter",
    "on_target_filter",
    "perturbation_filter_mask",
]


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
    """Counts before/after a filter, logged."""
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
    return record


def _gather(X: sp.spmatrix | np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``X[rows[i], cols[i]]`` for every i, one sparse lookup per pair (no densifying); an
    on-disk matrix is read a block of the rows asked for at a time."""
    if rows.size == 0:  # scipy returns a 1 × 0 matrix, not an empty array, for empty fancy indices
        return np.zeros(0, dtype=np.float64)
    if on_disk(X):
        # a block of the rows asked for at a time, only its pairs looked up: memory is one
        # block's, where all the rows' target columns at once grew with the cells
        out = np.empty(rows.size, dtype=np.float64)
        order = np.argsort(rows, kind="stable")
        by_row = rows[order]
        unique_rows = np.unique(rows)
        for start in range(0, unique_rows.size, X.block_cells):
            block_rows = unique_rows[start : start + X.block_cells]
            pairs = order[
                np.searchsorted(by_row, block_rows[0]) : np.searchsorted(by_row, block_rows[-1], "right")
            ]
            local = np.searchsorted(block_rows, rows[pairs])
            out[pairs] = np.asarray(X[block_rows][local, cols[pairs]], dtype=np.float64).ravel()
        return out
    if sp.issparse(X):
        return np.asarray(as_csr(X)[rows, cols], dtype=np.float64).ravel()
    return np.asarray(X)[rows, cols].astype(np.float64)


def _control_percentiles(
    X: sp.spmatrix | np.ndarray, control_rows: np.ndarray, cols: np.ndarray, scale: np.ndarray, q: float
) -> np.ndarray:
    """The ``q``-th percentile of each column of ``cols`` over the control rows (normalised)."""
    values = rows_and_columns(X, control_rows, cols)
    out = np.empty(len(cols))
    for left in range(0, len(cols), _PERCENTILE_BLOCK):
        block = values[:, left : left + _PERCENTILE_BLOCK]
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        out[left : left + _PERCENTILE_BLOCK] = np.percentile(
            block.astype(np.float64) * scale[control_rows, None], q, axis=0
        )
    return out


def on_target_filter(
    adata: ad.AnnData,
    modality: Resolved = "crispri",
    percentile: float = 10.0,
    *,
    control_label: str = CONTROL_LABEL,
    perturbation_key: str = PERTURBATION_KEY,
    target_sum: float = DEFAULT_TARGET_SUM,
    obs_mask: np.ndarray | None = None,
    counts: Any = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Keep a perturbed cell only if each of its measured targets moved as the modality moves it.

    ``counts``: the count matrix when it is not ``adata.X`` (e.g. a
    :class:`~gpo_vae.data.on_disk.CountsOnDisk`, read a block of cells at a time).

    CRISPRi: the target's library-normalised expression (counts scaled to ``target_sum``, no
    log) is at most the ``percentile``-th percentile of that gene in control cells; CRISPRa:
    strictly above the ``(100 − percentile)``-th; knockout: no expression filter (Cas9
    knockouts need not lower the mRNA). A combination ``A+B`` must pass for every measured
    target. Targets that are not measured keep all their cells and are listed in the record
    (``unmeasured_targets``). Percentiles interpolate linearly (numpy's default), as CausalBench.
    """
    labels = _labels(adata, perturbation_key)
    before = _considered(adata, obs_mask)
    threshold = {"modality": modality, "percentile": percentile}
    perts = sorted(set(labels[before]) - {control_label})
    genes = sorted({g for p in perts for g in label_genes(p)})
    column = pd.Series(adata.var_names.get_indexer(genes), index=genes, dtype=np.int64)
    measured = column[column >= 0]
    unmeasured = [g for g in genes if column[g] < 0]
    if modality == "knockout" or measured.empty:
        record = _record(
            "on_target", threshold, labels, before, before.copy(), control_label,
            n_unmeasured_targets=len(unmeasured), unmeasured_targets=unmeasured, control_thresholds={},
        )  # fmt: skip
        return before.copy(), record
    control = before & (labels == control_label)
    if not control.any():
        raise PerturbationFilterError(
            f"on-target filter: no control cell ({control_label!r}) to set thresholds"
        )
    X = adata.X if counts is None else counts
    lib = library_size(X)
    scale = np.divide(target_sum, lib, out=np.zeros_like(lib), where=lib > 0)
    q = percentile if modality == "crispri" else 100.0 - percentile
    thresholds = pd.Series(
        _control_percentiles(X, np.flatnonzero(control), measured.to_numpy(), scale, q), index=measured.index
    )
    after = before.copy()
    # every (perturbed cell, measured target) pair, expanded from the labels' target lists at once
    targets = [[g for g in label_genes(p) if g in measured.index] for p in perts]
    n_targets = np.array([len(t) for t in targets], dtype=np.int64)
    flat = measured.reindex([g for t in targets for g in t]).to_numpy(dtype=np.int64)
    first = np.r_[0, np.cumsum(n_targets)[:-1]]
    code = pd.Index(perts).get_indexer(labels)
    cells = np.flatnonzero(before & (code >= 0))
    per_cell = n_targets[code[cells]]
    rows = np.repeat(cells, per_cell)
    within = np.arange(rows.size) - np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
    gene_cols = flat[first[code[rows]] + within]
    values = _gather(X, rows, gene_cols) * scale[rows]
    limits = thresholds.reindex(adata.var_names[gene_cols]).to_numpy()
    passed = values <= limits if modality == "crispri" else values > limits
    after[np.unique(rows[~passed])] = False
    record = _record(
        "on_target",
        threshold,
        labels,
        before,
        after,
        control_label,
        n_unmeasured_targets=len(unmeasured),
        unmeasured_targets=unmeasured,
        control_thresholds={str(g): float(v) for g, v in thresholds.items()},
    )
    if unmeasured:
        logger.info("on-target filter: %d targets not measured, all their cells kept", len(unmeasured))
    return after, record


def min_cells_filter(
    adata: ad.AnnData,
    min_cells: int = 101,
    *,
    control_label: str = CONTROL_LABEL,
    perturbation_key: str = PERTURBATION_KEY,
    obs_mask: np.ndarray | None = None,
    protected: Iterable[str] = (),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Keep perturbations with AT LEAST ``min_cells`` cells, plus controls and ``protected``.

    CausalBench's "more than 100 cells" is ``min_cells=101``; a screen whose perturbations all
    have exactly ``min_cells`` cells keeps them all. ``protected`` labels (the singles of kept
    pairs) are kept with any number of cells.
    """
    labels = _labels(adata, perturbation_key)
    before = _considered(adata, obs_mask)
    counts = pd.Series(labels[before]).value_counts()
    keep = set(counts.index[counts >= min_cells]) | {control_label} | set(protected)
    after = before & labels_in(labels, keep)
    record = _record("min_cells", {"min_cells": min_cells}, labels, before, after, control_label)
    return after, record


def _counts(labels: np.ndarray, mask: np.ndarray) -> pd.Series:
    return pd.Series(labels[mask]).value_counts()


def perturbation_filter_mask(
    adata: ad.AnnData,
    stats: pd.DataFrame | None,
    config: PerturbationFilterConfig | Mapping[str, Any] | None = None,
    modality: Resolved = "crispri",
    *,
    control_label: str = CONTROL_LABEL,
    perturbation_key: str = PERTURBATION_KEY,
    counts: Any = None,
) -> tuple[np.ndarray, list[dict[str, Any]], pd.DataFrame]:
    """Strong perturbations → on-target → min cells (design order): cells kept, records, table.

    ``stats`` are the summary statistics as :func:`gpo_vae.data.summary_stats_io.read_summary_stats`
    returns them (None: every perturbation counts as strong, for a screen judged by its cells
    alone). The singles of every kept pair ``A+B`` are kept whatever their strength and cell
    count (a second pass with them protected; the table marks them), since the pair's
    prediction is built from them. Nothing is copied, so a caller can read only the kept rows
    of a large file afterwards; ``counts`` (when not ``adata.X``, e.g. on disk) is read a block of
    cells at a time. A filter that leaves no perturbation, or fewer than
    ``min_perturbations``, raises :class:`PerturbationFilterError` with the table and the config
    keys to change.
    """
    cfg = (
        config if isinstance(config, PerturbationFilterConfig) else PerturbationFilterConfig.from_dict(config)
    )
    common = {"control_label": control_label, "perturbation_key": perturbation_key, "counts": counts}
    mask, records, table = _filter_pass(adata, stats, cfg, modality, {}, **common)
    protected = singles_of_kept_pairs(table)
    if protected:
        mask, records, table = _filter_pass(adata, stats, cfg, modality, protected, **common)
    if int((table["status"] == KEPT).sum()) < cfg.min_perturbations:
        raise too_few_error(table, cfg.min_perturbations)
    return mask, records, table


def _filter_pass(
    adata: ad.AnnData,
    stats: pd.DataFrame | None,
    cfg: PerturbationFilterConfig,
    modality: Resolved,
    protected: Mapping[str, str],
    *,
    control_label: str,
    perturbation_key: str,
    counts: Any = None,
) -> tuple[np.ndarray, list[dict[str, Any]], pd.DataFrame]:
    """One pass of the three filters; ``protected`` (single → its kept pair) passes the strong
    and min-cells filters whatever its values."""
    labels = _labels(adata, perturbation_key)
    table = perturbation_table(labels, stats, adata.var_names, control_label)
    min_degs = cfg.resolved_min_degs(adata.n_vars)
    table = protect_singles(strong_decisions(table, stats, cfg, modality, min_degs), protected)
    strong = set(table.index[table["status"] == KEPT])
    mask = labels_in(labels, [*strong, control_label])
    every = np.ones(adata.n_obs, dtype=bool)
    strong_record = _record(
        "strong_perturbations",
        {
            "min_degs": min_degs,
            "max_knockdown": cfg.max_knockdown,
            "min_filtered_cells": cfg.min_filtered_cells,
        },
        labels,
        every,
        mask,
        control_label,
        modality=modality,
        not_strong=sorted(table.index[table["status"] == "strong_perturbations"]),
        missing_from_summary=sorted(table.index[~table["stats_row"]]),
        unmeasured_targets=sorted(table.index[table["measured"] == "no"]),
        singles_of_kept_pairs=sorted(protected),
    )
    if not strong:
        raise filter_error(table, "strong_perturbations")
    common = {"control_label": control_label, "perturbation_key": perturbation_key}
    mask, on_target = on_target_filter(
        adata,
        modality,
        cfg.knockdown_percentile,
        target_sum=cfg.target_sum,
        obs_mask=mask,
        counts=counts,
        **common,
    )
    table["cells_on_target"] = _counts(labels, mask).reindex(table.index).fillna(0).astype(int)
    lost = (table["status"] == KEPT) & (table["cells_on_target"] == 0)
    table.loc[lost, "status"] = "on_target"
    table.loc[lost, "reason"] = (
        f"no cell passes the {modality} on-target filter (filters.knockdown_percentile)"
    )
    if not (table["status"] == KEPT).any():
        raise filter_error(table, "on_target")
    mask, enough = min_cells_filter(adata, cfg.min_cells, obs_mask=mask, protected=protected, **common)
    short = (
        (table["status"] == KEPT)
        & (table["cells_on_target"] < cfg.min_cells)
        & ~table.index.isin(list(protected))
    )
    table.loc[short, "status"] = "min_cells"
    table.loc[short, "reason"] = [
        f"{n} cells < {cfg.min_cells} (filters.min_cells)" for n in table.loc[short, "cells_on_target"]
    ]
    if not (table["status"] == KEPT).any():
        raise filter_error(table, "min_cells")
    return mask, [strong_record, on_target, enough], table
