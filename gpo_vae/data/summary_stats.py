"""Replogle-style per-perturbation summary statistics computed from cells (design §1, §3).

Replogle et al. 2022 ship one row per perturbation (``summary_stats.xlsx``); the perturbation
filters of design §3 read ``percent knockdown``, ``number of cells (filtered)`` and
``Number of DEGs (anderson-darling)`` from it. :func:`compute_summary_stats` recomputes those
columns from any counts AnnData in the raw contract, so a dataset without published
statistics (the synthetic screen, a new screen) can go through the same filters.

The two-sample tests cover every gene in one pass and never densify: the reference (control)
values are sorted once into a flat array of ``gene << 32 | float32 bits`` keys (the bit pattern
of a non-negative float32 orders like its value), each perturbation's non-zero values are sorted
the same way, and a compiled (numba) walk merges the two gene by gene, one distinct value at a
time; zeros, the bulk of the data, form one counted group. The cost is linear in the non-zeros.
The Anderson-Darling statistic is Scholz & Stephens' (1987) midrank version and its p-value is
scipy's interpolation (floored at 0.001, capped at 0.25); Mann-Whitney uses the normal
approximation with tie and continuity corrections, as ``scipy.stats.mannwhitneyu(...,
method="asymptotic")``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import special, stats
from tqdm.auto import tqdm

from gpo_vae.data.contract import CONTROL_LABEL, GENE_ID_KEY, PERTURBATION_KEY
from gpo_vae.preprocessing.mad import mad_threshold, outside_threshold

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
    "by the same mean in QC-passing control cells.",
    "percent knockdown": "Fold knockdown minus 1: -1 means the target is fully knocked down, 0 unchanged.",
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

# Scholz & Stephens (1987) table 2 interpolation coefficients, as in scipy.stats.anderson_ksamp;
# with two samples (m = k - 1 = 1) the critical values are b0 + b1 + b2.
_AD_SIGNIFICANCE = np.array([0.25, 0.1, 0.05, 0.025, 0.01, 0.005, 0.001])
_AD_CRITICAL = (
    np.array([0.675, 1.281, 1.645, 1.96, 2.326, 2.573, 3.085])
    + np.array([-0.245, 0.25, 0.678, 1.149, 1.822, 2.364, 3.615])
    + np.array([-0.105, -0.305, -0.362, -0.391, -0.396, -0.345, -0.154])
)
_AD_LOG_P_FIT = np.polyfit(_AD_CRITICAL, np.log(_AD_SIGNIFICANCE), 2)
_GENE_SHIFT = np.uint64(32)


@dataclass(frozen=True)
class SortedReference:
    """A reference sample (e.g. control cells) prepared for :func:`two_sample_tests`.

    Attributes
    ----------
    keys
        Sorted ``gene << 32 | float32 bits`` keys of the non-zero values.
    nonzero
        Number of non-zero values per gene.
    n_cells
        Number of cells (rows) in the reference.
    """

    keys: np.ndarray
    nonzero: np.ndarray
    n_cells: int

    @property
    def n_genes(self) -> int:
        return int(self.nonzero.size)


@dataclass(frozen=True)
class TwoSampleTests:
    """Per-gene results of :func:`two_sample_tests` (NaN where a gene has one distinct value)."""

    ad_statistic: np.ndarray
    ad_pvalue: np.ndarray
    mw_statistic: np.ndarray
    mw_pvalue: np.ndarray


def _sorted_keys(values: sp.spmatrix | np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Sorted keys of the non-zero entries, non-zeros per gene, and the number of rows."""
    if sp.issparse(values):
        coo = sp.coo_matrix(values)
        genes, data = coo.col, coo.data
    else:
        dense = np.asarray(values)
        _, genes = np.nonzero(dense)
        data = dense[dense != 0]
    data = np.asarray(data, dtype=np.float32)
    if not np.all(np.isfinite(data)) or np.any(data < 0):
        raise ValueError("two-sample tests need finite, non-negative values (e.g. normalised counts)")
    keep = data != 0
    genes, data = genes[keep].astype(np.uint64), data[keep]
    keys = np.sort((genes << _GENE_SHIFT) | data.view(np.uint32).astype(np.uint64))
    n_genes = values.shape[1]
    return keys, np.bincount(genes.astype(np.intp), minlength=n_genes), values.shape[0]


def sort_reference(values: sp.spmatrix | np.ndarray) -> SortedReference:
    """Sort a reference sample (cells × genes, non-negative) once for many :func:`two_sample_tests`."""
    keys, nonzero, n_cells = _sorted_keys(values)
    return SortedReference(keys=keys, nonzero=nonzero, n_cells=n_cells)


