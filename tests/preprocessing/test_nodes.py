"""Treatment nodes (P then A) and the one-hot dosage matrix."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gpo_vae.preprocessing.nodes import dosage_matrix, treatment_nodes

CTRL = "non-targeting"


def test_nodes_are_sorted_perturbed_then_sorted_extra_fc3_genes() -> None:
    nodes, n_perturbed = treatment_nodes(
        ["TP53", CTRL, "MYC", "ATF4", "MYC"], ["XBP1", "MYC", "DDIT3", "ATF4"]
    )
    assert nodes == ["ATF4", "MYC", "TP53", "DDIT3", "XBP1"]
    assert n_perturbed == 3
    assert treatment_nodes(["B", "A"], []) == (["A", "B"], 2)


def test_dosage_matrix_one_hot_with_zero_controls_and_zero_extra_columns() -> None:
    nodes, n_perturbed = treatment_nodes(["MYC", "ATF4", "TP53"], ["XBP1", "DDIT3"])
    labels = np.array(["MYC", CTRL, "TP53", "ATF4", CTRL, "MYC"])
    D = dosage_matrix(labels, nodes, CTRL, n_perturbed=n_perturbed)
    assert isinstance(D, sp.csr_matrix) and D.dtype == np.float32
    assert D.shape == (6, 5)
    dense = D.toarray()
    expected = np.zeros((6, 5), dtype=np.float32)
    for row, column in [(0, 1), (2, 2), (3, 0), (5, 1)]:  # ATF4=0, MYC=1, TP53=2
        expected[row, column] = 1.0
    np.testing.assert_array_equal(dense, expected)
    assert (dense[labels != CTRL].sum(axis=1) == 1).all()  # one-hot
    assert not dense[labels == CTRL].any()  # controls all-zero
    assert not dense[:, n_perturbed:].any()  # A columns always zero


def test_dosage_matrix_rejects_unknown_labels_by_name() -> None:
    nodes, n_perturbed = treatment_nodes(["MYC", "ATF4"], ["XBP1"])
    with pytest.raises(ValueError, match=r"\['GATA1'\] are not a treatment node"):
        dosage_matrix(["MYC", "GATA1", CTRL], nodes, CTRL, n_perturbed=n_perturbed)
    with pytest.raises(ValueError, match=r"\['XBP1'\] are not a perturbed \(P\) node"):
        dosage_matrix(["MYC", "XBP1"], nodes, CTRL, n_perturbed=n_perturbed)
    with pytest.raises(ValueError, match="duplicate nodes"):
        dosage_matrix(["MYC"], ["MYC", "MYC"], CTRL)


def test_combinations_are_multi_hot_over_their_singles_nodes() -> None:
    nodes, n_perturbed = treatment_nodes(["MYC", "ATF4+MYC", "TP53+ATF4", CTRL], ["XBP1"])
    assert nodes == ["ATF4", "MYC", "TP53", "XBP1"] and n_perturbed == 3  # no node of its own
    D = dosage_matrix(["ATF4+MYC", "MYC", CTRL, "ATF4+TP53"], nodes, CTRL, n_perturbed).toarray()
    np.testing.assert_array_equal(D, [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]])
    with pytest.raises(ValueError, match=r"\['MYC\+GATA1'\] are not a perturbed"):
        dosage_matrix(["MYC+GATA1"], nodes, CTRL, n_perturbed)
