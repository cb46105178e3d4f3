"""Replogle-style per-perturbation summary statistics computed from cells (design §1, §3).

Replogle et al. 2022 ship one row per perturbation (``summary_stats.xlsx``); the perturbation
filters of design §3 read ``percent knockdown``, ``number of cells (filtered)`` and
``Number of DEGs (anderson-darling)`` from it. :func:`compute_summary_stats` recomputes those
columns from any counts AnnData in the raw contract, so a dataset without published
statistics (the synthetic screen, a new screen) can go through the same filters.

The DEG counts come from :func:`gpo_vae.stats.anderson_darling.two_sample_tests` of each
perturbation's cells against one control subsample, sorted once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from tqdm.auto import tqdm

from gpo_vae.data.contract import CONTROL_LABEL, GENE_ID_KEY, PERTURBATION_KEY, DataContractError
from gpo_vae.data.labels import label_genes
from gpo_vae.data.on_disk import CountsOnDisk, rows_by_group
from gpo_vae.stats.anderson_darling import sort_reference, two_sample_tests
from gpo_vae.stats.mad import mad_threshold, outside_threshold

REPLOGLE_COLUMNS: tuple[str, ...] = (
    "genetic perturbation",
    "mean UMI count",
    "number of cells (unfiltered)",
    "number of cells (filtered)",
    "target expression",
    "fold knockdown",
    "percent knockdown",
    "core_control",
    "mean leverage score",
    "std of leverage score",
    "energy test (p-value)",
    "Number of DEGs (anderson-darling)",
    "Number of DEGs (Mann-Whitney)",
    "Z-scored number of UMIs",
    "Fraction of mitochondrially encoded RNA",
    "Fraction of TE RNA",
    "Z-scored CIN score",
)

_NOT_COMPUTED = "Not computed from cells here: always empty (NaN)."
COLUMN_DESCRIPTIONS: dict[str, str] = {
    "genetic perturbation": "Perturbation as index_SYMBOL_P1P2_geneid; the target symbol is field 2 when "
    "split on '_'. Controls: index_non-targeting_non-targeting_non-targeting.",
    "mean UMI count": "Mean UMI count of the perturbation's cells before QC filtering.",
    "number of cells (unfiltered)": "Cells bearing the perturbation before QC filtering.",
    "number of cells (filtered)": "Cells left after removing low-UMI and high mitochondrial-fraction "
    "outliers (median-absolute-deviation thresholds over all cells).",
    "target expression": "Mean library-normalised expression of the target gene in QC-passing control "
    "cells (UMIs per cell at the controls' median depth); empty when the target is not measured.",
    "fold knockdown": "Mean normalised target expression in the perturbation's QC-passing cells divided "
    "by the same mean in QC-passing control cells (a combination A+B: the mean over its measured targets).",
    "percent knockdown": "Fold knockdown minus 1, signed: -1 means the target is fully knocked down, 0 "
    "unchanged, +4 a five-fold activation (CRISPRa).",
    "core_control": "Core-control flag of Replogle et al.; not derived here: always False.",
    "mean leverage score": _NOT_COMPUTED,
    "std of leverage score": _NOT_COMPUTED,
    "energy test (p-value)": _NOT_COMPUTED,
    "Number of DEGs (anderson-darling)": "Genes whose 2-sample Anderson-Darling test (midrank) of "
    "normalised expression, perturbed vs a control subsample, is significant at Benjamini-Hochberg FDR.",
    "Number of DEGs (Mann-Whitney)": "Same as the Anderson-Darling count with a two-sided Mann-Whitney U "
    "test (normal approximation with tie correction).",
    "Z-scored number of UMIs": "Mean UMI count of QC-passing cells minus that of QC-passing controls, "
    "in units of the controls' standard deviation.",
    "Fraction of mitochondrially encoded RNA": "Mean fraction of a QC-passing cell's UMIs from MT- genes.",
    "Fraction of TE RNA": _NOT_COMPUTED,
    "Z-scored CIN score": _NOT_COMPUTED,
}


def count_significant(pvalues: np.ndarray, fdr: float) -> int:
    """Number of Benjamini-Hochberg discoveries at ``fdr`` among the non-NaN p-values."""
    p = np.asarray(pvalues, dtype=np.float64)
    p = p[~np.isnan(p)]
    if p.size == 0:
        return 0
    return int(np.sum(stats.false_discovery_control(p, method="bh") <= fdr))


def normalise_rows(counts: sp.spmatrix, totals: np.ndarray, target_sum: float) -> sp.csr_matrix:
    """CSR float32 copy of ``counts`` with each row scaled to ``target_sum`` total counts."""
    out = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    scale = (target_sum / np.maximum(np.asarray(totals, dtype=np.float64), 1.0)).astype(np.float32)
    out.data *= np.repeat(scale, np.diff(out.indptr))
    return out


def _perturbation_label(index: int, symbol: str, gene_id: str) -> str:
    return f"{index}_{symbol}_P1P2_{gene_id}"


def _target_ids(adata: ad.AnnData, labels: np.ndarray, perturbations: np.ndarray) -> dict[str, str]:
    """Gene id per perturbation: obs["gene_id"] (Replogle), else var["gene_id"] (joined by ``+``
    for a combination), else the symbol."""
    ids = {p: p for p in perturbations}
    if GENE_ID_KEY in adata.var.columns:
        var_ids = adata.var[GENE_ID_KEY].astype(str)
        ids.update(
            {
                p: "+".join(var_ids.get(g, g) for g in label_genes(p))
                for p in perturbations
                if label_genes(p) and all(g in var_ids.index for g in label_genes(p))
            }
        )
    if GENE_ID_KEY in adata.obs.columns:
        first = pd.Series(adata.obs[GENE_ID_KEY].astype(str).to_numpy(), index=labels)
        first = first[~first.index.duplicated()]
        ids.update({p: first[p] for p in perturbations})
    return ids


def compute_summary_stats(
    adata: ad.AnnData,
    perturbation_key: str = PERTURBATION_KEY,
    control_label: str = CONTROL_LABEL,
    qc_nmads: float = 3.0,
    fdr: float = 0.05,
    max_control_cells: int = 1000,
    seed: int = 0,
    progress: bool = True,
    counts: Any = None,
    scratch_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Replogle summary statistics of every perturbation, computed from a counts AnnData.

    Parameters
    ----------
    adata
        Raw-contract counts (cells × genes, gene symbols as ``var_names``, ``MT-`` genes for the
        mitochondrial fraction).
    perturbation_key, control_label
        Column of ``obs`` naming each cell's target, and the controls' label.
    qc_nmads
        A cell is filtered out when its UMI count is below, or its ``MT-`` fraction above, the
        median ∓ ``qc_nmads`` MADs over all cells (:mod:`gpo_vae.stats.mad`).
    fdr
        Benjamini-Hochberg level for the DEG counts.
    max_control_cells
        Every perturbation is tested against the same random subsample (``seed``) of at most
        this many QC-passing control cells: the cost per perturbation grows with it, and beyond
        ~1,000 controls the perturbation's own ~100 cells limit the power anyway.
    seed
        Seed of the control subsample.
    progress
        Show a progress bar over perturbations.
    counts
        The counts when they are not ``adata.X``: a :class:`~gpo_vae.data.on_disk.CountsOnDisk`
        is read a batch of perturbations at a time (:func:`~gpo_vae.data.on_disk.rows_by_group`,
        its scratch copy in ``scratch_dir``), with the same statistics as in memory.

    Returns
    -------
    pandas.DataFrame
        One row per perturbation (sorted by symbol) and a last row for the controls, with
        exactly :data:`REPLOGLE_COLUMNS`. Expression statistics use library-normalised counts
        (each cell scaled to the QC-passing controls' median UMI count) of QC-passing cells.
        Leverage scores, energy test, TE RNA and CIN score cannot be derived from the counts
        alone and are NaN; ``core_control`` is False. The controls' row has no knockdown or
        DEG counts.
    """
    if counts is None:
        counts = adata.X if sp.isspmatrix_csr(adata.X) else sp.csr_matrix(adata.X)
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    is_mt = np.asarray(adata.var_names.str.startswith("MT-"))
    if isinstance(counts, CountsOnDisk):  # row sums a block at a time: the same per-row values
        totals, mt_counts = np.empty(counts.shape[0]), np.empty(counts.shape[0])
        for start, stop, block in counts.row_blocks():
            totals[start:stop] = np.asarray(block.sum(axis=1), dtype=np.float64).ravel()
            mt_counts[start:stop] = np.asarray(block @ is_mt.astype(block.dtype), dtype=np.float64).ravel()
    else:
        totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
        mt_counts = counts @ is_mt.astype(counts.dtype)  # a mat-vec: no copy of the MT columns
    mt_fraction = np.asarray(mt_counts, dtype=np.float64).ravel() / np.maximum(totals, 1)
    low_umi = outside_threshold(totals, mad_threshold(totals, qc_nmads, "low"), "low")
    high_mt = outside_threshold(mt_fraction, mad_threshold(mt_fraction, qc_nmads, "high"), "high")
    passed = ~low_umi & ~high_mt & (totals > 0)

    is_control = labels == control_label
    controls = np.flatnonzero(is_control & passed)
    if controls.size < 2:
        raise DataContractError(
            f"the screen has {controls.size} QC-passing control cells ({control_label!r}); its summary "
            "statistics (on-target change, DEGs) need at least 2: add control cells, or check "
            "--control-label (inspect shows the labels read)"
        )
    target_sum = float(np.median(totals[controls]))
    umi_mean, umi_std = totals[controls].mean(), totals[controls].std(ddof=1)

    perturbations = np.unique(labels)
    gene_index = pd.Series(np.arange(adata.n_vars), index=adata.var_names)
    gene_ids = _target_ids(adata, labels, perturbations)
    targets = [p for p in perturbations if p != control_label]
    # the controls are group 0 (their mean and reference come first), then the targets in order
    codes = pd.Categorical(labels, categories=[control_label, *targets]).codes
    rows = []
    groups = rows_by_group(counts, codes, scratch_dir=scratch_dir)
    _, control_cells, control_counts = next(groups)
    in_controls = np.searchsorted(control_cells, controls)
    control_mean = np.asarray(
        normalise_rows(control_counts[in_controls], totals[controls], target_sum).mean(axis=0)
    ).ravel()
    chosen = np.random.default_rng(seed).choice(
        controls, min(max_control_cells, controls.size), replace=False
    )
    chosen.sort()
    chosen_counts = control_counts[np.searchsorted(control_cells, chosen)]
    del control_counts
    reference = sort_reference(normalise_rows(chosen_counts, totals[chosen], target_sum))
    for code, cells, cell_counts in tqdm(
        groups, total=len(targets), desc="summary statistics", disable=not progress
    ):
        symbol = targets[code - 1]
        kept = cells[passed[cells]]
        row = dict.fromkeys(REPLOGLE_COLUMNS, np.nan)
        row.update(
            {
                "genetic perturbation": _perturbation_label(code, symbol, gene_ids[symbol]),
                "mean UMI count": totals[cells].mean(),
                "number of cells (unfiltered)": cells.size,
                "number of cells (filtered)": kept.size,
                "core_control": False,
            }
        )
        if kept.size > 0:
            sample = normalise_rows(cell_counts[passed[cells]], totals[kept], target_sum)
            tests = two_sample_tests(sample, reference)
            row["Number of DEGs (anderson-darling)"] = count_significant(tests.ad_pvalue, fdr)
            row["Number of DEGs (Mann-Whitney)"] = count_significant(tests.mw_pvalue, fdr)
            row["Z-scored number of UMIs"] = (totals[kept].mean() - umi_mean) / umi_std
            row["Fraction of mitochondrially encoded RNA"] = mt_fraction[kept].mean()
            columns = [int(gene_index[g]) for g in label_genes(symbol) if g in gene_index.index]
            if columns:
                row["target expression"] = float(np.mean(control_mean[columns]))
                expressed = [j for j in columns if control_mean[j] > 0]
                if expressed:
                    folds = np.asarray(sample[:, expressed].mean(axis=0)).ravel() / control_mean[expressed]
                    row["fold knockdown"] = float(folds.mean())
                    row["percent knockdown"] = row["fold knockdown"] - 1.0
        rows.append(row)

    cells = np.flatnonzero(is_control)
    control_row = dict.fromkeys(REPLOGLE_COLUMNS, np.nan)
    control_row.update(
        {
            "genetic perturbation": "_".join([str(len(targets) + 1)] + [control_label] * 3),
            "mean UMI count": totals[cells].mean(),
            "number of cells (unfiltered)": cells.size,
            "number of cells (filtered)": controls.size,
            "core_control": False,
            "Z-scored number of UMIs": 0.0,
            "Fraction of mitochondrially encoded RNA": mt_fraction[controls].mean(),
        }
    )
    rows.append(control_row)
    return pd.DataFrame(rows, columns=list(REPLOGLE_COLUMNS))