def _ad_sigma_squared(n1: int, n2: int) -> float:
    """Variance of the 2-sample A²kN under the null (Scholz & Stephens eq. 4, as scipy)."""
    n, k = n1 + n2, 2
    h_sum = 1.0 / n1 + 1.0 / n2
    hs_cs = (1.0 / np.arange(n - 1, 1, -1)).cumsum()
    h = hs_cs[-1] + 1
    g = (hs_cs / np.arange(2, n)).sum()
    a = (4 * g - 6) * (k - 1) + (10 - 6 * g) * h_sum
    b = (2 * g - 4) * k**2 + 8 * h * k + (2 * g - 14 * h - 4) * h_sum - 8 * h + 4 * g - 6
    c = (6 * h + 2 * g - 2) * k**2 + (4 * h - 4 * g + 6) * k + (2 * h - 6) * h_sum + 4 * h
    d = (2 * h + 6) * k**2 - 4 * h * k
    return float((a * n**3 + b * n**2 + c * n + d) / ((n - 1.0) * (n - 2.0) * (n - 3.0)))


def anderson_pvalue(statistic: np.ndarray) -> np.ndarray:
    """scipy's 2-sample Anderson-Darling p-value: interpolated, floored at 0.001, capped at 0.25."""
    statistic = np.asarray(statistic, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        p = np.exp(np.polyval(_AD_LOG_P_FIT, statistic))
    p = np.where(statistic < _AD_CRITICAL.min(), _AD_SIGNIFICANCE.max(), p)
    p = np.where(statistic > _AD_CRITICAL.max(), _AD_SIGNIFICANCE.min(), p)
    return np.where(np.isnan(statistic), np.nan, p)


@numba.njit(nogil=True, cache=False)
def _merged_gene_sums(ref_keys, ref_start, s_keys, s_start, ref_zeros, s_zeros, n1, n2):  # pragma: no cover
    """Walk each gene's sorted reference and sample values together, one distinct value at a time.

    Returns per gene: the Anderson-Darling midrank sum (Scholz & Stephens eq. 7 without its
    constant factors), the sample's rank sum, the tie term sum(t³ - t) and the number of
    distinct values. Compiled because the walk is sequential: a numpy version needs a dozen
    full-size temporaries per perturbation and was ~15x slower.
    """
    n_genes = ref_start.size - 1
    n = n1 + n2
    ad = np.zeros(n_genes)
    rank_sum = np.zeros(n_genes)
    ties = np.zeros(n_genes)
    n_values = np.zeros(n_genes, dtype=np.int64)
    for g in range(n_genes):
        i, i_end = ref_start[g], ref_start[g + 1]
        j, j_end = s_start[g], s_start[g + 1]
        below, s_below = 0.0, 0.0
        t_all, t_sample = float(ref_zeros[g] + s_zeros[g]), float(s_zeros[g])
        while True:
            if t_all > 0:  # one group of tied values: t_all in total, t_sample from the sample
                if t_all < n:
                    b = below + t_all / 2.0
                    m = s_below + t_sample / 2.0
                    ad[g] += t_all * (n * m - b * n1) ** 2 / (b * (n - b) - n * t_all / 4.0)
                rank_sum[g] += t_sample * (below + (t_all + 1.0) / 2.0)
                ties[g] += t_all**3 - t_all
                n_values[g] += 1
                below += t_all
                s_below += t_sample
            if i >= i_end and j >= j_end:
                break
            value = ref_keys[i] if j >= j_end or (i < i_end and ref_keys[i] < s_keys[j]) else s_keys[j]
            t_ref = 0
            while i < i_end and ref_keys[i] == value:
                i += 1
                t_ref += 1
            t_s = 0
            while j < j_end and s_keys[j] == value:
                j += 1
                t_s += 1
            t_all, t_sample = float(t_ref + t_s), float(t_s)
    return ad, rank_sum, ties, n_values


def two_sample_tests(sample: sp.spmatrix | np.ndarray, reference: SortedReference) -> TwoSampleTests:
    """Anderson-Darling (midrank) and Mann-Whitney tests of every gene, ``sample`` vs ``reference``.

    Parameters
    ----------
    sample
        Cells × genes, non-negative (sparse or dense); same genes as the reference.
    reference
        From :func:`sort_reference`.

    Returns
    -------
    TwoSampleTests
        ``ad_statistic``/``ad_pvalue`` equal ``scipy.stats.anderson_ksamp([sample, reference],
        variant="midrank")``; ``mw_statistic`` is U of the sample and ``mw_pvalue`` the two-sided
        ``scipy.stats.mannwhitneyu(sample, reference, method="asymptotic")`` p-value. Genes with
        a single distinct value are NaN (scipy raises for them).
    """
    if sample.shape[1] != reference.n_genes:
        raise ValueError(f"sample has {sample.shape[1]} genes, the reference {reference.n_genes}")
    s_keys, s_nonzero, n1 = _sorted_keys(sample)
    n2 = reference.n_cells
    n = n1 + n2
    if n1 == 0 or n2 == 0 or n < 4:
        nan = np.full(reference.n_genes, np.nan)
        return TwoSampleTests(nan, nan.copy(), nan.copy(), nan.copy())
    ad_sum, rank_sum, ties, n_values = _merged_gene_sums(
        reference.keys,
        _starts(reference.nonzero),
        s_keys,
        _starts(s_nonzero),
        reference.n_cells - reference.nonzero,
        n1 - s_nonzero,
        n1,
        n2,
    )
    testable = n_values >= 2
    a2kn = ad_sum * (1.0 / n1 + 1.0 / n2) * (n - 1.0) / n**2
    ad_stat = np.where(testable, (a2kn - 1.0) / np.sqrt(_ad_sigma_squared(n1, n2)), np.nan)

    u1 = rank_sum - n1 * (n1 + 1.0) / 2.0
    u = np.maximum(u1, n1 * n2 - u1)
    scale = np.sqrt(n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0))))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (u - n1 * n2 / 2.0 - 0.5) / scale
    mw_p = np.clip(2.0 * special.ndtr(-z), 0.0, 1.0)
    return TwoSampleTests(
        ad_statistic=ad_stat,
        ad_pvalue=anderson_pvalue(ad_stat),
        mw_statistic=np.where(testable, u1, np.nan),
        mw_pvalue=np.where(testable, mw_p, np.nan),
    )


