"""Edge tables, precision/recall and ranking metrics against hand-computed cases and chance levels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_recall_curve

from gpo_vae.grn.baselines import random_scores
from gpo_vae.grn.curves import (
    edge_precision_recall,
    edges_from_probabilities,
    graph_adjacency,
    pair_mask,
    precision_recall_table,
    rank_edges,
    ranking_metrics,
)

NODES = ["a", "b", "c"]
P = np.array([[0.9, 0.7, 0.2], [0.6, 0.1, 0.7], [0.55, 0.3, 0.99]])


def test_edge_table_by_hand() -> None:
    got = edges_from_probabilities(P, NODES)
    expected = pd.DataFrame(
        {"source": ["a", "b", "b", "c"], "target": ["b", "a", "c", "a"], "p": [0.7, 0.6, 0.7, 0.55]}
    )
    # sorted by p descending, ties (a→b, b→c at 0.7) in row-major order; diagonal 0.9/0.99 dropped
    expected = expected.iloc[[0, 2, 1, 3]].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    everything = edges_from_probabilities(P, NODES, threshold=None)
    assert len(everything) == 6 and everything["p"].is_monotonic_decreasing
    assert not (everything["source"] == everything["target"]).any()


def test_rank_edges_skips_diagonal_and_nan() -> None:
    scores = P.copy()
    scores[0, 2] = np.nan
    assert rank_edges(scores).tolist() == [1, 5, 3, 6, 7]


def test_precision_recall_by_hand_and_restriction() -> None:
    predicted = np.array([[1, 1, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    reference = np.array([[0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=bool)
    got = edge_precision_recall(predicted, reference)
    # predicted off-diagonal: (0,1) (0,3) (1,2) (2,0) → 4; reference (0,1) (0,2) (1,2) (3,0) → 4; TP 2
    assert (got["n_predicted"], got["n_reference"], got["true_positives"]) == (4, 4, 2)
    assert got["precision"] == 0.5 and got["recall"] == 0.5 and got["reason"] == ""
    first3 = edge_precision_recall(predicted, reference, restrict=[0, 1, 2])
    # among nodes 0–2: predicted (0,1) (1,2) (2,0), reference (0,1) (0,2) (1,2)
    assert first3["precision"] == pytest.approx(2 / 3) and first3["recall"] == pytest.approx(2 / 3)
    assert first3["n_pairs"] == 6
    mask = np.array([True, True, True, False])
    pd.testing.assert_series_equal(edge_precision_recall(predicted, reference, restrict=mask), first3)


def test_no_reference_edge_gives_nan_with_reason() -> None:
    empty = np.zeros((3, 3), dtype=bool)
    got = edge_precision_recall(np.ones((3, 3), dtype=bool), empty)
    assert np.isnan(got["recall"]) and got["precision"] == 0.0 and "no reference edge" in got["reason"]
    none_predicted = edge_precision_recall(empty, np.eye(3, k=1, dtype=bool))
    assert np.isnan(none_predicted["precision"]) and "no predicted edge" in none_predicted["reason"]
    metrics = ranking_metrics(P, empty)
    assert (
        np.isnan(metrics["auprc"]) and np.isnan(metrics["auroc"]) and "no reference edge" in metrics["reason"]
    )
    assert precision_recall_table(P, empty).empty


def test_true_graph_scores_one_random_scores_chance() -> None:
    n = 200
    truth = np.random.default_rng(123).random((n, n)) < 0.05
    perfect = ranking_metrics(truth.astype(float), truth)
    assert perfect["auprc"] == 1.0 and perfect["auroc"] == 1.0
    chance = ranking_metrics(random_scores(n, seed=0), truth)
    # 39,800 pairs, ~1,970 positives: over 40 seeds AP − rate had SD 0.0009 and AUROC SD 0.0063
    # (theory sqrt((n₊ + n₋ + 1) / (12 n₊ n₋)) = 0.0066), so these bounds are ≥ 4.5 SD wide
    assert abs(chance["auprc"] - chance["positive_rate"]) < 0.005
    assert abs(chance["auroc"] - 0.5) < 0.03
    assert chance["n_pairs"] == n * (n - 1)


def test_precision_recall_table_is_sklearns_curve() -> None:
    truth = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=bool)
    got = precision_recall_table(P, truth)
    mask = pair_mask(3)
    precision, recall, thresholds = precision_recall_curve(truth[mask], P[mask])
    np.testing.assert_allclose(got["precision"], precision)
    np.testing.assert_allclose(got["recall"], recall)
    np.testing.assert_allclose(got["threshold"].iloc[:-1], thresholds)
    with pytest.raises(ValueError, match="NaN"):
        precision_recall_table(np.full((3, 3), np.nan), truth)


def test_graph_adjacency_forms() -> None:
    nodes = pd.Index(NODES)
    frame = pd.DataFrame({"source": ["a", "c"], "target": ["b", "a"]})
    expected = np.zeros((3, 3), dtype=bool)
    expected[0, 1] = expected[2, 0] = True
    assert np.array_equal(graph_adjacency(frame, nodes), expected)
    assert np.array_equal(graph_adjacency([("a", "b"), ("c", "a")], nodes), expected)
    assert np.array_equal(graph_adjacency(expected.astype(int), nodes), expected)
    with pytest.raises(ValueError, match="outside nodes"):
        graph_adjacency([("a", "z")], nodes)
