"""Per-perturbation effect statistics on the node genes, and a mask prior made from them.

The published GRN term fits the K-hop accumulation of the mask to per-cell |ΔX|: the absolute
difference between a cell and its OT partner, which is as large for cell-to-cell noise as for
a real effect (its correlation baseline scores at chance on the default synthetic screen). A
perturbation's *mean* shift over its training cells, standardised by the controls' spread,
carries the same information with the noise averaged out. ``gpo_vae_plus`` initialises the
mask from it and aligns the GRN term to it (``model.mask_init: effects``,
``model.grn_target: effects``); the evaluation reports the statistic itself as a GRN baseline
(``effect_z``), so what training adds to it is visible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from gpo_vae.data.on_disk import BLOCK_CELLS
from gpo_vae.grn.baselines import deconvolution_scores
from gpo_vae.preprocessing.normalize import DEFAULT_TARGET_SUM, as_csr, on_disk

#: Logit of the diagonal (a perturbation acts on its own latent dimension) in the effect prior.
SELF_LOGIT = 3.0
#: Effect-prior logits are clipped to ±this.
MAX_PRIOR_LOGIT = 6.0
#: Floor of a control standard deviation (log2 units): a gene no control cell expresses.
MIN_CONTROL_SD = 0.05


def node_gene_columns(nodes: Sequence[str], genes: Sequence[str]) -> np.ndarray:
    """Column of each node's gene among ``genes`` (−1 for a node whose gene is not measured)."""
    index = {str(gene): i for i, gene in enumerate(genes)}
    return np.array([index.get(str(node), -1) for node in nodes], dtype=np.int64)


def _log_normalised(counts: sp.csr_matrix, columns: np.ndarray, target_sum: float) -> np.ndarray:
    library = np.asarray(counts.sum(axis=1)).ravel().astype(np.float64)
    scale = np.divide(target_sum, library, out=np.zeros_like(library), where=library > 0)
    block = counts[:, columns].toarray().astype(np.float64)
    return np.log2(1.0 + block * scale[:, None])


def _log_normalised_rows(counts: Any, rows: np.ndarray, columns: np.ndarray, target_sum: float) -> np.ndarray:
    """:func:`_log_normalised` of ``counts[rows]``; counts left on disk are read a block of rows at
    a time (the values are per row, so the same)."""
    if not on_disk(counts):
        return _log_normalised(as_csr(counts)[rows], columns, target_sum)
    size = counts.block_cells
    parts = [
        _log_normalised(counts[rows[i : i + size]], columns, target_sum) for i in range(0, rows.size, size)
    ]
    return np.vstack(parts) if parts else np.zeros((0, columns.size))


