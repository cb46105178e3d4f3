"""Prediction metrics, QC pass ratio and summary-statistics agreement against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import r2_score

from gpo_vae.evaluation.metrics import (
    prediction_metrics,
    qc_pass_ratio,
    row_pearson,
    row_r2,
    summarise_metrics,
    summary_stats_agreement,
    top_k_indices,
)
from gpo_vae.preprocessing.qc import fit_qc_thresholds

GENES = ["g0", "g1", "g2", "g3", "g4"]


def _frame(rows: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(rows, orient="index", columns=GENES)


def test_row_pearson_and_r2_match_scipy_and_sklearn() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 40)), rng.normal(size=(6, 40))
    b[2] = a[2] * 3 + 1
    for i in range(6):
        assert row_pearson(a, b)[i] == pytest.approx(stats.pearsonr(a[i], b[i]).statistic, rel=1e-12)
        assert row_r2(a, b)[i] == pytest.approx(r2_score(a[i], b[i]), rel=1e-12)
    constant = np.ones((1, 5))
    assert np.isnan(row_pearson(constant, a[:1, :5])[0]) and np.isnan(row_r2(constant, a[:1, :5])[0])


def test_top_k_indices_by_absolute_value() -> None:
    values = np.array([[0.1, -5.0, 3.0, 0.2], [1.0, 0.0, -0.5, 2.0]])
    assert [sorted(row) for row in top_k_indices(values, 2).tolist()] == [[1, 2], [0, 3]]
    assert top_k_indices(values, 10).shape == (2, 4)  # k capped at the number of genes


def test_prediction_metrics_hand_case() -> None:
    true = _frame({"P": [4, -3, 2, 1, 0], "Q": [1, 2, 3, 4, 5]})
    pred = _frame({"P": [2, -1, 0, 0.5, 3], "Q": [1, 2, 3, 4, 5]})
    got = prediction_metrics(true, pred, top_de=2, jaccard_ks=(2, 3))
    # all genes: t − t̄ = [3.2, −3.8, 1.2, 0.2, −0.8], p − p̄ = [1.1, −1.9, −0.9, −0.4, 2.1]
    # Σ products 7.9, Σ(t − t̄)² 26.8, Σ(p − p̄)² 10.2, Σ(t − p)² 21.25
    assert got.loc["P", "pearson"] == pytest.approx(7.9 / np.sqrt(26.8 * 10.2))
    assert got.loc["P", "r2"] == pytest.approx(1 - 21.25 / 26.8)
    # top-2 by |true|: g0, g1 → true [4, −3], pred [2, −1]: r = 1, R² = 1 − 8 / 24.5
    assert got.loc["P", "pearson_top2"] == pytest.approx(1.0)
    assert got.loc["P", "r2_top2"] == pytest.approx(1 - 8 / 24.5)
    # top-2 sets {g0, g1} vs {g4, g0} → 1/3; top-3 {g0, g1, g2} vs {g4, g0, g1} → 2/4
    assert got.loc["P", "jaccard_top2"] == pytest.approx(1 / 3)
    assert got.loc["P", "jaccard_top3"] == pytest.approx(0.5)
    assert (got.loc["Q"] == 1.0).all()
    assert list(got.columns) == ["pearson", "r2", "pearson_top2", "r2_top2", "jaccard_top2", "jaccard_top3"]


def test_prediction_metrics_alignment_and_nan_rows() -> None:
    true = _frame({"P": [4, -3, 2, 1, 0], "Q": [1, 2, 3, 4, 5], "R": [0, 1, np.nan, 1, 0]})
    pred = _frame({"Q": [1, 2, 3, 4, 5], "P": [4, -3, 2, 1, 0], "R": [0, 1, 2, 1, 0], "S": [1, 1, 1, 1, 1]})
    got = prediction_metrics(true, pred[GENES[::-1]])  # columns reordered by name
    assert list(got.index) == ["P", "Q", "R"]
    assert (got.loc[["P", "Q"], "pearson"] == 1.0).all()
    assert got.loc["R"].isna().all()
    with pytest.raises(ValueError, match="different genes"):
        prediction_metrics(true, pred.rename(columns={"g0": "x"}))
    with pytest.raises(ValueError, match="share no perturbation"):
        prediction_metrics(true.loc[["P"]], pred.loc[["S"]])


def test_zero_prediction_r2() -> None:
    true = _frame({"P": [4, -3, 2, 1, 0]})
    got = prediction_metrics(true, true * 0, top_de=2, jaccard_ks=())
    assert np.isnan(got.loc["P", "pearson"])
    assert got.loc["P", "r2"] == pytest.approx(1 - 30 / 26.8)  # Σt² = 30


def test_summarise_metrics() -> None:
    frame = pd.DataFrame({"pearson": [0.2, 0.4, np.nan, 0.9], "r2": [0.0, 1.0, 2.0, 3.0]})
    got = summarise_metrics(frame)
    assert got.loc["pearson", "mean"] == pytest.approx(0.5)
    assert got.loc["pearson", "median"] == pytest.approx(0.4)
    assert got.loc["pearson", "n"] == 3 and got.loc["r2", "median"] == pytest.approx(1.5)


THRESHOLDS = {
    3: {
        "total_counts": ("low", 100.0),
        "n_genes_by_counts": ("low", 50.0),
        "pct_counts_mt": ("high", 10.0),
        "pct_counts_ribo": ("high", 30.0),
        "pct_counts_hb": ("high", 1.0),
    },
    5: {
        "total_counts": ("low", 80.0),
        "n_genes_by_counts": ("low", 40.0),
        "pct_counts_mt": ("high", 15.0),
        "pct_counts_ribo": ("high", 40.0),
        "pct_counts_hb": ("high", 2.0),
    },
}


def _qc_metrics() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "total_counts": [500.0, 90.0, 500.0, 500.0],
            "n_genes_by_counts": [200.0, 60.0, 200.0, 200.0],
            "pct_counts_mt": [5.0, 5.0, 12.0, 10.0],  # the last sits on the threshold: passes
            "pct_counts_ribo": [10.0, 10.0, 10.0, 10.0],
            "pct_counts_hb": [0.0, 0.0, 0.0, 0.0],
        }
    )


def test_qc_pass_ratio_hand_case_and_threshold_forms() -> None:
    got = qc_pass_ratio(_qc_metrics(), THRESHOLDS)
    assert got.to_dict() == {3.0: 0.5, 5.0: 1.0}
    assert got.name == "qc_pass_ratio"
    assert qc_pass_ratio(_qc_metrics(), THRESHOLDS, nmads=[5]).to_dict() == {5.0: 1.0}
    fitted = fit_qc_thresholds(_qc_metrics(), nmads=(3, 4))
    pd.testing.assert_series_equal(
        qc_pass_ratio(_qc_metrics(), fitted), qc_pass_ratio(_qc_metrics(), fitted.to_dict())
    )
    with pytest.raises(ValueError, match="side"):
        qc_pass_ratio(_qc_metrics(), {3: {**THRESHOLDS[3], "pct_counts_mt": ("low", 10.0)}})
    with pytest.raises(ValueError, match="no stored thresholds"):
        qc_pass_ratio(_qc_metrics(), THRESHOLDS, nmads=[4])


def test_summary_stats_agreement_hand_case() -> None:
    pred_kd = pd.Series({"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0, "only_pred": 9.0})
    reported_kd = pd.Series({"A": 10.0, "B": 20.0, "C": 40.0, "D": 30.0, "only_rep": 1.0})
    pred_ndeg = pd.Series({"A": 5.0, "B": 6.0})
    reported_ndeg = pd.Series({"A": 1.0, "B": 2.0, "C": 3.0})
    got = summary_stats_agreement(pred_kd, reported_kd, pred_ndeg, reported_ndeg)
    # ranks [1, 2, 3, 4] vs [1, 2, 4, 3]: Σd² = 2 → ρ = 1 − 6·2 / (4·15) = 0.8
    assert got["knockdown_spearman"] == pytest.approx(0.8)
    assert got["knockdown_n"] == 4
    assert np.isnan(got["ndeg_spearman"]) and got["ndeg_n"] == 2
