"""The edge threshold of a mask that started at the threshold, and how far training moved a mask
(gpo_vae.grn.calibration), on small matrices with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from gpo_vae.grn.calibration import calibrated_threshold, mask_movement, uniform_start


def _published_mask(seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """30 nodes (the first 10 perturbed) started at 0.5; every pair moved by noise (mostly down,
    0.5 − 0.1 ± 0.1, as under a sparsity penalty), five rose to 0.9."""
    rng = np.random.default_rng(seed)
    probabilities = np.clip(0.4 + rng.normal(0.0, 0.1, size=(30, 30)), 0.01, 0.85)
    real = [(0, 1), (2, 5), (7, 3), (9, 20), (1, 4)]
    for source, target in real:
        probabilities[source, target] = 0.9
    return probabilities, real


def test_a_mask_started_at_the_threshold_keeps_its_top_density_of_pairs():
    probabilities, real = _published_mask()
    start = np.full_like(probabilities, 0.5)
    off = ~np.eye(30, dtype=bool)
    assert int((probabilities[off] > 0.5).sum()) > 100, "p > 0.5 takes the noise"
    threshold = calibrated_threshold(probabilities, start, 0.5, density=0.02, n_perturbed=10)
    graph = (probabilities > threshold) & off
    assert (
        int(graph.sum()) == round(0.02 * 10 * 29) == 6
    )  # the top 2 % of the 290 pairs from a perturbed gene
    assert set(real) <= set(zip(*np.nonzero(graph), strict=True))
    assert (
        calibrated_threshold(probabilities, start, 0.5, density=1.0, n_perturbed=30)
        < probabilities[off].min()
    )


def test_the_threshold_stays_where_the_start_was_not_the_threshold():
    probabilities, _ = _published_mask()
    assert calibrated_threshold(probabilities, np.full_like(probabilities, 0.2), 0.5, 0.05, 10) == 0.5
    effects = np.random.default_rng(1).uniform(0.01, 0.99, size=probabilities.shape)
    assert uniform_start(effects) is None
    assert calibrated_threshold(probabilities, effects, 0.5, 0.05, 10) == 0.5
    # the diagonal is no edge: a uniform start is read off the off-diagonal pairs
    start = np.full((4, 4), 0.5)
    np.fill_diagonal(start, np.nan)
    assert uniform_start(start) == 0.5


def test_mask_movement_counts_the_edges_kept_from_the_start_saturation_and_hubs():
    initial = np.array(
        [[0.0, 0.9, 0.9, 0.1], [0.1, 0.0, 0.1, 0.1], [0.1, 0.1, 0.0, 0.9], [0.1, 0.1, 0.1, 0.0]]
    )
    trained = np.array(
        [[0.0, 0.995, 0.6, 0.7], [0.1, 0.0, 0.1, 0.1], [0.1, 0.1, 0.0, 0.2], [0.1, 0.1, 0.1, 0.0]]
    )
    moved = mask_movement(trained, initial, 0.5)
    assert moved["grn_edges_at_start"] == 3  # 0→1, 0→2, 2→3
    assert moved["grn_edges_kept_from_start"] == 2  # 0→1, 0→2 (2→3 fell, 0→3 is new)
    assert moved["grn_saturated_edges"] == 1  # 0→1 at 0.995
    assert moved["grn_hub_share"] == 1.0  # every edge leaves node 0
    changes = np.abs(trained - initial)[~np.eye(4, dtype=bool)]
    assert moved["grn_mask_median_change"] == pytest.approx(np.median(changes))
