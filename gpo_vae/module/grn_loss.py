"""GRN terms of the loss: K-hop accumulation, alignment with ΔX, sparsity (design §6, terms 4–5).

All functions depend on the mask parameters only (not on cells or particles), so the module
computes the accumulation once per step.
"""

from __future__ import annotations

import torch

from gpo_vae.module.config import GrnVariant

#: Added to the denominator of the per-column min-max scaling of the "probs" variant.
MIN_MAX_EPS = 1e-8


def khop_accumulation(adjacency: torch.Tensor, hop: int, scaled: bool = True) -> torch.Tensor:
    """``S = A + Σ_{k=1..hop} A^{k+1} / T^k`` (``scaled``) or ``A + Σ A^{k+1}`` (not scaled).

    Powers are built by repeated matrix products (one per hop). With logits as A, dividing the
    k-th extra power by T^k keeps the sum of products of T terms on the scale of A.
    """
    n = adjacency.shape[0]
    total = adjacency
    power = adjacency
    for _ in range(hop):
        power = power @ adjacency
        if scaled:
            power = power / n
        total = total + power
    return total


def min_max_columns(matrix: torch.Tensor) -> torch.Tensor:
    """Scale each column to [0, 1] by its minimum and maximum over rows."""
    low = matrix.amin(dim=0, keepdim=True)
    high = matrix.amax(dim=0, keepdim=True)
    return (matrix - low) / (high - low + MIN_MAX_EPS)


def grn_accumulation(mask_logits: torch.Tensor, hop: int, variant: GrnVariant) -> torch.Tensor:
    """The T × T matrix S compared with ΔX.

    ``logits``: S of the logits with the 1/T^k scaling. ``probs``: A = sigmoid(logits) divided by
    its row sums, S = A + Σ A^{k+1} (no scaling), then min-max scaled per column.
    """
    if variant == "logits":
        return khop_accumulation(mask_logits, hop, scaled=True)
    probs = torch.sigmoid(mask_logits)
    row_normalised = probs / probs.sum(dim=1, keepdim=True)
    return min_max_columns(khop_accumulation(row_normalised, hop, scaled=False))


def grn_alignment_loss(
    accumulation: torch.Tensor,
    dosage: torch.Tensor,
    delta_x: torch.Tensor,
    fc_criteria: float,
    variant: GrnVariant,
    columns: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the B × T entries of ``|D S − target|``, without the coefficient γ.

    target = ΔX − c (``logits``) or sigmoid(ΔX − c) (``probs``). All cells of the batch count,
    controls included (their D S is 0), as in the reference's ``F.l1_loss`` with mean reduction.
    ``columns`` ((T,) bool) keeps only those node columns (the measured ones): the mean is then
    over B × (kept columns); all columns kept gives the reference's value exactly.
    """
    target = delta_x - fc_criteria
    if variant == "probs":
        target = torch.sigmoid(target)
    prediction = dosage.to(accumulation.dtype) @ accumulation
    if columns is not None and not bool(columns.all()):
        if not bool(columns.any()):
            return prediction.sum() * 0.0
        return (prediction[:, columns] - target[:, columns]).abs().mean()
    return (prediction - target).abs().mean()


def sparsity_penalty(mask_logits: torch.Tensor) -> torch.Tensor:
    """``‖sigmoid(logits)‖₁ / T²``, without the coefficient λ."""
    return torch.sigmoid(mask_logits).sum() / mask_logits.shape[0] ** 2
