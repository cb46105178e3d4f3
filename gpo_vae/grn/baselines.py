"""Baseline GRNs as T × T score matrices (design §8), for the same tables as the model's mask.

- :func:`correlation_scores`: ``|Pearson r|`` between the ΔX columns of two nodes across cells
  (symmetric, so it cannot orient an edge: the honest floor for "co-varies").
- :func:`random_scores`: seeded uniform scores (the chance level of every curve and statistic).
- :func:`mask_scores`: any other method's scores (a SAMS-VAE or GPO-VAE mask), checked.
- :func:`deconvolution_scores`: network deconvolution (Feizi et al., Nat Biotechnol 2013) of a
  total-effect matrix: the direct part ``G (I + G)⁻¹`` of ``G = D + D² + …``.
- :func:`sparse_inverse_scores`: an inspre-style sparse approximate inverse ``V`` of the
  perturbed block of the signed effect matrix (Brown et al., Nat Commun 2025), ``G = I − V / diag V``.
- :func:`network_scores`: a known network given as a graph (the prior-knowledge baseline).

Every evaluation ignores the diagonal (self-loops), so the baselines leave it as computed.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp

# ΔX rows converted to float64 at once: bounds the temporaries (~4M values ≈ 32 MB).
_BLOCK_VALUES = 1 << 22


def correlation_scores(delta_x: Any) -> np.ndarray:
    """``|corr(ΔX[:, i], ΔX[:, j])|`` over cells (N × T in, T × T out, float64).

    ``delta_x``: an array, or a matrix read by row slices whose blocks may come back sparse (a
    :class:`~gpo_vae.data.on_disk.CountsOnDisk`). Two passes over row blocks (means, then the
    centred cross-products) in float64, so an N × T float32 matrix is never copied whole, and
    one on disk is never read whole. A constant column correlates 0 with everything.
    """
    X = delta_x if hasattr(delta_x, "row_blocks") else np.asarray(delta_x)
    if len(X.shape) != 2 or X.shape[0] < 2:
        raise ValueError(f"need an N × T matrix with N ≥ 2, got shape {X.shape}")
    n, t = X.shape
    step = max(1, _BLOCK_VALUES // max(t, 1))

    def rows(start: int) -> np.ndarray:
        block = X[start : start + step]
        return block.toarray() if sp.issparse(block) else block

    mean = np.zeros(t)
    for start in range(0, n, step):
        mean += rows(start).sum(axis=0, dtype=np.float64)
    mean /= n
    cross = np.zeros((t, t))
    for start in range(0, n, step):
        block = rows(start).astype(np.float64) - mean
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


#: Largest eigenvalue of the deconvolved graph (Feizi's β). Their default 0.9 suits a symmetric
#: matrix; on a directed |effect| matrix it scales the observed graph to spectral radius 9, where
#: ``I + G`` is near-singular for its complex eigenvalues (AUPRC 0.05–0.09 on the default screen).
DECONVOLUTION_BETA = 0.5
#: L1 weight of the sparse inverse, on the effect block scaled to a largest |entry| of 1.
SPARSE_INVERSE_ALPHA = 1e-3


def deconvolution_scores(total: np.ndarray, beta: float = DECONVOLUTION_BETA) -> np.ndarray:
    """|direct part| of a non-negative total-effect score matrix (T × T in and out, float64).

    The observed graph ``G`` (diagonal zeroed) is scaled so that its spectral radius ρ becomes
    ``β / (1 − β)``; then ``D = G (I + G)⁻¹`` inverts ``G = D + D² + …`` (paths of every length),
    whose largest eigenvalue is β. A graph whose paths have ρ = 0 (acyclic) is not scaled: there
    the inversion is exact for path sums of any size. A zero matrix stays zero.
    """
    observed = np.abs(np.asarray(total, dtype=np.float64))
    np.fill_diagonal(observed, 0.0)
    largest = float(observed.max()) if observed.size else 0.0
    if largest == 0.0:
        return observed
    radius = float(np.abs(np.linalg.eigvals(observed)).max())
    # an acyclic graph's paths have spectral radius 0: its total effects are deconvolved unscaled
    factor = beta / ((1.0 - beta) * radius) if radius > 1e-6 * largest else 1.0
    scaled = observed * factor
    identity = np.eye(len(scaled))
    direct = np.abs(np.linalg.lstsq((identity + scaled).T, scaled.T, rcond=None)[0].T)
    np.fill_diagonal(direct, 0.0)
    return direct


def sparse_inverse_scores(
    effects: np.ndarray, n_perturbed: int, alpha: float = SPARSE_INVERSE_ALPHA
) -> np.ndarray:
    """|direct effects| from a sparse approximate inverse of the signed effect matrix (T × T).

    ``effects`` is T × T with the perturbed nodes' rows first (e.g. effect z-scores: effects
    weighted by their standard errors). With ``A`` its perturbed block (P × P), each column of
    ``V ≈ A⁻¹`` is a lasso fit of ``A v = e_j``; the direct graph among perturbed nodes is
    ``I − V / diag V`` (inspre's ``G``), and the edges to other nodes are ``V E_PH``: the total
    effects with the paths through perturbed nodes removed (``V`` undoes each row's unknown
    knock-down strength too). Rows
    of unperturbed nodes are 0; the row and column of a node whose ``V_jj`` is 0 too.
    """
    from sklearn.linear_model import Lasso

    matrix = np.asarray(effects, dtype=np.float64)
    n_nodes = matrix.shape[0]
    out = np.zeros((n_nodes, n_nodes))
    p = min(int(n_perturbed), n_nodes)
    if p == 0:
        return out
    scale = float(np.abs(matrix[:p, :p]).max())
    if scale == 0.0:
        return out
    block = matrix[:p] / scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a weak knock-down leaves a column barely determined
        # one lasso per column of the identity (sklearn fits the targets independently)
        fit = Lasso(alpha=alpha, fit_intercept=False, max_iter=10_000).fit(block[:, :p], np.eye(p))
    inverse = np.asarray(fit.coef_, dtype=np.float64).reshape(p, p).T
    diagonal = np.diag(inverse).copy()
    usable = np.abs(diagonal) > 1e-12
    safe = np.where(usable, diagonal, 1.0)
    among = -inverse / safe[None, :]
    among[:, ~usable] = 0.0
    out[:p, :p] = among
    out[:p, p:] = inverse @ block[:, p:]
    out[:p][~usable] = 0.0
    np.fill_diagonal(out, 0.0)
    return np.abs(out)


def network_scores(adjacency: np.ndarray) -> np.ndarray:
    """A known network as a method's scores: 1 for its edges, 0 elsewhere (T × T, float64)."""
    return np.asarray(adjacency, dtype=np.float64)
