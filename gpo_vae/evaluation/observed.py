"""What the data says about each perturbation's effect (design §7): the held-out and all-cell
ATE references, the training-cell baselines and the split-half ceiling, per cell subset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpo_vae.evaluation.ate import ate_reference_all_cells, ate_reference_heldout
from gpo_vae.evaluation.baselines import mean_baseline_ate, noncontrol_mean_ate, split_half_reliability
from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.evaluation.prediction import ALL_CELLS, HELDOUT, SUBSETS, EvaluationData
from gpo_vae.preprocessing.normalize import take_rows


def _subset_arrays(
    data: EvaluationData, subset: str
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray | None]:
    cells, batches = data.cells, data.batches
    if subset == ALL_CELLS:
        return cells.counts, data.labels, cells.split, batches
    rows = np.flatnonzero(data.qc_pass)
    return (
        take_rows(cells.counts, rows),
        data.labels[rows],
        cells.split[rows],
        None if batches is None else batches[rows],
    )


@dataclass(frozen=True)
class ObservedTables:
    """What the data says, per cell subset (``all_cells``, ``qc_pass``).

    Attributes
    ----------
    references
        (reference, subset) → the data's ATE (``heldout_test``: test cells only;
        ``all_cells``: every cell).
    mean_baselines
        subset → the ATE of the training cells (the mean baseline's prediction).
    noncontrol_means
        subset → the ATE of all perturbed training cells pooled, one row per perturbation
        (the non-control mean's prediction; its row is the shared shift of ``pearson_specific``).
    ceilings
        subset → split-half metrics of the test cells (half A vs half B, seeded).
    """

    references: dict[tuple[str, str], pd.DataFrame]
    mean_baselines: dict[str, pd.DataFrame]
    ceilings: dict[str, pd.DataFrame]
    noncontrol_means: dict[str, pd.DataFrame]

    def shared_shifts(self) -> dict[str, pd.Series]:
        """subset → the shift every perturbation shares (the non-control mean's ATE)."""
        return {subset: frame.iloc[0] for subset, frame in self.noncontrol_means.items() if len(frame)}


def observed_tables(
    data: EvaluationData, perturbations: Sequence[str], config: EvaluationConfig
) -> ObservedTables:
    """The data's ATE references, the mean baseline and the split-half ceiling of each subset.

    Rows are ``perturbations``, columns the genes; a subset's rows are sliced once and dropped
    before the next subset, so at most one copy of the QC-pass counts exists.
    """
    control, genes = data.control_label, data.genes
    references, baselines, ceilings, noncontrol = {}, {}, {}, {}
    for subset in SUBSETS:
        counts, labels, split, batches = _subset_arrays(data, subset)
        # every table of a subset: the same cells, genes, batches and ATE scale
        shared = {"target_sum": data.target_sum, "genes": genes, "batches": batches}
        references[HELDOUT, subset] = ate_reference_heldout(
            counts, labels, split, control, perturbations, **shared
        )
        references[ALL_CELLS, subset] = ate_reference_all_cells(
            counts, labels, control, perturbations, **shared
        )
        baselines[subset] = mean_baseline_ate(counts, labels, split, control, perturbations, **shared)
        noncontrol[subset] = noncontrol_mean_ate(counts, labels, split, control, perturbations, **shared)
        ceilings[subset] = split_half_reliability(
            counts,
            labels,
            split,
            control,
            perturbations,
            seed=config.seed,
            corrected=config.split_half_corrected,
            top_de=config.top_de,
            jaccard_ks=config.jaccard_ks,
            **shared,
        )
    return ObservedTables(references, baselines, ceilings, noncontrol)
