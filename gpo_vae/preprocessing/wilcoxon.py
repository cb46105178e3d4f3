"""The Wilcoxon rank-sum test of every perturbation's cells against the control cells, gene by gene
(design §4), in memory or reading an on-disk count matrix a block of genes at a time.

It gives the same statistic as
``scanpy.tl.rank_genes_groups(method="wilcoxon", reference=control, tie_correct=True)`` but does
not re-rank the pooled cells of every group: each gene's control values are sorted once, and a
group's rank sum follows from counting, with ``searchsorted``, the control values below and equal
to each of its values (the shared core of :mod:`gpo_vae.stats.rank_tests`). Only stored
(non-zero) values are touched; zeros are counted, never materialised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import special
from tqdm.auto import tqdm

from gpo_vae.data.on_disk import stored_values
from gpo_vae.preprocessing.normalize import (
    DEFAULT_TARGET_SUM,
    as_csr,
    library_size,
    scale_rows,
)
from gpo_vae.runtime import ordered_map
from gpo_vae.stats.rank_tests import (
    key_genes,
    key_is_positive,
    locate,
    mann_whitney_sigma,
    rank_sum_terms,
    runs,
    sort_nonzeros,
    tie_term,
    value_keys,
)

logger = logging.getLogger(__name__)

DE_COLUMNS = ("group", "gene", "rank", "score", "logfoldchange", "pval", "pval_adj")


def _nonzero_entries(X: sp.csr_matrix, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the stored non-zeros of rows ``start:stop`` (views when possible)."""
    lo, hi = X.indptr[start], X.indptr[stop]
    cols, vals = X.indices[lo:hi], X.data[lo:hi]
    keep = vals != 0
    if not keep.all():
        cols, vals = cols[keep], vals[keep]
    return cols, vals


