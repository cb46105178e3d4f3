"""The shared Mann-Whitney core: value keys, sorted non-zeros, runs, rank terms and p-values vs scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from gpo_vae.stats.rank_tests import (
    key_genes,
    key_is_positive,
    locate,
    mann_whitney_pvalue,
    mann_whitney_sigma,
    rank_sum_terms,
    runs,
    sort_nonzeros,
    tie_term,
    value_keys,
)


def test_value_keys_order_like_gene_then_value_with_exact_ties():
    rng = np.random.default_rng(0)
    values = np.r_[rng.normal(size=200), 0.0, -0.0, 1.5, 1.5, -np.inf, np.inf].astype(np.float32)
    genes = rng.integers(0, 3, values.size)
    keys = value_keys(genes, values)
    order = np.argsort(keys, kind="stable")
    expected = np.lexsort((values, genes))
    assert np.array_equal(genes[order], genes[expected]) and np.array_equal(values[order], values[expected])
    assert np.array_equal(key_genes(keys), genes)
    assert np.array_equal(key_is_positive(keys), values > 0)
    same = value_keys(np.zeros(4, dtype=int), np.array([0.0, -0.0, 1.5, 1.5], dtype=np.float32))
    assert same[0] == same[1] and same[2] == same[3]  # -0.0 ties with 0.0


def test_sort_nonzeros_counts_and_offsets():
    genes = np.array([2, 0, 2, 2, 0, 1])
    values = np.array([3.0, 1.0, 0.0, -2.0, 1.0, 0.0], dtype=np.float32)
    sorted_ = sort_nonzeros(genes, values, n_cells=5, n_genes=4)
    assert sorted_.nonzero.tolist() == [2, 0, 2, 0] and sorted_.zeros.tolist() == [3, 5, 3, 5]
    assert sorted_.starts.tolist() == [0, 2, 2, 4, 4] and sorted_.n_genes == 4
    assert key_genes(sorted_.keys).tolist() == [0, 0, 2, 2]
    assert np.array_equal(sorted_.keys, np.sort(value_keys([0, 0, 2, 2], [1.0, 1.0, -2.0, 3.0])))


def test_runs_and_locate():
    segment = np.array([0, 0, 0, 1, 1, 2])
    values = np.array([1.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    starts, lengths = runs(segment, values)
    assert starts.tolist() == [0, 2, 3, 5] and lengths.tolist() == [2.0, 1.0, 2.0, 1.0]
    assert runs(np.zeros(0))[0].size == 0
    below, equal = locate(np.array([0.0, 1.0, 1.0, 3.0]), np.array([-1.0, 1.0, 2.0, 4.0]))
    assert below.tolist() == [0, 1, 3, 4] and equal.tolist() == [0, 2, 0, 0]


@pytest.mark.parametrize("slice_size", [1, 4, 7, 64])
def test_locate_by_slices_equals_searchsorted(monkeypatch, slice_size):
    """Sorted values are searched a slice of the reference at a time: the same positions and
    counts as one search, with runs of ties that cross the slices' edges, values below, between
    and above the reference, and unsorted values (searched whole)."""
    import gpo_vae.stats.rank_tests as rank_tests

    monkeypatch.setattr(rank_tests, "LOCATE_SLICE", slice_size)
    rng = np.random.default_rng(slice_size)
    reference = np.sort(np.r_[rng.integers(0, 40, 300), np.full(25, 17), [5] * 9]).astype(np.uint64)
    for values in (
        np.unique(rng.integers(0, 50, 60)).astype(np.uint64),
        np.arange(0, 45, dtype=np.uint64),
        np.array([17, 17, 17], dtype=np.uint64),
        rng.integers(0, 50, 30).astype(np.uint64),  # not sorted
        np.array([100], dtype=np.uint64),
    ):
        below, equal = locate(reference, values)
        expected = np.searchsorted(reference, values, "left")
        assert np.array_equal(below, expected)
        assert np.array_equal(equal, np.searchsorted(reference, values, "right") - expected)


def test_rank_terms_and_pvalue_equal_scipy_per_group():
    rng = np.random.default_rng(1)
    reference = np.sort(rng.poisson(2.0, 90).astype(np.float64))
    groups = [rng.poisson(lam, n).astype(np.float64) for lam, n in [(2.0, 30), (3.5, 12), (1.0, 50)]]
    segment = np.repeat(np.arange(len(groups)), [g.size for g in groups])
    values = np.concatenate([np.sort(g) for g in groups])
    starts, counts = runs(segment, values)
    below, equal = locate(reference, values[starts])
    u, added = rank_sum_terms(below, equal, counts, segment[starts], len(groups))
    _, ref_counts = runs(reference)
    ties = tie_term(ref_counts).sum() + added
    sizes = np.array([g.size for g in groups], dtype=np.float64)
    p = mann_whitney_pvalue(u, sizes, reference.size, ties)
    for k, group in enumerate(groups):
        expected = stats.mannwhitneyu(group, reference, method="asymptotic")
        assert u[k] == expected.statistic
        assert p[k] == pytest.approx(expected.pvalue, rel=1e-12)
        pooled = np.unique(np.r_[group, reference], return_counts=True)[1].astype(np.float64)
        assert ties[k] == tie_term(pooled).sum()
    per_value_u, per_value_ties = rank_sum_terms(below, equal, counts)
    assert np.bincount(segment[starts], weights=per_value_u).tolist() == u.tolist()
    assert per_value_ties.shape == counts.shape


def test_sigma_without_ties_and_all_tied():
    assert mann_whitney_sigma(4, 6) == pytest.approx(np.sqrt(4 * 6 * 11 / 12))
    n = 10.0
    assert mann_whitney_sigma(4, 6, tie_term(n)) == 0.0
    assert mann_whitney_pvalue(np.array([12.0]), 4, 6, tie_term(n))[0] == 1.0
