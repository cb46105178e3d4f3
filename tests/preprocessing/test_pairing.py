"""OT pairing of perturbed with control cells (design §5)."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from gpo_vae.preprocessing.pairing import control_subset, pair_cells_ot, pairing_features

CONTROL = "non-targeting"


@pytest.fixture
def pair_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, perturbations and splits of 260 cells: 4 perturbations, 60 controls, 3 splits."""
    rng = np.random.default_rng(11)
    labels = np.array([CONTROL] * 60 + [f"G{i}" for i in range(4) for _ in range(50)])
    splits = rng.choice(["train", "val", "test"], size=labels.size, p=[0.6, 0.2, 0.2])
    features = rng.gamma(1.0, 1.0, size=(labels.size, 6)).astype(np.float32)
    return features, labels, splits


@pytest.mark.parametrize("method", ["sinkhorn", "emd", "hungarian"])
def test_partners_are_controls_of_the_same_split(pair_case, method: str) -> None:
    features, labels, splits = pair_case
    partner = pair_cells_ot(features, labels, splits, method=method, progress=False)
    assert partner.dtype == np.int64 and partner.shape == labels.shape
    assert np.all(labels[partner] == CONTROL)
    assert np.all(splits[partner] == splits)
    controls = np.flatnonzero(labels == CONTROL)
    np.testing.assert_array_equal(partner[controls], controls)


def test_sparse_features_give_the_same_partners(pair_case) -> None:
    features, labels, splits = pair_case
    dense = pair_cells_ot(features, labels, splits, progress=False)
    sparse = pair_cells_ot(sp.csr_matrix(features), labels, splits, progress=False)
    np.testing.assert_array_equal(dense, sparse)


def test_pairing_is_deterministic(pair_case) -> None:
    features, labels, splits = pair_case
    first = pair_cells_ot(features, labels, splits, progress=False)
    np.testing.assert_array_equal(first, pair_cells_ot(features, labels, splits, progress=False))


def test_a_cap_on_the_controls_pairs_within_a_seeded_subset_of_each_split(pair_case) -> None:
    """``max_controls``: a cap no split reaches changes nothing; a cap below pairs every cell of
    a split with the same few controls, drawn by the seed and the split, whichever other cells
    are paired beside them (a chunk of perturbations draws the same subset)."""
    features, labels, splits = pair_case
    whole = pair_cells_ot(features, labels, splits, progress=False)
    np.testing.assert_array_equal(
        whole, pair_cells_ot(features, labels, splits, progress=False, max_controls=60)
    )
    capped = pair_cells_ot(features, labels, splits, progress=False, max_controls=5, seed=3)
    assert np.all(labels[capped] == CONTROL) and np.all(splits[capped] == splits)
    for name in np.unique(splits):
        controls = np.flatnonzero((labels == CONTROL) & (splits == name))
        subset = control_subset(controls, name, 5, seed=3)
        assert subset.size == 5 and np.all(np.diff(subset) > 0) and np.isin(subset, controls).all()
        perturbed = (labels != CONTROL) & (splits == name)
        assert np.isin(capped[perturbed], subset).all()
    assert not np.array_equal(capped, whole)
    one = np.flatnonzero((labels == CONTROL) | (labels == "G2"))  # a chunk: every control, one group
    alone = pair_cells_ot(features[one], labels[one], splits[one], progress=False, max_controls=5, seed=3)
    np.testing.assert_array_equal(one[alone], capped[one])
    other_seed = pair_cells_ot(features, labels, splits, progress=False, max_controls=5, seed=4)
    assert not np.array_equal(other_seed, capped)
    with pytest.raises(ValueError, match="max_controls"):
        pair_cells_ot(features, labels, splits, progress=False, max_controls=0)


def test_sinkhorn_with_small_reg_approaches_the_exact_assignment() -> None:
    # 40 cells and 40 controls in one split: the exact plan is a permutation (unique for
    # continuous features), and the entropic plan converges to it as reg → 0.
    rng = np.random.default_rng(0)
    n = 40
    features = rng.normal(size=(2 * n, 5))
    labels = np.array(["A"] * n + [CONTROL] * n)
    splits = np.full(2 * n, "train")
    kwargs = {"cost_scale": 1.0, "progress": False}
    exact = pair_cells_ot(features, labels, splits, method="hungarian", **kwargs)
    emd = pair_cells_ot(features, labels, splits, method="emd", **kwargs)
    # max cost / reg ≈ 600 here, so this exercises the log-domain solver
    entropic = pair_cells_ot(features, labels, splits, method="sinkhorn", reg=1e-2, **kwargs)

    cells = np.arange(n)
    cost = ot.dist(features[:n], features[n:], metric="euclidean")
    _, optimal = linear_sum_assignment(cost)
    np.testing.assert_array_equal(exact[cells], n + optimal)
    np.testing.assert_array_equal(emd[cells], exact[cells])
    assert np.mean(entropic[cells] == exact[cells]) >= 0.9
    total = cost[cells, entropic[cells] - n].sum()
    assert total == pytest.approx(cost[cells, optimal].sum(), rel=0.01)