def write_summary_stats_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` (exactly :data:`REPLOGLE_COLUMNS`) as a csv, atomically and byte-reproducibly.

    The same statistics give the same bytes (a workbook embeds its write time), so files
    derived from a user's screen, and the addresses computed from them, stay the same when the
    statistics are computed again.
    """
    missing = [c for c in REPLOGLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"summary statistics lack the Replogle columns {missing}")
    from gpo_vae.io import write_text_atomic

    return write_text_atomic(df[list(REPLOGLE_COLUMNS)].to_csv(index=False, lineterminator="\n"), path)


def write_summary_stats_xlsx(df: pd.DataFrame, path: str | Path, sheet_name: str) -> Path:
    """Write ``df`` as a Replogle-format workbook: a ``description`` sheet and the data sheet.

    The data sheet holds exactly :data:`REPLOGLE_COLUMNS` (missing columns are an error). The
    workbook is written to a temporary file in the same directory and moved into place, so a
    killed run never leaves a truncated ``path``.
    """
    missing = [c for c in REPLOGLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"summary statistics lack the Replogle columns {missing}")
    if not 0 < len(sheet_name) <= 31 or sheet_name == "description":
        raise ValueError(f"sheet name {sheet_name!r} must be 1-31 characters and not 'description'")
    path = Path(path)
    description = pd.DataFrame(
        {"column": list(REPLOGLE_COLUMNS), "description": [COLUMN_DESCRIPTIONS[c] for c in REPLOGLE_COLUMNS]}
    )
    from gpo_vae.io import temp_sibling

    tmp = temp_sibling(path, is_dir=False, suffix=".tmp")  # same directory: atomic rename
    try:
        with pd.ExcelWriter(tmp, engine="openpyxl") as writer:
            description.to_excel(writer, sheet_name="description", index=False)
            df[list(REPLOGLE_COLUMNS)].to_excel(writer, sheet_name=sheet_name, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