def _starts(nonzero: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(nonzero))).astype(np.int64)


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
    """Gene id per perturbation: obs["gene_id"] (Replogle), else var["gene_id"], else the symbol."""
    ids = {p: p for p in perturbations}
    if GENE_ID_KEY in adata.var.columns:
        var_ids = adata.var[GENE_ID_KEY].astype(str)
        ids.update({p: var_ids[p] for p in perturbations if p in var_ids.index})
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
        median ∓ ``qc_nmads`` MADs over all cells (:mod:`gpo_vae.preprocessing.mad`).
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
    counts = adata.X if sp.isspmatrix_csr(adata.X) else sp.csr_matrix(adata.X)
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    is_mt = np.asarray(adata.var_names.str.startswith("MT-"))
    mt_counts = counts @ is_mt.astype(counts.dtype)  # a mat-vec: no copy of the MT columns
    mt_fraction = np.asarray(mt_counts, dtype=np.float64).ravel() / np.maximum(totals, 1)
    low_umi = outside_threshold(totals, mad_threshold(totals, qc_nmads, "low"), "low")
    high_mt = outside_threshold(mt_fraction, mad_threshold(mt_fraction, qc_nmads, "high"), "high")
    passed = ~low_umi & ~high_mt & (totals > 0)

    is_control = labels == control_label
    controls = np.flatnonzero(is_control & passed)
    if controls.size < 2:
        raise ValueError(
            f"need at least 2 QC-passing control cells ({control_label!r}), found {controls.size}"
        )
    target_sum = float(np.median(totals[controls]))
    control_mean = np.asarray(
        normalise_rows(counts[controls], totals[controls], target_sum).mean(axis=0)
    ).ravel()
    chosen = np.random.default_rng(seed).choice(
        controls, min(max_control_cells, controls.size), replace=False
    )
    chosen.sort()
    reference = sort_reference(normalise_rows(counts[chosen], totals[chosen], target_sum))
    umi_mean, umi_std = totals[controls].mean(), totals[controls].std(ddof=1)

    perturbations, codes = np.unique(labels, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(codes, minlength=perturbations.size))))
    gene_index = pd.Series(np.arange(adata.n_vars), index=adata.var_names)
    gene_ids = _target_ids(adata, labels, perturbations)
    rows = []
    targets = [p for p in perturbations if p != control_label]
    for number, symbol in enumerate(tqdm(targets, desc="summary statistics", disable=not progress), 1):
        code = int(np.searchsorted(perturbations, symbol))
        cells = order[bounds[code] : bounds[code + 1]]
        kept = cells[passed[cells]]
        row = dict.fromkeys(REPLOGLE_COLUMNS, np.nan)
        row.update(
            {
                "genetic perturbation": _perturbation_label(number, symbol, gene_ids[symbol]),
                "mean UMI count": totals[cells].mean(),
                "number of cells (unfiltered)": cells.size,
                "number of cells (filtered)": kept.size,
                "core_control": False,
            }
        )
        if kept.size > 0:
            sample = normalise_rows(counts[kept], totals[kept], target_sum)
            tests = two_sample_tests(sample, reference)
            row["Number of DEGs (anderson-darling)"] = count_significant(tests.ad_pvalue, fdr)
            row["Number of DEGs (Mann-Whitney)"] = count_significant(tests.mw_pvalue, fdr)
            row["Z-scored number of UMIs"] = (totals[kept].mean() - umi_mean) / umi_std
            row["Fraction of mitochondrially encoded RNA"] = mt_fraction[kept].mean()
            if symbol in gene_index.index:
                j = int(gene_index[symbol])
                row["target expression"] = control_mean[j]
                if control_mean[j] > 0:
                    row["fold knockdown"] = sample[:, j].mean() / control_mean[j]
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
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp.xlsx")  # same directory: atomic rename
    try:
        with pd.ExcelWriter(tmp, engine="openpyxl") as writer:
            description.to_excel(writer, sheet_name="description", index=False)
            df[list(REPLOGLE_COLUMNS)].to_excel(writer, sheet_name=sheet_name, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
