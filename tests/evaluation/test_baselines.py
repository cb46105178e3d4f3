"""Trivial baselines read only their own split; split halves are disjoint, seeded and cover the test set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpo_vae.evaluation.ate import ate_perturbseq
from gpo_vae.evaluation.baselines import (
    control_baseline_ate,
    mean_baseline_ate,
    noncontrol_mean_ate,
    spearman_brown,
    split_half_ate,
    split_half_reliability,
)
from gpo_vae.evaluation.metrics import prediction_metrics

CTRL = "non-targeting"


def _data(seed: int = 0, n: int = 240, g: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.choice([CTRL, "A", "B", "C"], size=n)
    rate = rng.uniform(0.5, 5.0, size=g)
    X = rng.poisson(rate * np.where(labels[:, None] == "A", 3.0, 1.0)).astype(np.float32)
    split = rng.choice(["train", "val", "test"], size=n, p=[0.6, 0.1, 0.3])
    return X, labels, split


def test_mean_baseline_is_training_ate_and_ignores_test_cells() -> None:
    X, labels, split = _data()
    train = split == "train"
    baseline = mean_baseline_ate(X, labels, split)
    pd.testing.assert_frame_equal(baseline, ate_perturbseq(X[train], labels[train]))
    perturbed = X.copy()
    perturbed[~train] = np.random.default_rng(5).poisson(40, size=perturbed[~train].shape)
    pd.testing.assert_frame_equal(mean_baseline_ate(perturbed, labels, split), baseline)
    perturbed = X.copy()
    perturbed[np.flatnonzero(train & (labels == "B"))[0]] += 30
    assert not np.allclose(mean_baseline_ate(perturbed, labels, split).loc["B"], baseline.loc["B"])


def test_noncontrol_mean_is_the_pooled_training_ate_for_every_perturbation() -> None:
    X, labels, split = _data()
    train = split == "train"
    shared = noncontrol_mean_ate(X, labels, split, perturbations=["A", "B", "C"])
    assert list(shared.index) == ["A", "B", "C"]
    X64 = X.astype(np.float64)
    log = np.log2(1.0 + X64 * (1e4 / X64.sum(1, keepdims=True)))
    perturbed = train & (labels != CTRL)
    expected = log[perturbed].mean(0) - log[train & (labels == CTRL)].mean(0)
    for row in shared.to_numpy():
        np.testing.assert_allclose(row, expected, rtol=1e-9, atol=1e-12)
    changed = X.copy()
    changed[~train] = 0.0  # test cells are never read
    pd.testing.assert_frame_equal(
        noncontrol_mean_ate(changed, labels, split, perturbations=["A", "B", "C"]), shared
    )


def test_pearson_specific_removes_the_shared_shift() -> None:
    X, labels, split = _data()
    truth = ate_perturbseq(X[split == "test"], labels[split == "test"])
    shared = noncontrol_mean_ate(X, labels, split, perturbations=truth.index)
    shift = shared.iloc[0]
    metrics = prediction_metrics(truth, mean_baseline_ate(X, labels, split), shared_shift=shift)
    baseline = mean_baseline_ate(X, labels, split)
    for p in truth.index:
        hand = np.corrcoef(truth.loc[p] - shift, baseline.loc[p] - shift)[0, 1]
        assert metrics.loc[p, "pearson_specific"] == pytest.approx(hand, rel=1e-9)
    # the shared shift alone carries nothing specific: its own score is undefined
    alone = prediction_metrics(truth, shared, shared_shift=shift)
    assert alone["pearson_specific"].isna().all()
    assert "pearson_specific" not in prediction_metrics(truth, baseline).columns


def test_control_baseline_is_zero_and_scores_as_documented() -> None:
    true = pd.DataFrame({"g0": [1.0, -2.0], "g1": [3.0, 0.0]}, index=["P", "Q"])
    zero = control_baseline_ate(["P", "Q"], ["g0", "g1"])
    assert (zero.to_numpy() == 0).all() and list(zero.index) == ["P", "Q"]
    metrics = prediction_metrics(true, zero, top_de=1, jaccard_ks=())
    assert metrics["pearson"].isna().all()
    # P: t = [1, 3] → R² = 1 − Σt² / Σ(t − t̄)² = 1 − 10 / 2
    assert metrics.loc["P", "r2"] == pytest.approx(-4.0)


def test_split_halves_disjoint_cover_and_seeded() -> None:
    rng = np.random.default_rng(1)
    n = 60
    labels = rng.choice([CTRL, "A", "B"], size=n)
    split = rng.choice(["train", "test"], size=n)
    X = np.eye(n, dtype=np.float32) * 5  # each cell its own gene: an ATE row shows the cells used
    half_a, half_b = split_half_ate(X, labels, split, seed=3)
    top = np.log2(1 + 1e4)  # a one-hot cell's normalised log2 value
    for p in ["A", "B"]:
        cells = np.flatnonzero((labels == p) & (split == "test"))
        used_a = set(np.flatnonzero(half_a.loc[p].to_numpy() > 0)) & set(cells)
        used_b = set(np.flatnonzero(half_b.loc[p].to_numpy() > 0)) & set(cells)
        assert used_a.isdisjoint(used_b) and used_a | used_b == set(cells)
        assert len(used_a) == len(cells) // 2
        assert half_a.loc[p].max() == pytest.approx(top / len(used_a))
    controls = np.flatnonzero((labels == CTRL) & (split == "test"))
    negative_a = set(np.flatnonzero(half_a.loc["A"].to_numpy() < 0))
    negative_b = set(np.flatnonzero(half_b.loc["A"].to_numpy() < 0))
    assert negative_a.isdisjoint(negative_b) and negative_a | negative_b == set(controls)
    assert not negative_a & set(np.flatnonzero(split == "train"))

    again_a, _ = split_half_ate(X, labels, split, seed=3)
    other_a, _ = split_half_ate(X, labels, split, seed=4)
    pd.testing.assert_frame_equal(again_a, half_a)
    assert not other_a.equals(half_a)


def test_split_half_reliability_reads_only_test_cells_and_corrects() -> None:
    X, labels, split = _data(2, n=400)
    raw = split_half_reliability(X, labels, split, seed=0)
    perturbed = X.copy()
    train = split != "test"
    perturbed[train] = np.random.default_rng(7).poisson(40, size=perturbed[train].shape)
    pd.testing.assert_frame_equal(split_half_reliability(perturbed, labels, split, seed=0), raw)
    corrected = split_half_reliability(X, labels, split, seed=0, corrected=True)
    np.testing.assert_allclose(corrected["pearson"], 2 * raw["pearson"] / (1 + raw["pearson"]))
    pd.testing.assert_series_equal(corrected["r2"], raw["r2"])
    # the strong perturbation A is reproducible across halves
    assert raw.loc["A", "pearson"] > 0.5


def test_spearman_brown_formula() -> None:
    assert spearman_brown(0.5) == pytest.approx(2 / 3)
    assert spearman_brown(0.5, factor=3) == pytest.approx(0.75)
