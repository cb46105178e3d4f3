"""ATE "perturbseq" method: hand cases, sparse = dense = per-cell formula, split hygiene."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gpo_vae.evaluation import ate as ate_module
from gpo_vae.evaluation.ate import (
    ate_from_generated,
    ate_perturbseq,
    ate_reference_all_cells,
    ate_reference_heldout,
    group_means,
    mean_log2_expression,
    percent_knockdown,
)

CTRL = "non-targeting"


def _brute_force_ate(X: np.ndarray, labels: np.ndarray, target_sum: float = 1e4) -> pd.DataFrame:
    """The definition, one cell at a time."""
    rows = {}
    logs = []
    for cell in X:
        lib = cell.sum()
        logs.append(np.log2(1 + (cell * target_sum / lib if lib > 0 else cell * 0)))
    logs = np.array(logs)
    control = logs[labels == CTRL].mean(axis=0)
    for p in sorted(set(labels) - {CTRL}):
        rows[p] = logs[labels == p].mean(axis=0) - control
    return pd.DataFrame(rows).T


def _random_counts(seed: int = 0, n: int = 60, g: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.poisson(rng.uniform(0.1, 4.0, size=(n, g))).astype(np.float32)
    labels = rng.choice([CTRL, "A", "B", "C"], size=n)
    labels[:3] = CTRL
    return X, labels


def test_hand_computed_case() -> None:
    # target_sum 4: [3,1] → [3,1] → log2(1+x) = [2,1]; [1,3] → [1,2]; [6,2] → [3,1] → [2,1];
    # [0,1] → [0,4] → [0, log2 5]; an empty cell stays [0,0]
    X = np.array([[3, 1], [1, 3], [3, 1], [6, 2], [0, 1], [0, 0]], dtype=float)
    labels = np.array([CTRL, CTRL, "A", "A", "B", "B"])
    got = ate_perturbseq(sp.csr_matrix(X), labels, target_sum=4, genes=["g1", "g2"])
    control = np.array([1.5, 1.5])
    expected = pd.DataFrame(
        [np.array([2.0, 1.0]) - control, np.array([0.0, np.log2(5) / 2]) - control],
        index=pd.Index(["A", "B"], name="perturbation"),
        columns=pd.Index(["g1", "g2"], name="gene"),
    )
    pd.testing.assert_frame_equal(got, expected)


def test_sparse_dense_and_definition_agree() -> None:
    X, labels = _random_counts()
    expected = _brute_force_ate(X.astype(np.float64), labels)
    dense = ate_perturbseq(X, labels)
    sparse = ate_perturbseq(sp.csr_matrix(X), labels)
    np.testing.assert_allclose(dense.to_numpy(), expected.to_numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sparse.to_numpy(), expected.to_numpy(), rtol=1e-10, atol=1e-12)
    assert list(dense.index) == ["A", "B", "C"]


def test_blocks_accumulate_like_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    X, labels = _random_counts(1, n=80)
    whole = ate_perturbseq(sp.csr_matrix(X), labels)
    monkeypatch.setattr(ate_module, "_BLOCK_NNZ", 17)  # a few rows per block
    monkeypatch.setattr(ate_module, "_DENSE_BLOCK_VALUES", 20)
    np.testing.assert_allclose(
        ate_perturbseq(sp.csr_matrix(X), labels).to_numpy(), whole.to_numpy(), rtol=1e-12
    )
    np.testing.assert_allclose(ate_perturbseq(X, labels).to_numpy(), whole.to_numpy(), rtol=1e-12)


def test_requested_perturbations_order_missing_and_errors() -> None:
    X, labels = _random_counts()
    got = ate_perturbseq(X, labels, perturbations=["C", "Z", "A"])
    assert list(got.index) == ["C", "Z", "A"]
    assert got.loc["Z"].isna().all() and not got.loc[["C", "A"]].isna().any().any()
    with pytest.raises(ValueError, match="no control cell"):
        ate_perturbseq(X[labels != CTRL], labels[labels != CTRL])
    with pytest.raises(ValueError, match="one label per cell"):
        ate_perturbseq(X, labels[:-1])


def test_group_means_linear_and_empty_group() -> None:
    X = np.array([[1.0, 3.0], [2.0, 2.0]])
    means, counts = group_means(X, np.array([0, 0]), 2, target_sum=4, log=False)
    np.testing.assert_allclose(means[0], [1.5, 2.5])
    assert counts.tolist() == [2, 0] and np.isnan(means[1]).all()


def test_generated_mapping_pair_and_lazy_mapping_agree() -> None:
    X, labels = _random_counts(2)
    genes = [f"g{i}" for i in range(X.shape[1])]
    by_label = {p: X[labels == p] for p in [CTRL, "A", "B", "C"]}
    from_pair = ate_from_generated((labels, X), genes=genes)
    from_mapping = ate_from_generated(by_label, genes=genes)
    pd.testing.assert_frame_equal(from_pair, from_mapping.loc[from_pair.index])
    pd.testing.assert_frame_equal(from_pair, ate_perturbseq(X, labels, genes=genes))

    class Lazy(dict):
        """Counts arrays made on access, as a generator would."""

        def __getitem__(self, key: str) -> np.ndarray:
            return by_label[key]

    lazy = Lazy.fromkeys(by_label)
    pd.testing.assert_frame_equal(ate_from_generated(lazy, genes=genes), from_mapping)


def test_generated_with_given_control_mean() -> None:
    X, labels = _random_counts(3)
    genes = pd.Index([f"g{i}" for i in range(X.shape[1])], name="gene")
    control = pd.Series(mean_log2_expression(X[labels == CTRL]), index=genes)
    shifted = control + 1.0
    got = ate_from_generated({"A": X[labels == "A"]}, control_mean=shifted)
    expected = ate_perturbseq(X, labels).loc[["A"]].to_numpy() - 1.0
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-12)
    assert list(got.columns) == list(genes)
    pair = ate_from_generated((labels, X), control_mean=shifted)
    np.testing.assert_allclose(pair.loc[["A"]].to_numpy(), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="no control_mean"):
        ate_from_generated({"A": X[labels == "A"]})


def test_heldout_reference_reads_only_test_cells() -> None:
    X, labels = _random_counts(4, n=120)
    split = np.where(np.arange(len(labels)) % 3 == 0, "test", "train")
    split[:3] = "test"  # test controls
    reference = ate_reference_heldout(sp.csr_matrix(X), labels, split)
    test = split == "test"
    pd.testing.assert_frame_equal(reference, ate_perturbseq(X[test], labels[test]))

    scrambled = X.copy()
    scrambled[~test] = np.random.default_rng(9).poisson(50, size=scrambled[~test].shape)
    pd.testing.assert_frame_equal(ate_reference_heldout(scrambled, labels, split), reference)
    changed = X.copy()
    changed[np.flatnonzero(test & (labels == "A"))[0]] += 25
    assert not np.allclose(ate_reference_heldout(changed, labels, split).loc["A"], reference.loc["A"])
    with pytest.raises(ValueError, match="no cell in split"):
        ate_reference_heldout(X, labels, np.full(len(labels), "train"))


def test_all_cells_reference_is_every_cell() -> None:
    X, labels = _random_counts(5)
    pd.testing.assert_frame_equal(ate_reference_all_cells(X, labels), ate_perturbseq(X, labels))


def test_percent_knockdown_hand_case() -> None:
    # target_sum 4; genes A, B, other. Controls normalise to A: [1, 2] → mean 1.5
    X = np.array([[1, 2, 1], [2, 1, 1], [0, 2, 2], [1, 3, 0]], dtype=float)
    labels = np.array([CTRL, CTRL, "A", "B"])
    got = percent_knockdown(X, labels, ["A", "B", "other"], target_sum=4, perturbations=["A", "B", "Q"])
    # A cells: A = 0 → −1; B cell: B = 3 vs control mean (2 + 1)/2 = 1.5 → +1
    np.testing.assert_allclose(got.loc[["A", "B"]].to_numpy(), [-1.0, 1.0])
    assert np.isnan(got.loc["Q"])


def test_with_batches_each_batch_is_measured_against_its_own_controls() -> None:
    X, labels = _random_counts(seed=3, n=80)
    labels = labels.copy()
    batches = np.where(np.arange(80) % 2 == 0, "X", "Y")
    batches[:8] = ["X"] * 6 + ["Y"] * 2  # controls in both batches, mostly X
    labels[:8] = CTRL
    labels[8:] = np.where(np.arange(8, 80) % 4 < 2, "A", "B")
    X[batches == "Y"] *= 3  # a batch effect on every gene (library scaling keeps it out) ...
    X[batches == "Y", 0] += 20  # ... and one the normalisation cannot remove
    ate = ate_perturbseq(sp.csr_matrix(X), labels, CTRL, genes=list("abcdefg"), batches=batches)
    expected = []
    for p in ("A", "B"):
        parts, weights = [], []
        for b in ("X", "Y"):
            in_b = batches == b
            per_batch = _brute_force_ate(X[in_b], labels[in_b]).loc[p].to_numpy()
            parts.append(per_batch)
            weights.append(((labels == p) & in_b).sum())
        expected.append(np.average(parts, axis=0, weights=weights))
    np.testing.assert_allclose(ate.to_numpy(), np.array(expected), rtol=1e-5)  # brute force in float32
    pooled = ate_perturbseq(sp.csr_matrix(X), labels, CTRL, genes=list("abcdefg"))
    assert not np.allclose(pooled.to_numpy(), ate.to_numpy())
    with pytest.raises(ValueError, match="batch 'Z' has cells of 'A' but no control"):
        ate_perturbseq(X, labels, CTRL, batches=np.where(labels == "A", "Z", batches))
