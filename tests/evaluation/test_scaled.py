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
    labels = ["a", "b", "c", "d", "e", "f"]
    per_label = _per_label(
        {
            "model": [0.6, 0.7, 0.8, 0.9, 0.7, 0.8],
            "additive": [0.5] * 6,
            "noncontrol_mean": [0.1, 0.2, 0.3, 0.4, 0.2, 0.3],
            "linear_embedding": [0.55] * 6,
        },
        labels,
    )
    replicate = pd.DataFrame({"pearson": [0.9] * 6}, index=labels)
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
    assert "1 = replicate (full size) (0.900)" in lines[0] and "0 = additive (0.500)" in lines[0]
    assert lines[-1].strip() == "model beats the best baseline (linear_embedding) beyond its interval."
    assert sc.headline_numbers(table)["model_scaled_unseen_pairs"] == pytest.approx(0.625)


def test_a_replicate_no_better_than_the_baseline_leaves_no_scale():
    labels = list("abcdef")
    per_label = _per_label({"model": [0.5, 0.6] * 3, "mean_baseline": [0.8] * 6}, labels)
    replicate = pd.DataFrame({"pearson": [0.7] * 6}, index=labels)
    table = sc.scaled_table(sc.SEEN, per_label, replicate, ("mean_baseline",), models=("model",))
    assert table["scaled"].isna().all() and (table["headroom"] < 0).all()
    assert "cannot rank" in terms.task_verdict(table, "model")


def test_the_replicate_is_spearman_brown_corrected_on_pearson_columns_only():
    halves = pd.DataFrame({"pearson": [0.5, 0.0], "discrimination_l1": [0.5, 0.8], "r2": [0.3, 0.1]})
    out = sc.corrected_replicate(halves)
    np.testing.assert_allclose(out["pearson"], [2 * 0.5 / 1.5, 0.0])
    pd.testing.assert_series_equal(out["discrimination_l1"], halves["discrimination_l1"])
    pd.testing.assert_series_equal(out["r2"], halves["r2"])


def test_every_method_is_averaged_over_the_same_labels():
    """Three of six held-out pairs lack a single in the file: no additive prediction. The model is
    not averaged over six pairs while additivity is over three (issue 34): all over the three."""
    labels = list("abcdef")
    nan = float("nan")
    per_label = _per_label(
        {
            "model": [0.9, 0.9, 0.9, 0.1, 0.1, 0.1],
            "additive": [0.5, 0.6, 0.7, nan, nan, nan],
            "control_baseline": [nan] * 6,  # scores no Pearson anywhere: stays NaN, leaves none out
        },
        labels,
    )
    replicate = pd.DataFrame({"pearson": [0.95] * 6}, index=labels)
    table = sc.scaled_table(sc.PAIRS, per_label, replicate, ("additive",), models=("model",)).set_index(
        "method"
    )
    assert table.loc["model", "mean"] == pytest.approx(0.9) and table.loc[
        "additive", "mean"
    ] == pytest.approx(0.6)
    assert (table.loc[["model", "additive", sc.REPLICATE], "n"] == 3).all() and (
        table["n_left_out"] == 3
    ).all()
    assert "3 more left out" in terms.headline_lines(table.reset_index(), "model")[0]


def test_no_verdict_from_fewer_labels_than_the_minimum():
    """One held-out pair gave "model beats the best baseline beyond its interval" with the
    interval [0.61, 0.61]: below MIN_LABELS the verdict says the task ranks nothing, and how to
    score more."""
    for n in (1, terms.MIN_LABELS - 1):
        labels = [f"p{i}" for i in range(n)]
        per_label = _per_label({"model": [0.9] * n, "additive": [0.2] * n}, labels)
        replicate = pd.DataFrame({"pearson": [0.95] * n}, index=labels)
        table = sc.scaled_table(sc.PAIRS, per_label, replicate, ("additive",), models=("model",))
        verdict = terms.task_verdict(table, "model")
        assert verdict.startswith(f"only {n} label") and "beats" not in verdict
        assert table["scaled"].isna().all() and table["mean"].notna().all()  # the raw numbers only
        assert "heldout_fraction" in verdict


def _noisy_headroom_table() -> pd.DataFrame:
    """Eight unseen genes whose replicate is 0.014 above the baseline, both noisy at ±0.2."""
    rng = np.random.default_rng(1)
    labels = [f"g{i}" for i in range(8)]
    baseline = rng.normal(0.55, 0.2, size=8)
    per_label = _per_label({"model": baseline - 0.1, "control_baseline": baseline}, labels)
    replicate = pd.DataFrame({"pearson": baseline + rng.normal(0.014, 0.2, size=8)}, index=labels)
    return sc.scaled_table(sc.SINGLES, per_label, replicate, ("control_baseline",), models=("model",))


def test_a_headroom_the_labels_cannot_tell_from_zero_leaves_no_scale():
    """A replicate 0.014 above the baseline on noisy labels gave scores of -40 [-59, 60]: where the
    headroom's interval reaches 0 there is no scale, and the verdict says why."""
    table = _noisy_headroom_table()
    first = table.iloc[0]
    assert first["headroom_low"] <= 0 < first["headroom_high"]
    assert table["scaled"].isna().all()
    assert "not reliably above the baseline" in terms.task_verdict(table, "model")


def test_the_verdict_reads_the_scaled_file_as_the_report_does(tmp_path):
    """The report reads scaled_scores.csv back: a task without a scale must still get its sentence
    (the headroom's interval came back as text and the report failed)."""
    from gpo_vae.report.tables import SPECS, _read_csv

    table = _noisy_headroom_table()
    path = tmp_path / sc.SCALED_FILE
    table.to_csv(path, index=False)
    read = _read_csv(path, SPECS["scaled_scores"])
    assert "not reliably above the baseline" in terms.task_verdict(read, "model")
    assert "8 labels" in terms.labels_phrase(read)
