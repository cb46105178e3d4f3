"""Differentially expressed genes of each perturbation vs control cells, and FC3 genes (design §4).

The test is :mod:`gpo_vae.preprocessing.wilcoxon`'s (its names are re-exported here). Every
statistic is computed on training cells only (no test leakage, design §4).
"""

from __future__ import annotations

import logging
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from gpo_vae.data.contract import CONTROL_LABEL, PERTURBATION_KEY
from gpo_vae.preprocessing.normalize import (
    DEFAULT_TARGET_SUM,
    as_csr,
    normalize_log1p,
    on_disk,
)
from gpo_vae.preprocessing.wilcoxon import (
    DE_BLOCK_VALUES,
    DE_COLUMNS,
    WilcoxonScores,
    benjamini_hochberg,
    rank_genes_on_disk,
    rank_genes_vs_reference,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DE_BLOCK_VALUES",
    "DE_COLUMNS",
    "WilcoxonScores",
    "annotate_deg",
    "benjamini_hochberg",
    "fc3_genes",
    "highly_variable_genes",
    "rank_genes_on_disk",
    "rank_genes_vs_reference",
]


def fc3_genes(
    de_table: pd.DataFrame, lfc: float = 3.0, pval_adj: float = 0.01
) -> tuple[list[str], pd.Series]:
    """Per group the top-ranked gene with ``|logfoldchange| > lfc`` and ``pval_adj < pval_adj``.

    Ranking is by score, highest first, as rank_genes_groups orders genes. The p-value condition
    applies to both signs (the reference code's ``lfc < -3 or (lfc > 3 and p < 0.01)`` let
    non-significant down-regulated genes through: an operator-precedence bug).

    Returns
    -------
    The sorted union of picked genes, and the pick of each group that has one (Series
    indexed by group).
    """
    hits = de_table.loc[(de_table["logfoldchange"].abs() > lfc) & (de_table["pval_adj"] < pval_adj)]
    hits = hits.sort_values(["group", "rank"], kind="stable")
    picks = hits.groupby("group", observed=True, sort=True)["gene"].first().astype(str)
    picks.name = "fc3_gene"
    return sorted(set(picks)), picks


def highly_variable_genes(
    adata_log: ad.AnnData,
    batch_key: str | None = PERTURBATION_KEY,
    n_top: int | None = None,
    fit_mask: np.ndarray | None = None,
    flavor: str = "seurat",
) -> pd.Series:
    """scanpy's HVG selection (flavor seurat on log data, per-perturbation batches as the reference).

    Only the cells in ``fit_mask`` (default all) are used. Returns a boolean Series over genes
    named ``highly_variable``; ``adata_log`` is not modified.
    """
    rows = slice(None) if fit_mask is None else np.flatnonzero(np.asarray(fit_mask, dtype=bool))
    obs = pd.DataFrame(index=adata_log.obs_names[rows])
    if batch_key is not None:
        obs[batch_key] = adata_log.obs[batch_key].to_numpy()[rows]
    X = adata_log.X[rows] if sp.issparse(adata_log.X) else np.asarray(adata_log.X)[rows]
    sub = ad.AnnData(X=as_csr(X), obs=obs, var=pd.DataFrame(index=adata_log.var_names))
    result = sc.pp.highly_variable_genes(
        sub, flavor=flavor, batch_key=batch_key, n_top_genes=n_top, inplace=False
    )
    flags = pd.Series(np.asarray(result["highly_variable"], dtype=bool), index=result.index)
    return flags.reindex(adata_log.var_names).fillna(False).astype(bool).rename("highly_variable")