def test_sinkhorn_partner_is_the_argmax_of_the_published_plan() -> None:
    # Defaults (reg 1, cost / 100) must reproduce a direct POT call.
    rng = np.random.default_rng(5)
    features = rng.normal(size=(30, 4))
    labels = np.array(["A"] * 12 + [CONTROL] * 18)
    splits = np.full(30, "train")
    partner = pair_cells_ot(features, labels, splits, progress=False)
    cost = ot.dist(features[:12], features[12:], metric="euclidean") / 100.0
    plan = ot.sinkhorn(np.full(12, 1 / 12), np.full(18, 1 / 18), cost, 1.0)
    np.testing.assert_array_equal(partner[:12], 12 + plan.argmax(axis=1))


def test_hungarian_tiles_controls_when_they_are_fewer_than_cells() -> None:
    rng = np.random.default_rng(2)
    features = rng.normal(size=(13, 3))
    labels = np.array(["A"] * 10 + [CONTROL] * 3)
    partner = pair_cells_ot(features, labels, np.full(13, "train"), method="hungarian", progress=False)
    uses = np.bincount(partner[:10], minlength=13)[10:]
    assert uses.sum() == 10 and uses.max() <= 4  # ceil(10 / 3)


def test_split_without_controls_is_an_error_naming_it(pair_case) -> None:
    features, labels, splits = pair_case
    splits = splits.copy()
    splits[(labels == CONTROL) & (splits == "val")] = "train"
    with pytest.raises(ValueError, match="split 'val' has perturbed cells but no 'non-targeting'"):
        pair_cells_ot(features, labels, splits, progress=False)


def test_pairing_features_are_log1p_normalised_measured_perturbed_genes() -> None:
    rng = np.random.default_rng(3)
    counts = rng.poisson(2.0, size=(20, 6)).astype(np.float32)
    var_names = ["A", "B", "C", "D", "E", "F"]
    features, measured = pairing_features(sp.csr_matrix(counts), var_names, ["E", "ZZZ", "B"])
    assert measured == ["E", "B"]
    library = counts.sum(axis=1, keepdims=True)
    expected = np.log1p(counts[:, [4, 1]] / library * 1e4)
    assert features.dtype == np.float32
    np.testing.assert_allclose(features, expected, rtol=1e-6)
    with pytest.raises(
        ValueError, match=r"none of the 1 perturbed genes is measured.*use pairing.features: pca"
    ):
        pairing_features(sp.csr_matrix(counts), var_names, ["ZZZ"])


def test_features_written_to_disk_are_read_a_group_at_a_time_with_the_same_partners(
    pair_case, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Features written a block of cells at a time (blocks of 7 here, across cells with and
    without counts) hold the in-memory values bit for bit, and pairing on them reads each split's
    controls and each group's cells from the file: the same partners, with and without batches."""
    from gpo_vae.data.on_disk import CountsOnDisk
    from gpo_vae.preprocessing import pairing

    _, labels, splits = pair_case
    rng = np.random.default_rng(5)
    counts = rng.poisson(1.5, size=(labels.size, 9)).astype(np.float32)
    counts[3] = 0  # a cell without counts stays zero
    genes = [f"g{i}" for i in range(9)]
    held, measured = pairing_features(sp.csr_matrix(counts), genes, ["g7", "g1", "missing", "g4"])
    monkeypatch.setattr(pairing, "BLOCK_CELLS", 7)
    on_disk, measured_on_disk = pairing_features(
        sp.csr_matrix(counts), genes, ["g7", "g1", "missing", "g4"], out=tmp_path / "features.h5"
    )
    assert isinstance(on_disk, CountsOnDisk) and measured_on_disk == measured
    np.testing.assert_array_equal(on_disk[np.arange(labels.size)].toarray(), held)
    batches = np.where(np.arange(labels.size) % 2 == 0, "b1", "b2")
    for batch in (None, batches):
        np.testing.assert_array_equal(
            pair_cells_ot(on_disk, labels, splits, progress=False, batches=batch),
            pair_cells_ot(held, labels, splits, progress=False, batches=batch),
        )
