"""Baseline score matrices: |corr(ΔX)| equals numpy's, random is seeded, masks are checked, and
network deconvolution and the sparse inverse recover the direct edges of known total effects."""

from __future__ import annotations

import numpy as np
import pytest

from gpo_vae.grn import baselines
from gpo_vae.grn.baselines import (
    correlation_scores,
    deconvolution_scores,
    mask_scores,
    network_scores,
    random_scores,
    sparse_inverse_scores,
)


def test_correlation_scores_equal_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    delta_x = rng.gamma(1.0, size=(300, 8)).astype(np.float32)
    delta_x[:, 1] = 2 * delta_x[:, 0] + 0.01 * rng.normal(size=300)
    delta_x[:, 2] = -delta_x[:, 0]
    got = correlation_scores(delta_x)
    expected = np.abs(np.corrcoef(delta_x.astype(np.float64), rowvar=False))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert got[0, 2] == pytest.approx(1.0)  # the sign is dropped
    monkeypatch.setattr(baselines, "_BLOCK_VALUES", 24)  # three rows per block
    np.testing.assert_allclose(correlation_scores(delta_x), got, rtol=1e-10, atol=1e-12)


def test_correlation_scores_read_an_on_disk_matrix_in_the_same_blocks(tmp_path, monkeypatch) -> None:
    """ΔX left in the artifact (dense in the file, read back as CSR blocks) scores bit for bit as
    in memory, also over blocks smaller than the file's (a subset of rows, as the training split)."""
    import h5py

    from gpo_vae.data.on_disk import CountsOnDisk

    rng = np.random.default_rng(1)
    delta_x = rng.gamma(1.0, size=(300, 8)).astype(np.float32)
    delta_x[rng.random(delta_x.shape) < 0.3] = 0.0
    with h5py.File(tmp_path / "a.h5ad", "w") as file:
        file.create_dataset("obsm/delta_x", data=delta_x)
    on_disk = CountsOnDisk(tmp_path / "a.h5ad", "obsm/delta_x")
    rows = np.flatnonzero(rng.random(300) < 0.6)
    for block_values in (24, baselines._BLOCK_VALUES):
        monkeypatch.setattr(baselines, "_BLOCK_VALUES", block_values)
        np.testing.assert_array_equal(correlation_scores(on_disk), correlation_scores(delta_x))
        np.testing.assert_array_equal(
            correlation_scores(on_disk.subset(rows)), correlation_scores(delta_x[rows])
        )


def test_constant_column_scores_zero() -> None:
    delta_x = np.column_stack([np.arange(5.0), np.ones(5), np.arange(5.0) ** 2])
    got = correlation_scores(delta_x)
    assert (got[1] == 0).all() and (got[:, 1] == 0).all()
    assert got[0, 2] == pytest.approx(np.corrcoef(np.arange(5.0), np.arange(5.0) ** 2)[0, 1])
    with pytest.raises(ValueError, match="N ≥ 2"):
        correlation_scores(np.ones((1, 3)))


def test_random_scores_seeded_uniform() -> None:
    first = random_scores(50, seed=1)
    assert first.shape == (50, 50) and first.min() >= 0 and first.max() < 1
    assert np.array_equal(first, random_scores(50, seed=1))
    assert not np.array_equal(first, random_scores(50, seed=2))
    assert abs(first.mean() - 0.5) < 0.03  # 2,500 uniforms: SD of the mean 0.0058


def test_mask_scores_checks() -> None:
    probabilities = np.full((3, 3), 0.25, dtype=np.float32)
    got = mask_scores(probabilities, n_nodes=3)
    assert got.dtype == np.float64 and got is not probabilities and (got == 0.25).all()
    with pytest.raises(ValueError, match="square"):
        mask_scores(np.ones((2, 3)))
    with pytest.raises(ValueError, match="for 4 nodes"):
        mask_scores(probabilities, n_nodes=4)
    with pytest.raises(ValueError, match="NaN"):
        mask_scores(np.full((2, 2), np.nan))


def _total_effects(direct: np.ndarray) -> np.ndarray:
    """Sum over paths of every length: D + D² + … = D (I − D)⁻¹."""
    return direct @ np.linalg.inv(np.eye(len(direct)) - direct)


def test_deconvolution_recovers_the_direct_edges_of_an_acyclic_graph():
    direct = np.zeros((5, 5))
    direct[0, 1], direct[1, 2], direct[2, 3], direct[0, 4] = 0.6, 0.5, 0.7, 0.3
    total = _total_effects(direct)
    assert total[0, 3] > 0  # the indirect path 0 → 1 → 2 → 3 shows in the total
    np.testing.assert_allclose(deconvolution_scores(total), direct, atol=1e-12)


def test_deconvolution_of_a_cyclic_graph_does_not_depend_on_the_totals_units():
    """With a feedback loop the paths' spectral radius is positive: the total is scaled to
    β / (1 − β) first, so multiplying it by 3 changes nothing; self-loops are never scored."""
    direct = np.zeros((4, 4))
    direct[0, 1], direct[1, 0], direct[1, 2], direct[2, 3] = 0.5, 0.4, 0.6, 0.5
    total = _total_effects(direct)
    scores = deconvolution_scores(total)
    np.testing.assert_allclose(deconvolution_scores(3.0 * total), scores, atol=1e-12)
    assert (np.diag(scores) == 0).all()
    assert not np.allclose(scores, deconvolution_scores(total, beta=0.3))


def test_sparse_inverse_ranks_direct_edges_above_indirect_ones():
    """Signed total effects R = (I − W)⁻¹ of a cascade, each row scaled by its own knock-down
    strength (unknown to the method): the inverse removes the paths, so every direct edge
    outranks every indirect pair, among perturbed nodes and towards unperturbed ones."""
    n, p = 6, 4
    w = np.zeros((n, n))
    w[0, 1], w[1, 2], w[2, 3], w[0, 4], w[3, 5], w[1, 4] = 0.7, -0.6, 0.5, 0.4, -0.8, 0.5
    total = np.linalg.inv(np.eye(n) - w)
    effects = np.zeros((n, n))
    effects[:p] = np.array([1.5, 0.7, 2.0, 1.1])[:, None] * total[:p]
    scores = sparse_inverse_scores(effects, p, alpha=1e-6)
    pairs = np.zeros((n, n), dtype=bool)
    pairs[:p] = True
    np.fill_diagonal(pairs, False)
    edges = (w != 0) & pairs
    assert scores[edges].min() > scores[pairs & ~edges].max()
    np.testing.assert_allclose(scores[edges], np.abs(w[edges]), atol=1e-3)
    assert (scores[p:] == 0).all()  # unperturbed nodes have no rows


def test_network_scores_are_the_adjacency():
    adjacency = np.array([[False, True], [False, False]])
    np.testing.assert_array_equal(network_scores(adjacency), [[0.0, 1.0], [0.0, 0.0]])
