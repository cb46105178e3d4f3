"""Derived inputs (design §5): ΔX, counterfactual cells and medians, normalisation statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gpo_vae.preprocessing.derived import (
    counterfactual_indices,
    counterfactual_matrix,
    counterfactual_median,
    counterfactual_table,
    delta_x,
    log1p_normalised_columns,
    normalisation_stats,
)


def _log1p_norm(counts: np.ndarray) -> np.ndarray:
    return np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)


@pytest.fixture
def pair_counts() -> sp.csr_matrix:
    """40 cells × 12 genes of Poisson counts (every cell has counts)."""
    rng = np.random.default_rng(21)
    counts = rng.poisson(1.5, size=(40, 12)).astype(np.float32)
    counts[:, 0] += 1
    return sp.csr_matrix(counts)


@pytest.fixture
def pair_cf_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Perturbation, split and QC-fail flags of 400 cells; group "lonely" has one QC-fail cell."""
    rng = np.random.default_rng(8)
    labels = rng.choice(["non-targeting", "A", "B", "C"], size=400, p=[0.4, 0.3, 0.2, 0.1])
    labels[:5] = "lonely"
    splits = rng.choice(["train", "val", "test"], size=400, p=[0.6, 0.2, 0.2])
    splits[:5] = "train"
    qc_fail = rng.random(400) < 0.3
    qc_fail[:5] = [True, False, False, False, False]
    return labels, splits, qc_fail


def test_log1p_normalised_columns_matches_dense_computation(pair_counts: sp.csr_matrix) -> None:
    out = log1p_normalised_columns(pair_counts, [3, -1, 0])
    expected = _log1p_norm(pair_counts.toarray())[:, [3, 0, 0]]
    expected[:, 1] = 0.0
    assert sp.isspmatrix_csr(out) and out.dtype == np.float32
    np.testing.assert_allclose(out.toarray(), expected, rtol=1e-6)


