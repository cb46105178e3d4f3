"""The cells of the synthetic screen: per-cell draws and negative-binomial counts (design §9).

Used by :func:`gpo_vae.data.synthetic.simulate_perturbseq` after the design
(:mod:`gpo_vae.data.synthetic_design`) is drawn. :func:`draw_cells` takes the second child of
``SeedSequence(seed)``; :func:`sample_chunk` draws one fixed chunk of cells from its own seed.
Every optional shape (CRISPRa, combinations, batches) draws after the default draws, so a screen
without them is bit for bit what it was before they existed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy
import scipy.sparse as sp

from gpo_vae.data.synthetic_design import ScreenDesign

if TYPE_CHECKING:
    from gpo_vae.data.synthetic_config import SyntheticConfig

_SIGNAL_FLOOR = np.log(0.02)
EFFECT_CLIP = 4.0


@dataclass(frozen=True)
class Cells:
    """Per-cell draws for the N cells and, after them, the doublet partners."""

    group: np.ndarray  # label code: 0..P-1 a target, P controls, P+1+c combination c
    perturbation: np.ndarray  # (first) target code; P for controls
    efficiency: np.ndarray
    log_library: np.ndarray
    mt_log: np.ndarray
    scores: np.ndarray  # basal factor scores
    qc_kind: np.ndarray  # N: 0 pass, 1 low UMI, 2 high MT, 3 doublet
    partner: np.ndarray  # N: index of the partner cell, -1 if none
    second: np.ndarray  # second target code of a combination; P otherwise
    second_efficiency: np.ndarray
    batch: np.ndarray  # batch (cell line) code


def draw_cells(config: SyntheticConfig, design: ScreenDesign) -> Cells:
    rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(3)[1])
    n_targets = len(design.targets)
    n_combos = len(design.combinations)
    per_target = np.maximum(
        3, np.round(rng.lognormal(np.log(config.cells_per_perturbation), config.cells_sigma, n_targets))
    )
    per_combo = np.zeros(0)
    if n_combos:
        combo_cells = config.combination_cells or config.cells_per_perturbation
        per_combo = np.maximum(3, np.round(rng.lognormal(np.log(combo_cells), config.cells_sigma, n_combos)))
    n_perturbed = per_target.sum() + per_combo.sum()
    n_controls = round(config.control_fraction / (1.0 - config.control_fraction) * n_perturbed)
    groups = np.r_[
        np.repeat(np.arange(n_targets), per_target.astype(int)),
        np.full(n_controls, n_targets),
        np.repeat(n_targets + 1 + np.arange(n_combos), per_combo.astype(int)),
    ]
    labels = rng.permutation(groups)
    n = labels.size
    fail = [config.low_umi_fraction, config.high_mt_fraction, config.doublet_fraction]
    qc_kind = rng.choice(4, size=n, p=[1.0 - sum(fail), *fail])
    doublets = np.flatnonzero(qc_kind == 3)
    partner = np.full(n, -1)
    partner[doublets] = n + np.arange(doublets.size)
    labels = np.r_[labels, labels[rng.integers(0, n, doublets.size)]]
    total = labels.size
    # A combination's cells carry its first target here and its second in `second`.
    pairs = np.vstack([design.combinations, np.zeros((0, 2), dtype=np.int64)])
    is_combo = labels > n_targets
    first = np.where(is_combo, pairs[np.maximum(labels - n_targets - 1, 0), 0] if n_combos else 0, labels)
    second = np.where(is_combo, pairs[np.maximum(labels - n_targets - 1, 0), 1] if n_combos else 0, n_targets)

    perturbed = first < n_targets
    design_efficiency = np.r_[design.targets.efficiency.to_numpy(), 0.5]
    mean = design_efficiency[first]
    efficiency = rng.beta(25.0 * mean, 25.0 * (1.0 - mean))
    escape = rng.random(total) < config.escape_fraction
    efficiency = np.where(escape, rng.uniform(0.0, 0.3, total), efficiency) * perturbed
    umi_shift = design.umi_shift[first] + (design.umi_shift[second] if n_combos else 0.0)
    log_library = np.log(config.median_umi) + config.umi_sigma * rng.standard_normal(total) + umi_shift
    mt_log = config.mt_sigma * rng.standard_normal(total)
    low, high = np.flatnonzero(qc_kind == 1), np.flatnonzero(qc_kind == 2)
    log_library[low] += np.log(rng.uniform(0.05, 0.25, low.size))
    mt_log[high] += np.log(rng.uniform(3.0, 8.0, high.size))
    scores = rng.standard_normal((total, config.n_basal_factors)).astype(np.float32)
    # The optional shapes draw last, so that a screen without them keeps every draw above.
    second_efficiency = np.zeros(total)
    if n_combos:
        mean2 = design_efficiency[second]
        second_efficiency = rng.beta(25.0 * mean2, 25.0 * (1.0 - mean2))
        escape2 = rng.random(total) < config.escape_fraction
        second_efficiency = np.where(escape2, rng.uniform(0.0, 0.3, total), second_efficiency) * is_combo
    batch = np.zeros(total, dtype=np.int64)
    if config.n_batches > 1:
        batch[:n] = rng.integers(0, config.n_batches, n)
        batch[n:] = batch[doublets]  # a doublet's two cells shared a droplet, so a sample
        log_library += design.batch_umi[batch]
    return Cells(
        labels,
        first,
        efficiency,
        log_library,
        mt_log,
        scores,
        qc_kind,
        partner,
        second,
        second_efficiency,
        batch,
    )


def signal_of(
    design: ScreenDesign, targets: np.ndarray, efficiency: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(downstream signal, own-target log change) of each cell for the targets given.

    CRISPRi: the target keeps ``1 − e`` of its expression, downstream genes see
    ``max(log(1 − e), log 0.02)``; CRISPRa: both see ``e · log(fold)`` of the target.
    """
    if design.log_activation.any():
        own = (efficiency * design.log_activation[targets]).astype(np.float32)
        return own, own
    residual = 1.0 - efficiency
    signal = np.maximum(np.log(np.maximum(residual, 1e-4)), _SIGNAL_FLOOR).astype(np.float32)
    return signal, np.log(np.maximum(residual, 1e-4))


