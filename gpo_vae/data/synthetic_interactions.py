"""The known genetic interaction of every simulated ``A+B`` pair (the truth behind ``nonadditive``).

On an additive screen a pair's downstream log effect is the sum of its singles' (up to the ±4
clip); on a saturating one (``interaction: saturating``) every cell's summed effect passes
through ``s·tanh(x/s)``, so a gene both singles move levels off and the pair is buffered.
"""

from __future__ import annotations

import numpy as np

from gpo_vae.data.synthetic_cells import EFFECT_CLIP, saturate, signal_of
from gpo_vae.data.synthetic_design import ScreenDesign


def _single_effects(design: ScreenDesign) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's two downstream log effects at the targets' design efficiencies, (C, G) each."""
    pairs = design.combinations
    efficiency = design.targets["efficiency"].to_numpy()
    out = []
    for column in (0, 1):
        codes = pairs[:, column]
        signal, _ = signal_of(design, codes, efficiency[codes])
        out.append(design.effect[codes] * signal[:, None])
    return out[0], out[1]


def _interaction_parts(design: ScreenDesign) -> tuple[np.ndarray, np.ndarray]:
    """(interaction, additive effect), each (C, G): see :func:`true_interactions`."""
    first, second = _single_effects(design)
    scale = design.saturation
    if scale > 0:
        additive = saturate(first, scale) + saturate(second, scale)
        combined = saturate(first + second, scale)
    else:
        additive = first + second
        combined = np.clip(first + second, -EFFECT_CLIP, EFFECT_CLIP)
    interaction = combined - additive
    for column in (0, 1):
        target = design.target_col[design.combinations[:, column]]
        rows = np.flatnonzero(target >= 0)
        interaction[rows, target[rows]] = 0.0
    return interaction, additive


def true_interactions(design: ScreenDesign) -> np.ndarray:
    """(C, G) genetic interaction of every combination, natural-log scale: its downstream log
    effect minus the sum of its singles' effects, at the targets' design efficiencies.

    Zero everywhere on an additive screen (up to the ±4 clip); on a saturating screen, negative
    where both targets move a gene the same way (buffering). The targets' own genes are set
    apart from the downstream effect (their change is the knockdown itself) and are 0 here.
    """
    if not len(design.combinations):
        return np.zeros((0, design.effect.shape[1]))
    return _interaction_parts(design)[0]


def interaction_truth(design: ScreenDesign) -> dict[str, np.ndarray]:
    """Columns of ``SyntheticScreen.combinations`` describing each pair's interaction.

    ``true_interaction_norm`` (L2 norm over genes of :func:`true_interactions`, natural log),
    ``true_additive_norm`` (of the singles' summed effect), ``true_interacting_genes`` (genes
    moved by more than 0.1) and ``true_interaction_kind``: ``buffering`` when the interaction
    points against the additive effect, ``synergy`` when along it.
    """
    interaction, additive = _interaction_parts(design)
    projection = (interaction * additive).sum(axis=1)
    return {
        "true_interaction_norm": np.linalg.norm(interaction, axis=1),
        "true_additive_norm": np.linalg.norm(additive, axis=1),
        "true_interacting_genes": (np.abs(interaction) > 0.1).sum(axis=1),
        "true_interaction_kind": np.where(
            projection < 0, "buffering", np.where(projection > 0, "synergy", "none")
        ),
    }
