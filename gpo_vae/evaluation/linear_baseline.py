"""The linear model on perturbation embeddings of Ahlmann-Eltze, Huber & Anders (Nat Methods 2025).

On unseen single perturbations (Adamson, Replogle K562/RPE1) this model, fitted to the training
perturbations alone, beat every deep model they tested; it is the bar a model of unseen genes
must clear. With ``Y`` the training ATE (genes × seen perturbations), fitted as

    Y ≈ G W Pᵀ + b

- ``b``: each gene's mean over the seen perturbations (the "mean of the training perturbations"),
- ``G`` (genes × K): the gene embedding, the first ``K`` left singular vectors of ``Y − b``
  scaled by their singular values (the truncated SVD of the centred training data),
- ``P`` (perturbations × K): each perturbation's embedding, the rows of ``G`` of its target genes
  (summed for an ``A+B`` pair),
- ``W = (GᵀG + λI)⁻¹ Gᵀ (Y − b) P (PᵀP + λI)⁻¹``, the ridge solution of the bilinear fit.

A label is predicted as ``G W p + b`` with ``p`` its targets' summed embeddings; a label none of
whose targets is measured (no row in ``G``) gets ``b``. Their defaults: ``K = 10``, ``λ = 0.1``.
The paper fits expression and compares fold changes; fitting the ATE directly is the same model
(the control mean cancels).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from gpo_vae.data.labels import label_genes

logger = logging.getLogger(__name__)

LINEAR_EMBEDDING = "linear_embedding"
#: Ahlmann-Eltze et al.'s settings: principal components of the gene embedding, ridge penalty.
DEFAULT_PCA_DIM, DEFAULT_RIDGE = 10, 0.1


def gene_embedding(centered: np.ndarray, k: int) -> np.ndarray:
    """(genes × k) leading left singular vectors of ``centered`` (genes × perturbations, each gene
    centred over the perturbations) scaled by their singular values: its principal components."""
    u, s, _ = np.linalg.svd(centered, full_matrices=False)
    k = min(k, s.size)
    return u[:, :k] * s[:k]


def fit_linear_embedding(
    single_ate: pd.DataFrame, pca_dim: int = DEFAULT_PCA_DIM, ridge: float = DEFAULT_RIDGE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.Index]:
    """``(G, W, b, genes)`` of the linear model fitted to ``single_ate`` (seen perturbations × genes).

    Perturbations whose target is not measured have no embedding and are left out of the fit
    (they still count in ``b``); without any that has one, ``W`` is 0 (every prediction is ``b``).
    """
    genes = pd.Index(single_ate.columns.astype(str))
    values = single_ate.to_numpy(dtype=np.float64)
    values = np.where(np.isfinite(values), values, 0.0)
    center = values.mean(axis=0)
    Y = (values - center).T  # genes × perturbations
    G = gene_embedding(Y, pca_dim)
    position = {g: i for i, g in enumerate(genes)}
    rows, used = [], []
    for j, label in enumerate(single_ate.index.astype(str)):
        targets = [position[g] for g in label_genes(label) if g in position]
        if targets:
            rows.append(G[targets].sum(axis=0))
            used.append(j)
    k = G.shape[1]
    if not used:
        logger.warning(
            "linear embedding baseline: no seen perturbation targets a measured gene, so no "
            "perturbation has an embedding; it predicts the mean of the seen perturbations"
        )
        return G, np.zeros((k, k)), center, genes
    P = np.asarray(rows)  # perturbations × K
    left = np.linalg.solve(G.T @ G + ridge * np.eye(k), G.T @ Y[:, used])
    W = np.linalg.solve((P.T @ P + ridge * np.eye(k)).T, (left @ P).T).T
    return G, W, center, genes


def linear_embedding_prediction(
    labels: Sequence[str],
    single_ate: pd.DataFrame,
    pca_dim: int = DEFAULT_PCA_DIM,
    ridge: float = DEFAULT_RIDGE,
) -> pd.DataFrame:
    """Each label's predicted ATE by the linear embedding model (module docstring), labels × genes."""
    G, W, center, genes = fit_linear_embedding(single_ate, pca_dim, ridge)
    position = {g: i for i, g in enumerate(genes)}
    rows = []
    for label in labels:
        targets = [position[g] for g in label_genes(str(label)) if g in position]
        if not targets:
            rows.append(center)
            continue
        rows.append(G @ (W @ G[targets].sum(axis=0)) + center)
    return pd.DataFrame(
        np.asarray(rows).reshape(len(rows), len(genes)),
        index=pd.Index(list(labels), name="perturbation"),
        columns=single_ate.columns,
    )


__all__ = [
    "DEFAULT_PCA_DIM",
    "DEFAULT_RIDGE",
    "LINEAR_EMBEDDING",
    "fit_linear_embedding",
    "gene_embedding",
    "linear_embedding_prediction",
]