def test_delta_x_equals_hand_computation() -> None:
    counts = np.array([[1, 0, 3, 6], [4, 2, 0, 4], [0, 5, 5, 0]], dtype=np.float32)
    partner = np.array([0, 0, 1])  # cell 0 is a control paired with itself
    node_gene_index = np.array([2, -1, 0])  # node 1's gene is not measured
    out = delta_x(sp.csr_matrix(counts), partner, node_gene_index)
    lg = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    expected = np.zeros((3, 3), dtype=np.float32)
    expected[1] = [abs(lg[1, 2] - lg[0, 2]), 0.0, abs(lg[1, 0] - lg[0, 0])]
    expected[2] = [abs(lg[2, 2] - lg[1, 2]), 0.0, abs(lg[2, 0] - lg[1, 0])]
    assert out.dtype == np.float32 and out.shape == (3, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert np.all(out[0] == 0) and np.all(out[:, 1] == 0)


def test_delta_x_chunks_agree_and_counts_are_required(pair_counts: sp.csr_matrix) -> None:
    partner = np.random.default_rng(0).integers(0, 40, size=40)
    nodes = [5, 0, -1, 11]
    np.testing.assert_array_equal(
        delta_x(pair_counts, partner, nodes, chunk_size=7), delta_x(pair_counts, partner, nodes)
    )
    with pytest.raises(ValueError, match="raw counts"):
        delta_x(pair_counts * 0.5, partner, nodes)


def test_delta_x_from_disk_and_to_disk_equals_the_whole_node_matrix_bit_for_bit(tmp_path) -> None:
    """ΔX computed a block of cells at a time against the distinct partners' rows (counts on
    disk, ΔX written to a scratch file or held) equals the difference of the whole N × T node
    matrix's rows, bit for bit: partners scattered and repeated, cells without counts."""
    import h5py

    from gpo_vae.data.on_disk import CountsOnDisk, write_counts

    rng = np.random.default_rng(4)
    counts = rng.poisson(0.8, size=(300, 30)).astype(np.float32)
    counts[[3, 77]] = 0  # cells without counts: normalised to 0
    X = sp.csr_matrix(counts)
    partner = rng.integers(0, 300, size=300)
    partner[:20] = 5  # one partner shared by many cells
    nodes = np.array([29, 0, -1, 7, 7, 13])
    whole = log1p_normalised_columns(X, nodes)
    expected = np.abs(whole.toarray() - whole[partner].toarray())
    np.testing.assert_array_equal(delta_x(X, partner, nodes, chunk_size=64), expected)
    path = tmp_path / "counts.h5"
    with h5py.File(path, "w") as file:
        write_counts(file, "X", X)
    on_disk = CountsOnDisk(path, "X", block_cells=50)
    np.testing.assert_array_equal(delta_x(on_disk, partner, nodes, chunk_size=64), expected)
    written = delta_x(on_disk, partner, nodes, chunk_size=64, out=tmp_path / "scratch.h5")
    assert isinstance(written, CountsOnDisk) and written.shape == expected.shape
    np.testing.assert_array_equal(written[:].toarray(), expected)


def test_counterfactual_indices_point_to_qc_fail_cells_of_the_same_group(pair_cf_case) -> None:
    labels, splits, qc_fail = pair_cf_case
    cf = counterfactual_indices(labels, splits, qc_fail, max_cells=10, seed=0)
    assert cf.shape == (400, 10) and cf.dtype == np.int64
    for i in range(400):
        valid = cf[i][cf[i] >= 0]
        # −1 padding only after the valid entries, which are distinct and ascending
        assert np.all(cf[i, valid.size :] == -1)
        assert np.all(np.diff(valid) > 0)
        assert (
            np.all(qc_fail[valid])
            and np.all(labels[valid] == labels[i])
            and np.all(splits[valid] == splits[i])
        )
        assert i not in valid
        pool = np.flatnonzero(qc_fail & (labels == labels[i]) & (splits == splits[i]) & (np.arange(400) != i))
        assert valid.size == min(pool.size, 10)


def test_counterfactual_indices_default_cap_is_50() -> None:
    labels = np.array(["A"] * 200)
    cf = counterfactual_indices(labels, np.full(200, "train"), np.arange(200) < 120)
    assert cf.shape == (200, 50) and np.all(cf >= 0)


def test_counterfactual_indices_are_deterministic_per_seed(pair_cf_case) -> None:
    labels, splits, qc_fail = pair_cf_case
    first = counterfactual_indices(labels, splits, qc_fail, max_cells=5, seed=3)
    np.testing.assert_array_equal(first, counterfactual_indices(labels, splits, qc_fail, max_cells=5, seed=3))
    assert np.any(first != counterfactual_indices(labels, splits, qc_fail, max_cells=5, seed=4))


def test_cell_without_counterfactual_cells_gets_minus_one_and_zero_median(pair_cf_case, pair_counts) -> None:
    labels, splits, qc_fail = pair_cf_case
    cf = counterfactual_indices(labels, splits, qc_fail, max_cells=5, seed=0)
    # "lonely": cell 0 is its group's only QC-fail cell; it may not draw itself
    assert np.all(cf[0] == -1)
    np.testing.assert_array_equal(cf[1:5, 0], 0)
    counts = sp.vstack([pair_counts] * 10, format="csr")
    median = counterfactual_median(counts, cf[:5])
    assert np.all(median[0] == 0)
    np.testing.assert_array_equal(median[1:5], np.tile(counts[0].toarray(), (4, 1)))


def test_counterfactual_median_equals_numpy_median(pair_counts: sp.csr_matrix) -> None:
    rng = np.random.default_rng(4)
    cf = np.full((9, 6), -1, dtype=np.int64)
    for i, k in enumerate([6, 6, 5, 4, 1, 0, 6, 3, 2]):
        cf[i, :k] = rng.choice(40, size=k, replace=False)
    cf[2] = rng.permutation(cf[2])  # padding need not be at the end
    dense = pair_counts.toarray()
    expected = np.stack(
        [np.median(dense[row[row >= 0]], axis=0) if np.any(row >= 0) else np.zeros(12) for row in cf]
    )
    out = counterfactual_median(pair_counts, cf)
    assert out.dtype == np.float32 and out.shape == (9, 12)
    np.testing.assert_allclose(out, expected)


def test_counterfactual_matrix_reuses_shared_sets_and_matches_batch_medians(pair_cf_case) -> None:
    labels, splits, qc_fail = pair_cf_case
    rng = np.random.default_rng(9)
    counts = sp.csr_matrix(rng.poisson(1.0, size=(400, 15)).astype(np.float32))
    cf = counterfactual_indices(labels, splits, qc_fail, max_cells=50, seed=0)
    medians, row = counterfactual_table(counts, cf, batch_size=16, progress=False)
    assert np.all((row == -1) == (cf[:, 0] == -1))
    # every group here has fewer than 50 QC-fail cells, so its QC-pass cells share one row
    assert medians.shape[0] < int((cf[:, 0] >= 0).sum())
    matrix = counterfactual_matrix(counts, cf, batch_size=16, progress=False)
    assert sp.isspmatrix_csr(matrix) and matrix.shape == (400, 15)
    np.testing.assert_array_equal(matrix.toarray(), counterfactual_median(counts, cf))


def test_normalisation_stats_equal_numpy_on_training_cells(pair_counts: sp.csr_matrix) -> None:
    train = np.random.default_rng(1).random(40) < 0.6
    stats = normalisation_stats(pair_counts, train, chunk_size=7)
    x = pair_counts.toarray().astype(np.float64)[train]
    assert int(stats["n_cells"]) == train.sum()
    np.testing.assert_allclose(stats["x_mean"], x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["x_std"], x.std(axis=0, ddof=1), rtol=1e-10)
    np.testing.assert_allclose(stats["log_x_mean"], np.log1p(x).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["log_x_std"], np.log1p(x).std(axis=0, ddof=1), rtol=1e-10)


def test_normalisation_stats_ignore_test_cells(pair_counts: sp.csr_matrix) -> None:
    train = np.arange(40) < 25
    before = normalisation_stats(pair_counts, train)
    changed = pair_counts.toarray()
    changed[~train] = np.random.default_rng(2).poisson(50.0, size=(15, 12))
    after = normalisation_stats(sp.csr_matrix(changed), train)
    for key in ("x_mean", "x_std", "log_x_mean", "log_x_std"):
        np.testing.assert_array_equal(before[key], after[key])
    assert not np.allclose(
        normalisation_stats(sp.csr_matrix(changed), np.ones(40, bool))["x_mean"], before["x_mean"]
    )


@pytest.mark.parametrize("chunk_cells", [1, 7, 10_000])
def test_counterfactual_table_reads_pool_by_pool_with_the_same_medians(
    pair_cf_case, tmp_path, chunk_cells: int
) -> None:
    """Rows come pool by pool (a group's sets together), the counts read a chunk of whole pools
    at a time (a pool larger than the chunk alone): every chunk size, in memory or on disk, gives
    the same table and rows, and each cell's row holds the median of its own counterfactual cells.
    Groups here have more QC-fail cells than are drawn, so most cells have a set of their own."""
    import h5py

    from gpo_vae.data.on_disk import CountsOnDisk, write_counts

    labels, splits, qc_fail = pair_cf_case
    rng = np.random.default_rng(12)
    counts = sp.csr_matrix(rng.poisson(1.0, size=(400, 15)).astype(np.float32))
    cf = counterfactual_indices(labels, splits, qc_fail, max_cells=3, seed=1)
    medians, row = counterfactual_table(counts, cf, batch_size=5, progress=False, chunk_cells=chunk_cells)
    np.testing.assert_array_equal(
        medians.toarray()[row[row >= 0]], counterfactual_median(counts, cf[row >= 0])
    )
    np.testing.assert_array_equal(row == -1, cf[:, 0] == -1)
    # a pool's rows are contiguous: the groups of consecutive rows change once per pool
    group = np.char.add(labels.astype(str), splits.astype(str))
    by_row = pd.Series(group[row >= 0], index=row[row >= 0]).groupby(level=0).first().sort_index()
    assert (by_row != by_row.shift()).sum() == by_row.nunique()
    path = tmp_path / "counts.h5"
    with h5py.File(path, "w") as file:
        write_counts(file, "X", counts, block_cells=64)
    on_disk, row_on_disk = counterfactual_table(
        CountsOnDisk(path, "X", block_cells=64), cf, batch_size=5, progress=False, chunk_cells=chunk_cells
    )
    np.testing.assert_array_equal(row_on_disk, row)
    np.testing.assert_array_equal(on_disk.toarray(), medians.toarray())
