"""What a learned mask says beyond its own start: the edge threshold and how far training moved it.

The published model starts every mask probability at 0.5 and calls an edge where p > 0.5, so an
edge that rose by noise counts as much as one that rose for a reason (on the demo screen, hundreds
of edges at p 0.50–0.79, several times the true network). :func:`calibrated_threshold` keeps such a
mask's top share of pairs instead, at the density a sparse GRN is expected to have;
:func:`mask_movement` says how much of the graph training made (a mask started from effect
statistics may end where it began), whether the probabilities saturate, and whether a few genes
hold most edges.
"""

from __future__ import annotations

import numpy as np

#: A probability beyond this (or below 1 − this) is saturated: it no longer ranks edges.
SATURATED = 0.99


def _off_diagonal(matrix: np.ndarray) -> np.ndarray:
    values = np.asarray(matrix, dtype=np.float64)
    return values[~np.eye(values.shape[0], values.shape[1], dtype=bool)]


def uniform_start(initial: np.ndarray) -> float | None:
    """The probability every edge started at, or None when the start was not uniform (a mask
    initialised from effect statistics)."""
    values = _off_diagonal(initial)
    if values.size and np.allclose(values, values[0], rtol=0, atol=1e-9):
        return float(values[0])
    return None


def calibrated_threshold(
    probabilities: np.ndarray, initial: np.ndarray, threshold: float, density: float, n_perturbed: int
) -> float:
    """The probability an edge must exceed.

    ``threshold`` itself, unless every edge started at it (the published start, p = 0.5 with the
    threshold 0.5): then the probability that keeps the mask's top ``density`` share of the
    pairs from a perturbed gene (``n_perturbed`` × (T − 1)), the density a sparse GRN is expected
    to have. Training under a sparsity penalty moves most probabilities down and a spread of
    them up by noise, so no threshold near the start separates edges from noise; a density
    does not depend on how far the probabilities moved.
    """
    start = uniform_start(initial)
    if start is None or abs(start - threshold) > 1e-9:
        return float(threshold)
    values = np.sort(_off_diagonal(probabilities))[::-1]
    k = round(density * n_perturbed * (np.shape(probabilities)[0] - 1))
    if k <= 0:
        return float(values[0]) if values.size else float(threshold)
    if k >= values.size:
        return float(np.nextafter(values[-1], -np.inf))
    return float(values[k])  # p > the (k+1)-th largest keeps the top k (ties aside)


def mask_movement(probabilities: np.ndarray, initial: np.ndarray, threshold: float) -> dict[str, float]:
    """How the mask's graph (``p > threshold``) relates to its start (``run.json`` metrics).

    Keys: ``grn_threshold``; ``grn_mask_median_change`` (median |p − p_start| over off-diagonal
    pairs); ``grn_edges_at_start`` and ``grn_edges_kept_from_start`` (edges above the threshold
    before training, and of them those still there); ``grn_saturated_edges`` (edges at
    p > 0.99); ``grn_hub_share`` (the share of edges leaving the two sources with the most).
    """
    now = np.asarray(probabilities, dtype=np.float64) > threshold
    before = np.asarray(initial, dtype=np.float64) > threshold
    np.fill_diagonal(now, False)
    np.fill_diagonal(before, False)
    n_edges = int(now.sum())
    change = np.abs(_off_diagonal(probabilities) - _off_diagonal(initial))
    out_degree = now.sum(axis=1)
    top = np.argsort(-out_degree, kind="stable")[:2]
    return {
        "grn_threshold": float(threshold),
        "grn_mask_median_change": float(np.median(change)) if change.size else float("nan"),
        "grn_edges_at_start": int(before.sum()),
        "grn_edges_kept_from_start": int((now & before).sum()),
        "grn_saturated_edges": int((np.asarray(probabilities)[now] > SATURATED).sum()),
        "grn_hub_share": float(out_degree[top].sum() / n_edges) if n_edges else float("nan"),
    }


__all__ = ["SATURATED", "calibrated_threshold", "mask_movement", "uniform_start"]
