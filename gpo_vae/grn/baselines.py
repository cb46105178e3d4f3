"""Baseline GRNs as T × T score matrices (design §8), for the same tables as the model's mask.

- :func:`correlation_scores`: ``|Pearson r|`` between the ΔX columns of two nodes across cells
  (symmetric, so it cannot orient an edge: the honest floor for "co-varies").
- :func:`random_scores`: seeded uniform scores (the chance level of every curve and statistic).
- :func:`mask_scores`: any other method's scores (a SAMS-VAE or GPO-VAE mask), checked.

Every evaluation ignores the diagonal (self-loops), so the baselines leave it as computed.
"""

from __future__ import annotations

import numpy as np

# ΔX rows converted to float64 at once: bounds the temporaries (~4M values ≈ 32 MB).
_BLOCK_VALUES = 1 << 22


def correlation_scores(delta_x: np.ndarray) -> np.ndarray:
    """``|corr(ΔX[:, i], ΔX[:, j])|`` over cells (N × T in, T × T out, float64).

    Two passes over row blocks (means, then the centred cross-products) in float64, so an
    N × T float32 matrix is never copied whole. A constant column correlates 0 with everything.
    """
    X = np.asarray(delta_x)
    if X.ndim != 2 or X.shape[0] < 2:
        raise ValueError(f"need an N × T matrix with N ≥ 2, got shape {X.shape}")
    n, t = X.shape
    step = max(1, _BLOCK_VALUES // max(t, 1))
    mean = np.zeros(t)
    for start in range(0, n, step):
        mean += X[start : start + step].sum(axis=0, dtype=np.float64)
    mean /= n
    cross = np.zeros((t, t))
    for start in range(0, n, step):
        block = X[start : start + step].astype(np.float64) - mean
        cross += block.T @ block
    scale = np.sqrt(np.diag(cross))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cross / np.outer(scale, scale)
    corr[~np.isfinite(corr)] = 0.0
    return np.clip(np.abs(corr), 0.0, 1.0)


def random_scores(n_nodes: int, seed: int = 0) -> np.ndarray:
    """Uniform ``[0, 1)`` scores from ``numpy.random.default_rng(seed)``, T × T."""
    return np.random.default_rng(seed).random((n_nodes, n_nodes))


def mask_scores(scores: np.ndarray, n_nodes: int | None = None) -> np.ndarray:
    """A method's T × T scores (e.g. SAMS-VAE mask probabilities) as a checked float64 copy."""
    matrix = np.array(scores, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"need a square T × T score matrix, got shape {matrix.shape}")
    if n_nodes is not None and matrix.shape[0] != n_nodes:
        raise ValueError(f"score matrix of shape {matrix.shape} for {n_nodes} nodes")
    if not np.isfinite(matrix).all():
        raise ValueError("scores hold NaN or infinite values")
    return matrix