def saturate(effect: np.ndarray, scale: float) -> np.ndarray:
    """``scale · tanh(effect / scale)``: a gene's log change levels off at ±scale, so two
    perturbations that move the same gene move it less than the sum of their single effects."""
    return (scale * np.tanh(effect / scale)).astype(effect.dtype, copy=False)


def sample_chunk(
    design: ScreenDesign, cells: Cells, rows: np.ndarray, is_mt: np.ndarray, seed: np.random.SeedSequence
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Negative-binomial counts of ``rows`` (doublets summed with their partners) as CSR pieces."""
    rng = np.random.default_rng(seed)
    partners = cells.partner[rows]
    doublet_rows = np.flatnonzero(partners >= 0)
    virtual = np.r_[rows, partners[doublet_rows]]
    log_rate = design.log_share + cells.scores[virtual] @ design.loadings
    if len(design.batch_shift) > 1:
        log_rate += design.batch_shift[cells.batch[virtual]]
    log_rate[:, is_mt] += cells.mt_log[virtual, None].astype(np.float32)
    # The unperturbed profile sums to the library size; the perturbation then changes the total.
    log_rate -= scipy.special.logsumexp(log_rate, axis=1, keepdims=True)
    log_rate += cells.log_library[virtual, None].astype(np.float32)
    labels = cells.perturbation[virtual]
    signal, own_change = signal_of(design, labels, cells.efficiency[virtual])
    effect = design.effect[labels] * signal[:, None]
    combined = len(design.combinations) > 0
    if combined:
        second = cells.second[virtual]
        signal2, own_change2 = signal_of(design, second, cells.second_efficiency[virtual])
        effect += design.effect[second] * signal2[:, None]
    if design.saturation > 0:
        effect = saturate(effect, design.saturation)
    else:
        np.clip(effect, -EFFECT_CLIP, EFFECT_CLIP, out=effect)
    target_col = np.r_[design.target_col, -1]
    col = target_col[labels]
    own = np.flatnonzero(col >= 0)
    effect[own, col[own]] = own_change[own]
    if combined:
        col2 = target_col[second]
        own2 = np.flatnonzero(col2 >= 0)
        effect[own2, col2[own2]] = own_change2[own2]
    log_rate += effect
    mean = np.exp(log_rate, dtype=np.float64)
    counts = rng.poisson(
        mean * rng.standard_gamma(np.broadcast_to(design.inv_dispersion, mean.shape)) / design.inv_dispersion
    )
    counts[doublet_rows] += counts[rows.size :]
    counts = counts[: rows.size]
    row, col = np.nonzero(counts)
    return counts[row, col].astype(np.float32), col.astype(np.int32), np.bincount(row, minlength=rows.size)


def assemble_csr(pieces: Iterable[tuple[np.ndarray, ...]], n_rows: int, n_cols: int) -> sp.csr_matrix:
    """Copy chunk pieces into one CSR as they arrive, so the pieces never all live at once."""
    data, indices = np.empty(0, np.float32), np.empty(0, np.int32)
    row_nnz, nnz = [], 0
    for values, columns, per_row in pieces:
        if nnz + values.size > data.size:  # sized from the first chunk; grows if a later one is denser
            capacity = max(
                int(values.size / max(per_row.size, 1) * n_rows * 1.1),
                int(1.25 * data.size),
                nnz + values.size,
            )
            data = np.concatenate([data[:nnz], np.empty(capacity - nnz, np.float32)])
            indices = np.concatenate([indices[:nnz], np.empty(capacity - nnz, np.int32)])
        data[nnz : nnz + values.size] = values
        indices[nnz : nnz + values.size] = columns
        nnz += values.size
        row_nnz.append(per_row)
    data.resize(nnz, refcheck=False)
    indices.resize(nnz, refcheck=False)
    indptr = np.r_[0, np.cumsum(np.concatenate(row_nnz))]
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))
