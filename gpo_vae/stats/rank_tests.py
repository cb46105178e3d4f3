"""The Mann-Whitney core of the project's vectorised two-sample tests against a sorted reference.

Three callers test samples against a reference whose values are sorted once:
:mod:`gpo_vae.stats.anderson_darling` (every gene of one perturbation vs control cells, with the
Anderson-Darling statistic), :func:`gpo_vae.preprocessing.wilcoxon.rank_genes_vs_reference` (many
groups vs controls over a block of genes, with fold changes and BH) and
:mod:`gpo_vae.grn.two_sample` (many groups vs controls in one gene, with the Wasserstein
distance). What they share lives here:

- :func:`sort_nonzeros`: the stored non-zero values of a cells × genes sample sorted gene by
  gene in one ``np.sort`` of uint64 keys (gene in the high word, an order-preserving image of
  the float32 value in the low word): ties are exact, zeros are only counted.
- :func:`runs`, :func:`locate`, :func:`rank_sum_terms`: the reference values below and equal to
  each distinct sample value (``searchsorted``) give the sample's U and what it adds to the
  tie term, without ranking the pooled values again for every sample.
- :func:`tie_term`, :func:`mann_whitney_sigma`, :func:`mann_whitney_pvalue`: the normal
  approximation with tie and continuity corrections, as ``scipy.stats.mannwhitneyu(...,
  method="asymptotic")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import special

_SIGN_BIT = np.uint32(0x80000000)  # also the image of +0.0 under the value bits below
_GENE_SHIFT = np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)


def value_keys(genes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """uint64 keys that sort ``(gene, value)`` pairs: gene in the high word, value in the low word.

    The low word is the IEEE bit pattern of the float32 value with negatives flipped, which
    orders like the value; equal float32 values give equal keys, so ties need no tolerance.
    """
    f = np.asarray(values, dtype=np.float32) + np.float32(0.0)  # turns -0.0 into +0.0
    u = f.view(np.uint32)
    bits = np.where(u >= _SIGN_BIT, ~u, u | _SIGN_BIT)
    return (np.asarray(genes).astype(np.uint64) << _GENE_SHIFT) | bits.astype(np.uint64)


def key_genes(keys: np.ndarray) -> np.ndarray:
    """The gene (column) of each :func:`value_keys` key."""
    return (keys >> _GENE_SHIFT).astype(np.intp)


def key_is_positive(keys: np.ndarray) -> np.ndarray:
    """Whether each :func:`value_keys` key holds a value above zero."""
    return (keys & _LOW32) > np.uint64(_SIGN_BIT)


@dataclass(frozen=True)
class SortedNonzeros:
    """The stored non-zero values of a cells × genes sample, sorted gene by gene.

    Attributes
    ----------
    keys
        Sorted :func:`value_keys` of the non-zero values.
    nonzero
        Number of non-zero values per gene.
    n_cells
        Number of cells (rows) of the sample.
    """

    keys: np.ndarray
    nonzero: np.ndarray
    n_cells: int

    @property
    def n_genes(self) -> int:
        return int(self.nonzero.size)

    @property
    def zeros(self) -> np.ndarray:
        """Number of zeros per gene."""
        return self.n_cells - self.nonzero

    @cached_property
    def starts(self) -> np.ndarray:
        """Where each gene's keys begin in ``keys`` (``n_genes + 1`` offsets, int64)."""
        return np.concatenate(([0], np.cumsum(self.nonzero))).astype(np.int64)


def sort_nonzeros(genes: np.ndarray, values: np.ndarray, n_cells: int, n_genes: int) -> SortedNonzeros:
    """Sort the entries ``(genes[i], values[i])`` of a ``n_cells × n_genes`` sample; zeros are dropped."""
    genes, values = np.asarray(genes), np.asarray(values)
    keep = values != 0
    if not keep.all():
        genes, values = genes[keep], values[keep]
    nonzero = np.bincount(genes.astype(np.intp), minlength=n_genes)
    return SortedNonzeros(keys=np.sort(value_keys(genes, values)), nonzero=nonzero, n_cells=int(n_cells))


