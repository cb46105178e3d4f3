"""Scores placed between baseline and replicate, the linear embedding baseline, discrimination."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpo_vae.evaluation import scaled as sc
from gpo_vae.evaluation.linear_baseline import linear_embedding_prediction
from gpo_vae.evaluation.metrics import centroid_accuracy, discrimination_l1, target_columns
from gpo_vae.report import scaled_terms as terms


def test_the_linear_model_predicts_unseen_genes_exactly_when_effects_are_bilinear_in_their_embedding():
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(30)]
    A = rng.normal(size=(30, 3))
    train, held = np.arange(20), np.arange(20, 25)
    A[train] -= A[train].mean(axis=0)  # the seen embeddings sum to zero: b is the constant c
    M = rng.normal(size=(3, 3))
    c = rng.normal(size=30)
    effect = (A @ M @ A.T).T + c  # row g: the ATE of perturbing gene g
    single_ate = pd.DataFrame(effect[train], index=[genes[i] for i in train], columns=genes)
    labels = [genes[i] for i in held] + ["g20+g21", "unmeasured"]
    predicted = linear_embedding_prediction(labels, single_ate, pca_dim=3, ridge=1e-9)
    np.testing.assert_allclose(predicted.loc[[genes[i] for i in held]], effect[held], atol=1e-6)
    # a pair's embedding is the sum of its genes': its effect is bilinear too
    np.testing.assert_allclose(predicted.loc["g20+g21"], A @ M @ (A[20] + A[21]) + c, atol=1e-6)
    # a label with no measured target falls back to the mean of the seen perturbations
    np.testing.assert_allclose(predicted.loc["unmeasured"], effect[train].mean(axis=0))
    # a panel that measures none of the seen targets embeds nobody: every label gets that mean
    panel = single_ate.rename(index=lambda g: f"not_{g}")
    fallback = linear_embedding_prediction(["g20", "g21+g22"], panel)
    np.testing.assert_allclose(fallback.to_numpy(), np.tile(effect[train].mean(axis=0), (2, 1)))


def test_discrimination_follows_cell_evals_definition_with_the_target_left_out():
    true = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 1.0], [5.0, 5.0, 5.0]])
    # prediction 0 is nearest its own row, prediction 1 nearest row 0; prediction 2 is nearest
    # row 1 through its target's column (2) alone, which is left out
    pred = np.array([[0.1, 0.0, 0.0], [0.2, 0.2, 0.2], [5.0, 5.0, 1.0]])
    scores = discrimination_l1(true, pred, [[], [], [2]])
    np.testing.assert_allclose(scores, [1.0, 1 - 1 / 3, 1.0])
    assert discrimination_l1(true, pred, None)[2] == pytest.approx(1 - 1 / 3)
    np.testing.assert_allclose(centroid_accuracy(true, pred), [1.0, 0.0, 0.0])
    assert target_columns(["B", "A+C", "X"], ["A", "B", "C"]) == [[1], [0, 2], []]


def _per_label(values: dict[str, list[float]], labels: list[str]) -> dict[str, pd.DataFrame]:
    return {m: pd.DataFrame({"pearson": v}, index=labels) for m, v in values.items()}


def test_scaled_scores_put_the_best_trivial_baseline_at_zero_and_the_replicate_at_one():
    labels = ["a", "b", "c", "d"]
    per_label = _per_label(
        {
            "model": [0.6, 0.7, 0.8, 0.9],
            "additive": [0.5, 0.5, 0.5, 0.5],
            "noncontrol_mean": [0.1, 0.2, 0.3, 0.4],
            "linear_embedding": [0.55, 0.55, 0.55, 0.55],
        },
        labels,
    )
    replicate = pd.DataFrame({"pearson": [0.9, 0.9, 0.9, 0.9]}, index=labels)
    table = sc.scaled_table(
        sc.PAIRS, per_label, replicate, ("additive", "noncontrol_mean"), models=("model",), n_boot=500
    )
    row = table.set_index("method")
    assert (row["baseline"] == "additive").all()
    assert row.loc["model", "scaled"] == pytest.approx((0.75 - 0.5) / (0.9 - 0.5))
    assert row.loc["additive", "scaled"] == 0.0 and row.loc[sc.REPLICATE, "scaled"] == pytest.approx(1.0)
    assert row.loc["noncontrol_mean", "scaled"] == pytest.approx((0.25 - 0.5) / 0.4)
    assert row.loc["linear_embedding", "role"] == "baseline" and row.loc["model", "role"] == "model"
    assert row.loc["model", "scaled_low"] < row.loc["model", "scaled"] < row.loc["model", "scaled_high"]
    assert row.loc["model", "headroom"] == pytest.approx(0.4)
    lines = terms.headline_lines(table, "model")
    assert "1 = replicate (0.900)" in lines[0] and "0 = additive (0.500)" in lines[0]
    assert lines[-1].strip() == "model beats the best baseline (linear_embedding) beyond its interval."
    assert sc.headline_numbers(table)["model_scaled_unseen_pairs"] == pytest.approx(0.625)


def test_a_replicate_no_better_than_the_baseline_leaves_no_scale():
    labels = ["a", "b"]
    per_label = _per_label({"model": [0.5, 0.6], "mean_baseline": [0.8, 0.8]}, labels)
    replicate = pd.DataFrame({"pearson": [0.7, 0.7]}, index=labels)
    table = sc.scaled_table(sc.SEEN, per_label, replicate, ("mean_baseline",), models=("model",))
    assert table["scaled"].isna().all() and (table["headroom"] < 0).all()
    assert "cannot rank" in terms.task_verdict(table, "model")


def test_the_replicate_is_spearman_brown_corrected_on_pearson_columns_only():
    halves = pd.DataFrame({"pearson": [0.5, 0.0], "discrimination_l1": [0.5, 0.8], "r2": [0.3, 0.1]})
    out = sc.corrected_replicate(halves)
    np.testing.assert_allclose(out["pearson"], [2 * 0.5 / 1.5, 0.0])
    pd.testing.assert_series_equal(out["discrimination_l1"], halves["discrimination_l1"])
    pd.testing.assert_series_equal(out["r2"], halves["r2"])
