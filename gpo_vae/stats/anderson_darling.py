"""Anderson-Darling and Mann-Whitney tests of every gene of a sample against a sorted reference.

Used by :func:`gpo_vae.data.summary_stats.compute_summary_stats` (one perturbation's cells vs a
control subsample). The tests cover every gene in one pass and never densify: the reference's
non-zero values are sorted once (:func:`sort_reference`, :func:`~gpo_vae.stats.rank_tests.sort_nonzeros`),
each sample's the same way, and a compiled (numba) walk merges the two gene by gene, one
distinct value at a time; zeros, the bulk of the data, form one counted group. The cost is
linear in the non-zeros. A merge rather than ``searchsorted`` because the Anderson-Darling sum
runs over every distinct pooled value, those of the reference alone included.

The Anderson-Darling statistic is Scholz & Stephens' (1987) midrank version and its p-value is
scipy's interpolation (floored at 0.001, capped at 0.25); Mann-Whitney uses the normal
approximation with tie and continuity corrections
(:func:`~gpo_vae.stats.rank_tests.mann_whitney_pvalue`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

from gpo_vae.stats.rank_tests import SortedNonzeros, mann_whitney_pvalue, sort_nonzeros

# Scholz & Stephens (1987) table 2 interpolation coefficients, as in scipy.stats.anderson_ksamp;
# with two samples (m = k - 1 = 1) the critical values are b0 + b1 + b2.
_AD_SIGNIFICANCE = np.array([0.25, 0.1, 0.05, 0.025, 0.01, 0.005, 0.001])
_AD_CRITICAL = (
    np.array([0.675, 1.281, 1.645, 1.96, 2.326, 2.573, 3.085])
    + np.array([-0.245, 0.25, 0.678, 1.149, 1.822, 2.364, 3.615])
    + np.array([-0.105, -0.305, -0.362, -0.391, -0.396, -0.345, -0.154])
)
_AD_LOG_P_FIT = np.polyfit(_AD_CRITICAL, np.log(_AD_SIGNIFICANCE), 2)


@dataclass(frozen=True)
class TwoSampleTests:
    """Per-gene results of :func:`two_sample_tests` (NaN where a gene has one distinct value)."""

    ad_statistic: np.ndarray
    ad_pvalue: np.ndarray
    mw_statistic: np.ndarray
    mw_pvalue: np.ndarray


def _sort_cells(values: sp.spmatrix | np.ndarray) -> SortedNonzeros:
    """The non-zero values of a cells × genes matrix sorted gene by gene, after checking them."""
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
    return sort_nonzeros(genes, data, values.shape[0], values.shape[1])


def sort_reference(values: sp.spmatrix | np.ndarray) -> SortedNonzeros:
    """Sort a reference sample (cells × genes, non-negative) once for many :func:`two_sample_tests`."""
    return _sort_cells(values)


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


def two_sample_tests(sample: sp.spmatrix | np.ndarray, reference: SortedNonzeros) -> TwoSampleTests:
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
    own = _sort_cells(sample)
    n1, n2 = own.n_cells, reference.n_cells
    n = n1 + n2
    if n1 == 0 or n2 == 0 or n < 4:
        nan = np.full(reference.n_genes, np.nan)
        return TwoSampleTests(nan, nan.copy(), nan.copy(), nan.copy())
    ad_sum, rank_sum, ties, n_values = _merged_gene_sums(
        reference.keys, reference.starts, own.keys, own.starts, reference.zeros, own.zeros, n1, n2
    )
    testable = n_values >= 2
    a2kn = ad_sum * (1.0 / n1 + 1.0 / n2) * (n - 1.0) / n**2
    ad_stat = np.where(testable, (a2kn - 1.0) / np.sqrt(_ad_sigma_squared(n1, n2)), np.nan)
    u1 = rank_sum - n1 * (n1 + 1.0) / 2.0
    return TwoSampleTests(
        ad_statistic=ad_stat,
        ad_pvalue=anderson_pvalue(ad_stat),
        mw_statistic=np.where(testable, u1, np.nan),
        mw_pvalue=np.where(testable, mann_whitney_pvalue(u1, n1, n2, ties), np.nan),
    )