def runs(*sorted_columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length (float64) of each run of equal rows in lexicographically sorted columns."""
    size = sorted_columns[0].size
    if size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float64)
    new = np.zeros(size, dtype=bool)
    new[0] = True
    for column in sorted_columns:
        new[1:] |= column[1:] != column[:-1]
    starts = np.flatnonzero(new)
    return starts, np.diff(np.append(starts, size)).astype(np.float64)


#: Reference keys searched at once by :func:`locate` when the values come sorted: a slice this
#: size (256 KB of uint64) stays in the CPU's cache, where a search over all of a large reference
#: misses it at nearly every step (the DE test's reference holds about 10 M keys a gene block).
LOCATE_SLICE = 1 << 15


def locate(sorted_reference: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each value in ``sorted_reference`` (= reference values below it) and how many equal it.

    ``searchsorted``'s answers, found faster: the values equal to none of the reference (most, in
    continuous data) need one search, not two; and sorted ``values`` (the DE test's distinct keys)
    are searched a slice of the reference at a time (:data:`LOCATE_SLICE`).
    """
    values = np.asarray(values)
    left = _search(sorted_reference, values, "left")
    tied = np.flatnonzero(left < sorted_reference.size)
    tied = tied[sorted_reference[left[tied]] == values[tied]]
    equal = np.zeros(values.size, dtype=left.dtype)
    equal[tied] = _search(sorted_reference, values[tied], "right") - left[tied]
    return left, equal


def _search(sorted_reference: np.ndarray, values: np.ndarray, side: str) -> np.ndarray:
    """``np.searchsorted(sorted_reference, values, side)``; sorted values a slice at a time."""
    n = sorted_reference.size
    if n <= 2 * LOCATE_SLICE or values.size < 2 or (values[1:] < values[:-1]).any():
        return np.searchsorted(sorted_reference, values, side=side)
    starts = np.arange(0, n, LOCATE_SLICE)
    ends = np.minimum(starts + LOCATE_SLICE, n)
    # slice j answers side="left" for values in (ref[start_j − 1], ref[end_j − 1]] and
    # side="right" for values in [ref[start_j], ref[end_j]): all before it is below (or equal
    # to) them, all after it above
    if side == "left":
        until = np.searchsorted(values, sorted_reference[ends - 1], side="right")
    else:
        until = np.append(np.searchsorted(values, sorted_reference[ends[:-1]], side="left"), 0)
    until[-1] = values.size
    found = np.empty(values.size, dtype=np.intp)
    done = 0
    for start, end, last in zip(starts.tolist(), ends.tolist(), until.tolist(), strict=True):
        if last > done:
            found[done:last] = start + np.searchsorted(sorted_reference[start:end], values[done:last], side)
            done = last
    return found


def tie_term(t: np.ndarray) -> np.ndarray:
    """``t³ − t``: a run of ``t`` tied values' share of the tie correction."""
    return t**3 - t


def rank_sum_terms(
    below: np.ndarray,
    equal: np.ndarray,
    counts: np.ndarray,
    bins: np.ndarray | None = None,
    n_bins: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """U of a sample against a reference, and how much the sample adds to the pooled tie term.

    ``counts[i]`` sample values equal one distinct value with ``below[i]`` reference values below
    it and ``equal[i]`` equal to it: they add ``counts · (below + equal / 2)`` to the sample's U
    (a tie counts one half) and turn a run of ``equal`` tied values into one of ``equal + counts``.
    Per distinct value, or summed per bin (``np.bincount(bins, minlength=n_bins)``) when ``bins``
    are given.
    """
    equal = np.asarray(equal, dtype=np.float64)
    u = counts * (below + 0.5 * equal)
    ties = tie_term(equal + counts) - tie_term(equal)
    if bins is None:
        return u, ties
    return (
        np.bincount(bins, weights=u, minlength=n_bins),
        np.bincount(bins, weights=ties, minlength=n_bins),
    )


def mann_whitney_sigma(
    n1: float | np.ndarray, n2: float | np.ndarray, tie_sum: float | np.ndarray = 0.0
) -> np.ndarray:
    """Standard deviation of U under the null, tie-corrected by ``tie_sum`` = Σ(t³ − t) over pooled runs."""
    n = n1 + n2
    return np.sqrt(n1 * n2 / 12.0 * ((n + 1.0) - tie_sum / (n * (n - 1.0))))


def mann_whitney_pvalue(
    u: np.ndarray, n1: float | np.ndarray, n2: float | np.ndarray, tie_sum: float | np.ndarray = 0.0
) -> np.ndarray:
    """Two-sided p of U (of either sample): normal approximation, tie and continuity corrected.

    Equals ``scipy.stats.mannwhitneyu(x, y, method="asymptotic").pvalue`` for samples of sizes
    ``n1``, ``n2``; 1 where every pooled value is tied (σ = 0).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.abs(u - n1 * n2 / 2.0) - 0.5) / mann_whitney_sigma(n1, n2, tie_sum)
    return np.clip(2.0 * special.ndtr(-z), 0.0, 1.0)
