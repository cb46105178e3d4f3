"""Matched-K ranking of GRN methods: precision at K by hand, ranks, and the verdict sentence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpo_vae.grn.curves import tied_at_k
from gpo_vae.grn.ranking import matched_k_ranking, ranking_numbers, ranking_sentence, top_k_precision


def test_top_k_precision_counts_reference_edges_among_the_k_best_pairs():
    scores = np.array([[0.0, 0.9, 0.1], [0.8, 0.0, 0.7], [0.2, 0.3, 0.0]])
    reference = np.array([[False, True, False], [False, False, True], [False, False, False]])
    pairs = ~np.eye(3, dtype=bool)
    # ranked: (0,1) edge, (1,0) not, (1,2) edge, (2,1) not, ...
    assert top_k_precision(scores, reference, pairs, 1) == 1.0
    assert top_k_precision(scores, reference, pairs, 2) == 0.5
    assert top_k_precision(scores, reference, pairs, 3) == pytest.approx(2 / 3)
    assert np.isnan(top_k_precision(scores, reference, pairs, 7))  # 6 pairs only


def _tables(model_auprc: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    methods = ["model", "effect_z", "deconvolution", "random"]
    auprc = [model_auprc, 0.6, 0.65, 0.05]
    statistical = pd.DataFrame(
        [
            {"method": m, "k": k, "mean_wasserstein": w, "false_omission_rate": 0.1}
            for m, w in zip(methods, [0.3, 0.2, 0.25, 0.01], strict=True)
            for k in ("p>0.5", "40", "1000")
        ]
    )
    reference = pd.DataFrame(
        {
            "method": methods * 2,
            "network": ["true_network"] * 4 + ["string"] * 4,
            "auprc": auprc + [0.1] * 4,
            "precision": [0.7, 0.5, 0.55, 0.04] + [0.1] * 4,
            "precision_at_1000": [0.2] * 8,
        }
    )
    return statistical, reference


def test_methods_are_ranked_by_auprc_against_the_true_network_at_the_models_k():
    statistical, reference = _tables(0.7)
    ranking = matched_k_ranking(statistical, reference, 40)
    assert ranking["method"].tolist() == ["model", "deconvolution", "effect_z", "random"]
    assert ranking["rank"].tolist() == [1, 2, 3, 4]
    assert (ranking["reference"] == "true_network").all() and (ranking["k"] == 40).all()
    assert ranking.set_index("method").loc["effect_z", "precision_at_k"] == 0.5
    numbers = ranking_numbers(ranking)
    assert numbers["grn_model_rank"] == 1
    assert numbers["grn_model_minus_best_baseline"] == pytest.approx(0.05)
    assert numbers["grn_deconvolution_mean_wasserstein"] == 0.25


@pytest.mark.parametrize(
    ("model_auprc", "verb", "tone"),
    [(0.7, "beats", "good"), (0.6502, "ties with", "neutral"), (0.5, "loses to", "bad")],
)
def test_the_sentence_says_beats_ties_or_loses_against_the_best_baseline(model_auprc, verb, tone):
    statistical, reference = _tables(model_auprc)
    text, found = ranking_sentence(matched_k_ranking(statistical, reference, 40), {"deconvolution": "ND"})
    assert found == tone
    assert f"it {verb} the best baseline, ND (0.650)" in text
    assert "At matched K = 40 edges" in text and "against the true network" in text


def test_without_a_reference_network_methods_are_ranked_by_mean_wasserstein():
    statistical, _ = _tables(0.7)
    ranking = matched_k_ranking(statistical, None, 40)
    assert ranking["method"].tolist() == ["model", "deconvolution", "effect_z", "random"]
    assert (ranking["ranked_by"] == "mean_wasserstein").all() and ranking["auprc"].isna().all()
    text, tone = ranking_sentence(ranking)
    assert "mean Wasserstein distance" in text and tone == "good"


def test_a_reference_without_edges_among_the_pairs_gives_no_precision():
    statistical, reference = _tables(0.7)
    reference["auprc"] = np.nan  # no reference edge among the pairs scored
    reference["precision"] = 0.0
    ranking = matched_k_ranking(statistical, reference, 40)
    assert ranking["precision_at_k"].isna().all()
    assert (ranking["ranked_by"] == "mean_wasserstein").all()


def test_tied_at_k_counts_the_top_k_edges_picked_by_pair_order():
    assert tied_at_k(np.array([0.9, 0.5, 0.5, 0.5, 0.1]), 1) == 0  # 0.9 is chosen by its score
    assert tied_at_k(np.array([0.9, 0.5, 0.5, 0.5, 0.1]), 2) == 1  # one of three 0.5s, by order
    assert tied_at_k(np.array([0.9, 0.5, 0.5, 0.5, 0.1]), 4) == 0  # all three 0.5s are in
    assert tied_at_k(np.zeros(10), 3) == 3  # a constant score chooses nothing
    assert tied_at_k(np.zeros(10), 10) == 0  # every pair is kept: nothing was chosen


def test_a_constant_score_gets_no_top_k_numbers_and_no_rank_without_a_reference():
    scores = np.zeros((4, 4))
    reference = np.zeros((4, 4), dtype=bool)
    reference[0, 1] = True  # the first pair in row-major order: order alone would score 1.0
    assert np.isnan(top_k_precision(scores, reference, ~np.eye(4, dtype=bool), 1))
    statistical, _ = _tables(0.7)
    statistical["tied"] = 0
    statistical.loc[(statistical["method"] == "effect_z") & (statistical["k"] == "40"), "tied"] = 40
    ranking = matched_k_ranking(statistical, None, 40).set_index("method")
    assert ranking.loc["effect_z", ["mean_wasserstein", "false_omission_rate"]].isna().all()
    assert np.isnan(ranking.loc["effect_z", "rank"]) and ranking.loc["effect_z", "tied_at_k"] == 40
    assert ranking.loc["deconvolution", "mean_wasserstein"] == 0.25  # the others keep theirs
    statistical.loc[statistical["k"] == "40", "tied"] = [20, 21, 0, 0]  # model, effect_z, …
    ranking = matched_k_ranking(statistical, None, 40).set_index("method")
    assert ranking.loc["model", "mean_wasserstein"] == 0.3  # half by order: still its own graph
    assert np.isnan(ranking.loc["effect_z", "mean_wasserstein"])  # most of it by order: none