def annotate_deg(
    adata_counts: ad.AnnData,
    split_mask_train: np.ndarray,
    *,
    perturbation_key: str = PERTURBATION_KEY,
    control_label: str = CONTROL_LABEL,
    target_sum: float = DEFAULT_TARGET_SUM,
    lfc: float = 3.0,
    pval_adj: float = 0.01,
    restrict_to_hvg: bool = False,
    n_top_hvg: int | None = None,
    tie_correct: bool = True,
    block_genes: int = 2048,
    counts: Any = None,
    keep_table: bool = True,
) -> tuple[pd.Series, pd.DataFrame | None]:
    """FC3 genes from training cells only: normalise → (HVG) → rank vs controls → FC3 (design §4).

    ``restrict_to_hvg`` tests only HVGs (batch_key = perturbation); the reference computes HVGs
    but ranks all genes, which is the default here. Nothing is written to ``adata_counts``.
    ``counts``: the count matrix when it is not ``adata_counts.X``; on disk the test reads it once
    per block of genes (:func:`rank_genes_on_disk`), except with ``restrict_to_hvg``, whose HVGs
    need the training cells' log values in memory. ``keep_table`` False: the picks are made from
    the test's groups × genes arrays, without the long table (about 0.6 GB at 1,000 perturbations
    × 8,700 genes), and None is returned in its place.

    Returns
    -------
    A boolean Series over ``var_names`` named ``FC3`` (store it as ``var["FC3"]``) and the DE
    table of :func:`rank_genes_vs_reference` (None without ``keep_table``).
    """
    train = np.flatnonzero(np.asarray(split_mask_train, dtype=bool))
    if train.size == 0:
        raise ValueError("split_mask_train selects no cell")
    labels = adata_counts.obs[perturbation_key].astype(str).to_numpy()[train]
    X = adata_counts.X if counts is None else counts
    if on_disk(X) and not restrict_to_hvg:
        result = rank_genes_on_disk(
            X.subset(train),
            labels,
            control_label,
            adata_counts.var_names,
            target_sum,
            tie_correct=tie_correct,
            table=keep_table,
        )
        return _fc3(result, adata_counts.var_names, lfc, pval_adj, train.size)
    # normalisation is per cell, so normalising only the training rows changes nothing else
    train_counts = X.subset(train).to_memory() if on_disk(X) else as_csr(X)[train]
    X_log = normalize_log1p(train_counts, target_sum)
    del train_counts
    gene_mask = None
    if restrict_to_hvg:
        adata_log = ad.AnnData(
            X=X_log,
            obs=pd.DataFrame({perturbation_key: labels}, index=adata_counts.obs_names[train]),
            var=pd.DataFrame(index=adata_counts.var_names),
        )
        gene_mask = highly_variable_genes(adata_log, batch_key=perturbation_key, n_top=n_top_hvg).to_numpy()
    result = rank_genes_vs_reference(
        X_log,
        labels,
        control_label,
        adata_counts.var_names,
        gene_mask=gene_mask,
        tie_correct=tie_correct,
        block_genes=block_genes,
        table=keep_table,
    )
    return _fc3(result, adata_counts.var_names, lfc, pval_adj, train.size)


def _fc3(
    result: pd.DataFrame | WilcoxonScores, var_names: pd.Index, lfc: float, pval_adj: float, n_train: int
) -> tuple[pd.Series, pd.DataFrame | None]:
    """FC3 flags from the DE table, or from the test's arrays (no table returned)."""
    if isinstance(result, WilcoxonScores):
        de_table, picks, n_groups = None, result.fc3_picks(lfc, pval_adj), len(result.groups)
    else:
        de_table, picks, n_groups = (
            result,
            fc3_genes(result, lfc=lfc, pval_adj=pval_adj)[1],
            result["group"].nunique(),
        )
    union = sorted(set(picks))
    logger.info(
        "FC3: %d genes picked by %d of %d perturbations (|lfc| > %g, adjusted p < %g, %d training cells)",
        len(union),
        len(picks),
        n_groups,
        lfc,
        pval_adj,
        n_train,
    )
    fc3 = pd.Series(var_names.isin(union), index=var_names, name="FC3")
    return fc3, de_table