class _Reference:
    """One gene block of the reference cells, summarised for repeated Mann-Whitney tests."""

    def __init__(self, Xb: sp.csr_matrix, n_ref: int) -> None:
        n_genes = Xb.shape[1]
        cols, vals = _nonzero_entries(Xb, 0, n_ref)
        self.n = n_ref
        self.sorted = sort_nonzeros(cols, vals, n_ref, n_genes)
        self.n_zero = self.sorted.zeros.astype(np.float64)
        self.n_neg = np.bincount(cols[vals < 0], minlength=n_genes).astype(np.float64)
        self.mean = np.bincount(cols, weights=vals.astype(np.float64), minlength=n_genes) / n_ref
        starts, counts = runs(self.sorted.keys)
        self.tie_sum = np.bincount(
            key_genes(self.sorted.keys[starts]), weights=tie_term(counts), minlength=n_genes
        ) + tie_term(self.n_zero)

    def test(
        self, Xb: sp.csr_matrix, start: int, stop: int, tie_correct: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """z-scores (scanpy's convention) and means of the group stored in rows ``start:stop``."""
        n_genes = Xb.shape[1]
        n_grp = stop - start
        cols, vals = _nonzero_entries(Xb, start, stop)
        mean = np.bincount(cols, weights=vals.astype(np.float64), minlength=n_genes) / n_grp

        keys = np.sort(value_keys(cols, vals))
        starts, b = runs(keys)
        distinct = keys[starts]
        gene = key_genes(distinct)
        left, a = locate(self.sorted.keys, distinct)
        # locate counts from the block's first key: make it per gene, and put the zeros below x > 0
        below = (left - self.sorted.starts[gene]).astype(np.float64)
        below += np.where(key_is_positive(distinct), self.n_zero[gene], 0.0)
        u_stat, added = rank_sum_terms(below, a, b, gene, n_genes)
        # the zeros are one more run per gene, n_neg reference values below it
        b_zero = n_grp - np.bincount(gene, weights=b, minlength=n_genes)
        u_zero, added_zero = rank_sum_terms(self.n_neg, self.n_zero, b_zero)
        u_stat += u_zero

        ties = self.tie_sum + added + added_zero if tie_correct else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (u_stat - n_grp * self.n / 2.0) / mann_whitney_sigma(n_grp, self.n, ties)
        z[~np.isfinite(z)] = 0.0  # every value tied: no evidence (scanpy sets these to 0 too)
        return z, mean


def benjamini_hochberg(pvals: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values along the last axis (as statsmodels' ``fdr_bh``)."""
    p = np.atleast_2d(np.asarray(pvals, dtype=np.float64))
    n = p.shape[1]
    order = np.argsort(p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1) * n / np.arange(1, n + 1)
    ranked = np.minimum.accumulate(ranked[:, ::-1], axis=1)[:, ::-1]
    adjusted = np.empty_like(p)
    np.put_along_axis(adjusted, order, np.minimum(ranked, 1.0), axis=1)
    return adjusted.reshape(np.shape(pvals))


def rank_genes_vs_reference(
    X_log: sp.spmatrix | sp.sparray | np.ndarray,
    groups: Sequence | np.ndarray | pd.Series,
    reference_label: str,
    genes: Sequence[str] | pd.Index,
    fit_mask: np.ndarray | None = None,
    *,
    gene_mask: np.ndarray | None = None,
    tie_correct: bool = True,
    block_genes: int = 2048,
    show_progress: bool = False,
    table: bool = True,
) -> pd.DataFrame | WilcoxonScores:
    """Wilcoxon rank-sum test of every group vs the reference cells, gene by gene.

    Parameters
    ----------
    X_log
        Cells × genes log1p-normalised expression (CSR preferred). Values are compared in float32.
    groups
        Group label of each cell (``reference_label`` for controls).
    genes
        Names of the columns of ``X_log``.
    fit_mask
        Cells to use (e.g. training cells); others are ignored entirely. Default: all cells.
    gene_mask
        Test only these genes (e.g. HVGs); BH adjustment is over the tested genes.
    tie_correct
        Tie-corrected variance (scanpy ``tie_correct=True``); the reference code used ``False``.
    block_genes
        Genes processed at once: bounds memory to about the stored values of that many columns.
    table
        False: the groups × genes arrays (:class:`WilcoxonScores`) instead of the long table.

    Returns
    -------
    Long table with columns ``group``, ``gene``, ``rank`` (0 = highest score in the group),
    ``score`` (z of the normal approximation, two-sided, no continuity correction),
    ``logfoldchange`` (``log2((expm1(mean_group)+1e-9) / (expm1(mean_ref)+1e-9))``, as scanpy),
    ``pval`` and ``pval_adj`` (BH within each group), sorted by group then rank.
    """
    X = as_csr(X_log)
    genes = pd.Index(genes).astype(str)
    if len(genes) != X.shape[1]:
        raise ValueError(f"{len(genes)} gene names for a matrix with {X.shape[1]} columns")
    if X.nnz and np.isnan(X.data).any():
        raise ValueError("X_log holds NaN values; the rank test needs finite expression values")
    order, bounds, group_names = _grouped_rows(groups, X.shape[0], reference_label, fit_mask)
    tested = np.arange(X.shape[1]) if gene_mask is None else np.flatnonzero(np.asarray(gene_mask, dtype=bool))
    if len(tested) == 0:
        raise ValueError("gene_mask selects no gene to test")
    X_fit = X[order]
    if gene_mask is not None:
        X_fit = X_fit[:, tested]
    scores = _rank_gene_blocks(
        lambda left, right: as_csr(X_fit[:, left:right]),
        bounds,
        genes[tested],
        group_names,
        tie_correct,
        block_genes,
        show_progress,
    )
    return scores.table() if table else scores


def _grouped_rows(
    groups: Sequence | np.ndarray | pd.Series, n_rows: int, reference_label: str, fit_mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(rows, bounds, group names): the fitted rows grouped contiguously, reference first, so a
    group is a slice ``bounds[i + 1]:bounds[i + 2]`` of each gene block; groups without a fitted
    cell are left out."""
    labels = pd.Categorical(np.asarray(groups).astype(str))
    if len(labels) != n_rows:
        raise ValueError(f"{len(labels)} group labels for a matrix with {n_rows} rows")
    fit = np.ones(n_rows, dtype=bool) if fit_mask is None else np.asarray(fit_mask, dtype=bool)
    codes = np.where(fit, labels.codes, -1)
    categories = list(labels.categories)
    if reference_label not in categories or not (codes == categories.index(reference_label)).any():
        raise ValueError(
            f"no cell of the reference {reference_label!r} among the {int(fit.sum())} fitted cells"
        )
    ref_code = categories.index(reference_label)
    sizes = np.bincount(codes[codes >= 0], minlength=len(categories))
    group_codes = [c for c in range(len(categories)) if c != ref_code and sizes[c] > 0]
    if not group_codes:
        raise ValueError("no perturbed cell among the fitted cells: nothing to compare with the reference")
    if len(group_codes) < len(categories) - 1:
        logger.info(
            "%d groups have no fitted cell and are not tested", len(categories) - 1 - len(group_codes)
        )
    order = [np.flatnonzero(codes == ref_code)] + [np.flatnonzero(codes == c) for c in group_codes]
    bounds = np.cumsum([0] + [len(rows) for rows in order])
    return np.concatenate(order), bounds, [categories[c] for c in group_codes]


#: Stored values in one gene block of the on-disk Wilcoxon test: at RPE1 size (101,575 cells, about
#: 300 M values in 4 blocks) the test peaked at 2.7 GB; a larger screen takes more blocks, not
#: more memory.
DE_BLOCK_VALUES = 75_000_000


def rank_genes_on_disk(
    counts: Any,
    groups: Sequence | np.ndarray | pd.Series,
    reference_label: str,
    genes: Sequence[str] | pd.Index,
    target_sum: float = DEFAULT_TARGET_SUM,
    *,
    tie_correct: bool = True,
    passes: int = 4,
    show_progress: bool = False,
    block_values: int = DE_BLOCK_VALUES,
    table: bool = True,
) -> pd.DataFrame | WilcoxonScores:
    """:func:`rank_genes_vs_reference` of ``normalize_log1p(counts)``, reading an on-disk count
    matrix once per block of genes, never every gene of every cell at once: at least ``passes``
    blocks, more when the matrix stores more than ``passes × block_values`` values, so that a
    block holds about ``block_values`` values whatever the number of cells.

    The values tested are those of :func:`~gpo_vae.preprocessing.normalize.normalize_log1p`
    (library sizes over all genes, float32), so the table equals the in-memory one (and each
    gene's test reads that gene's values alone: the blocks do not change the table).
    ``table`` False: the groups × genes arrays (:class:`WilcoxonScores`) instead.
    """
    genes = pd.Index(genes).astype(str)
    if len(genes) != counts.shape[1]:
        raise ValueError(f"{len(genes)} gene names for a matrix with {counts.shape[1]} columns")
    passes = max(passes, -(-stored_values(counts) // max(block_values, 1)))
    order, bounds, group_names = _grouped_rows(groups, counts.shape[0], reference_label, None)
    block_genes = max(1, -(-len(genes) // max(passes, 1)))
    factor, per_block = _library_and_block_values(counts, block_genes)
    factor = np.divide(target_sum, factor, out=np.zeros_like(factor), where=factor > 0)
    position = np.empty_like(order)
    position[order] = np.arange(order.size)

    def column_block(left: int, right: int) -> sp.csr_matrix:
        # each block of cells is scaled and written straight to its rows' grouped places: the
        # gene block is held once, not as blocks, then stacked, then reordered (three copies)
        indptr = np.zeros(order.size + 1, dtype=np.int64)
        np.cumsum(per_block[order, left // block_genes], out=indptr[1:])
        data = np.empty(indptr[-1], dtype=np.float32)
        indices = np.empty(indptr[-1], dtype=np.int32)
        for start, stop, block in counts.row_blocks():
            part = scale_rows(block[:, left:right], factor[start:stop])
            np.log1p(part.data, out=part.data)
            stored = int(part.indptr[-1])
            target = np.repeat(indptr[position[start:stop]] - part.indptr[:-1], np.diff(part.indptr))
            target += np.arange(stored)
            data[target] = part.data[:stored]
            indices[target] = part.indices[:stored]
        return sp.csr_matrix((data, indices, indptr), shape=(order.size, right - left))

    scores = _rank_gene_blocks(
        column_block, bounds, genes, group_names, tie_correct, block_genes, show_progress
    )
    return scores.table() if table else scores


@dataclass(frozen=True)
class WilcoxonScores:
    """The Wilcoxon test's groups × tested genes results before they become a long table: the
    z-scores, the groups' and the reference's mean log expression, the tested genes' and the
    groups' names."""

    scores: np.ndarray
    mean_group: np.ndarray
    mean_reference: np.ndarray
    genes: pd.Index
    groups: Sequence[str]

    def _columns(self, rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logfoldchange, pval, pval_adj) of these groups."""
        scores = self.scores[rows]
        pvals = 2.0 * special.ndtr(-np.abs(scores))
        with np.errstate(invalid="ignore", divide="ignore"):  # NaN only for non-log1p input
            lfc = np.log2(
                (np.expm1(self.mean_group[rows]) + 1e-9) / (np.expm1(self.mean_reference)[None, :] + 1e-9)
            )
        return lfc, pvals, benjamini_hochberg(pvals)

    def table(self) -> pd.DataFrame:
        """The long table of :func:`rank_genes_vs_reference`."""
        n_groups, n_tested = self.scores.shape
        lfc, pvals, pvals_adj = self._columns(slice(None))
        rank_order = np.argsort(-self.scores, axis=1, kind="stable")
        take = lambda a: np.take_along_axis(a, rank_order, axis=1).ravel()  # noqa: E731
        group_names = np.asarray(self.groups, dtype=object)
        return pd.DataFrame(
            {
                "group": pd.Categorical(np.repeat(group_names, n_tested), categories=list(group_names)),
                "gene": self.genes.to_numpy()[rank_order].ravel(),
                "rank": np.tile(np.arange(n_tested), n_groups),
                "score": take(self.scores),
                "logfoldchange": take(lfc),
                "pval": take(pvals),
                "pval_adj": take(pvals_adj),
            }
        )

    def fc3_picks(self, lfc: float = 3.0, pval_adj: float = 0.01, groups_at_once: int = 64) -> pd.Series:
        """:func:`~gpo_vae.preprocessing.deg.fc3_genes`' picks without the long table (test: the
        same picks), a few groups' fold changes and adjusted p-values at a time: the table holds
        seven values per group and gene, about 0.6 GB at 1,000 groups × 8,700 genes."""
        picks: dict[str, str] = {}
        for start in range(0, self.scores.shape[0], groups_at_once):
            rows = slice(start, start + groups_at_once)
            fold, _, adjusted = self._columns(rows)
            hit = (np.abs(fold) > lfc) & (adjusted < pval_adj)
            # the best score among the hits; argmax takes the first of equal scores, as the
            # table's stable ranking does
            best = np.argmax(np.where(hit, self.scores[rows], -np.inf), axis=1)
            for i in np.flatnonzero(hit.any(axis=1)):
                picks[str(self.groups[start + i])] = str(self.genes[best[i]])
        ordered = sorted(picks)
        return pd.Series(
            [picks[g] for g in ordered], index=pd.Index(ordered, name="group"), name="fc3_gene", dtype=object
        )


def _library_and_block_values(counts: Any, block_genes: int) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's library size (:func:`library_size`) and its stored values in each block of
    ``block_genes`` genes (cells × blocks), in one pass over an on-disk matrix."""
    n_blocks = -(-counts.shape[1] // block_genes)
    sizes, per_block = [], []
    for _, _, block in counts.row_blocks():
        sizes.append(library_size(block))
        rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
        keys = rows * n_blocks + block.indices[: block.indptr[-1]] // block_genes
        per_block.append(np.bincount(keys, minlength=block.shape[0] * n_blocks).reshape(-1, n_blocks))
    if not sizes:
        return np.zeros(0), np.zeros((0, n_blocks), dtype=np.int64)
    return np.concatenate(sizes), np.concatenate(per_block)


def _rank_gene_blocks(
    column_block: Callable[[int, int], sp.csr_matrix],
    bounds: np.ndarray,
    genes: pd.Index,
    group_names: Sequence[str],
    tie_correct: bool,
    block_genes: int,
    show_progress: bool,
) -> WilcoxonScores:
    """The Wilcoxon test of :func:`rank_genes_vs_reference` from blocks of tested genes.

    ``column_block(left, right)`` gives tested genes ``left:right`` of every fitted cell, rows
    grouped (reference first, then each group) at ``bounds``.
    """
    n_tested, n_groups = len(genes), len(group_names)
    scores = np.empty((n_groups, n_tested))
    mean_grp = np.empty((n_groups, n_tested))
    mean_ref = np.empty(n_tested)
    blocks = range(0, n_tested, block_genes)
    for left in tqdm(blocks, desc="wilcoxon gene blocks", disable=not show_progress):
        right = min(left + block_genes, n_tested)
        Xb = column_block(left, right)
        reference = _Reference(Xb, int(bounds[1]))
        mean_ref[left:right] = reference.mean
        # each group's test reads the block and the reference only; its sorts and searches
        # release the GIL, so the groups run on every core
        tests = ordered_map(
            lambda i, Xb=Xb, reference=reference: reference.test(
                Xb, int(bounds[i + 1]), int(bounds[i + 2]), tie_correct
            ),
            range(n_groups),
        )
        for i, (z, mean) in enumerate(tests):
            scores[i, left:right], mean_grp[i, left:right] = z, mean
    return WilcoxonScores(scores, mean_grp, mean_ref, genes, list(group_names))