def effect_zscores(
    counts: sp.spmatrix | sp.sparray,
    dosage: sp.spmatrix | sp.sparray,
    rows: np.ndarray,
    nodes: Sequence[str],
    genes: Sequence[str],
    n_perturbed: int,
    batch_codes: np.ndarray | None = None,
    target_sum: float = DEFAULT_TARGET_SUM,
) -> np.ndarray:
    """Standardised mean effect of each perturbed node on each node gene, (T, T) float64.

    Entry (t, j) is ``√n_t · mean over t's cells of (x_j − μ_j) / σ_j`` with x the
    ``log2(1 + target_sum·x/library)`` expression of node j's gene, μ and σ the mean and
    standard deviation of the control cells of the cell's own batch, over the cells ``rows``
    (the training split) that received node t alone (combinations are left out). Rows of
    unperturbed (DEG) nodes, nodes without such cells and columns of unmeasured genes are 0.
    """
    rows = np.asarray(rows, dtype=np.int64)
    columns = node_gene_columns(nodes, genes)
    n_nodes = len(columns)
    measured = columns >= 0
    z = np.zeros((n_nodes, n_nodes))
    if rows.size == 0 or not measured.any():
        return z
    wanted = columns[measured]
    dose = as_csr(dosage)[rows]
    doses_per_cell = np.diff(dose.indptr)
    codes = np.zeros(rows.size, dtype=np.int64) if batch_codes is None else np.asarray(batch_codes)[rows]
    # the controls' expression is held (a small share of the cells); the perturbed cells are
    # read a block at a time, so memory does not grow with them
    control = np.flatnonzero(doses_per_cell == 0)
    reference = _log_normalised_rows(counts, rows[control], wanted, target_sum)
    moments = {}
    for code in np.unique(codes):
        batch_reference = reference[codes[control] == code]
        if batch_reference.shape[0] < 2:
            continue  # a batch without controls has no reference: its cells stay at 0
        sd = np.maximum(batch_reference.std(axis=0, ddof=1), MIN_CONTROL_SD)
        moments[code] = (batch_reference.mean(axis=0), sd)
    del reference
    single = np.flatnonzero(doses_per_cell == 1)
    node_of_cell = dose.indices[dose.indptr[single]]
    keep = node_of_cell < n_perturbed
    single, node_of_cell = single[keep], node_of_cell[keep]
    sums = np.zeros((n_nodes, wanted.size))
    for start in range(0, single.size, BLOCK_CELLS):
        part = single[start : start + BLOCK_CELLS]
        expression = _log_normalised_rows(counts, rows[part], wanted, target_sum)
        standardised = np.zeros_like(expression)
        for code, (mu, sd) in moments.items():
            mine = codes[part] == code
            standardised[mine] = (expression[mine] - mu) / sd
        # np.add.at adds row after row, so block by block gives the same sums as all at once
        np.add.at(sums, node_of_cell[start : start + BLOCK_CELLS], standardised)
    n = np.bincount(node_of_cell, minlength=n_nodes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        block = sums / np.sqrt(n)[:, None]
    block[n == 0] = 0.0
    z[:, measured] = block
    return z


def training_effect_zscores(cells: Any) -> np.ndarray:
    """:func:`effect_zscores` of an artifact's training cells (an ``ArtifactCells``: its counts,
    dosage, nodes, genes and batches), the statistic training and evaluation both read."""
    return effect_zscores(
        cells.counts,
        cells.dosage,
        cells.rows("train"),
        cells.nodes,
        cells.genes,
        cells.n_perturbed,
        cells.batch_codes if cells.n_batches else None,
    )


def effect_statistic(zscores: np.ndarray, statistic: str = "zscore") -> np.ndarray:
    """The statistic an effect-based mask starts from: ``zscore`` (the z-scores as they are) or
    ``deconvolved`` (network deconvolution of |z|: total effects with the paths removed)."""
    if statistic == "zscore":
        return np.asarray(zscores, dtype=np.float64)
    if statistic == "deconvolved":
        return deconvolution_scores(np.abs(zscores))
    raise ValueError(f"effect statistic {statistic!r} is not 'zscore' or 'deconvolved'")


def effect_prior_logits(
    zscores: np.ndarray, n_perturbed: int, density: float, background_logit: float
) -> np.ndarray:
    """Mask logits (T, T) that make about ``density`` of the candidate edges likely.

    Over the candidate pairs (perturbed source, any other node), ``q`` is the ``1 − density``
    quantile of |z|; a pair's logit is ``2·(|z| − q) / q`` clipped to ±6, so the pairs above the
    quantile start with p > 0.5 and those far below it near 0. Diagonal entries of perturbed
    nodes start at :data:`SELF_LOGIT`; rows of DEG nodes (never dosed) at ``background_logit``.
    """
    if not 0.0 < density < 1.0:
        raise ValueError(f"mask_init_density {density} is not in (0, 1)")
    magnitude = np.abs(np.asarray(zscores, dtype=np.float64))
    n_nodes = magnitude.shape[0]
    candidates = np.zeros_like(magnitude, dtype=bool)
    candidates[:n_perturbed] = True
    np.fill_diagonal(candidates, False)
    logits = np.full_like(magnitude, background_logit)
    values = magnitude[candidates]
    if values.size and float(values.max()) > 0.0:
        q = max(float(np.quantile(values, 1.0 - density)), 1e-6)
        scaled = np.clip(2.0 * (magnitude - q) / q, -MAX_PRIOR_LOGIT, MAX_PRIOR_LOGIT)
        logits[candidates] = scaled[candidates]
    perturbed = np.arange(min(n_perturbed, n_nodes))
    logits[perturbed, perturbed] = SELF_LOGIT
    return logits


def prior_logit(probability: float) -> float:
    """log(p / (1 − p))."""
    return math.log(probability / (1.0 - probability))
