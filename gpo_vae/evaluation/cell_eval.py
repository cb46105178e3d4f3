"""Predicted and real test cells in the layout of cell-eval (the Virtual Cell Challenge's evaluator).

``predictions.h5ad`` (generated cells of every test perturbation and generated controls) and
``real_test.h5ad`` (the artifact's test cells of the same perturbations, and its test controls)
share the genes and the perturbation column, so::

    cell-eval run -ap predictions.h5ad -ar real_test.h5ad --control-pert non-targeting

scores the model with no conversion (``obs["target_gene"]`` is cell-eval's default column;
``obs["perturbation"]`` holds the same labels under our name).

``X`` is ``log2(1 + target_sum·x/library)``, the scale of our ATE (``run.json`` records
``target_sum``), so cell-eval's ``pearson_delta`` of a perturbation is our held-out ATE Pearson
when every generated cell is exported (``evaluation.cell_eval_cells`` ≥ ``n_generated_cells``).
The raw counts are in ``layers["counts"]`` (the generated ones at
``evaluation.generated_library_size`` UMIs): cell-eval given counts normalises each cell to the
median library and takes ``ln(1 + x)``, which agrees with ours when the cells are generated and
scaled at the screen's depth (``median_library``, as ``configs/*_custom.yaml``), not at 10,000.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpo_vae.evaluation.prediction import EvaluationData
from gpo_vae.preprocessing.normalize import library_size

PREDICTIONS_FILE = "predictions.h5ad"
REAL_TEST_FILE = "real_test.h5ad"
#: cell-eval's default perturbation column, and ours.
CELL_EVAL_KEY, PERTURBATION_KEY = "target_gene", "perturbation"


def log2_normalised(counts: sp.csr_matrix, target_sum: float) -> sp.csr_matrix:
    """``log2(1 + target_sum·x/library)`` of CSR counts, CSR float32 (an empty cell stays zero)."""
    counts = sp.csr_matrix(counts, dtype=np.float64)
    lib = library_size(counts)
    scale = np.divide(target_sum, lib, out=np.zeros_like(lib, dtype=np.float64), where=lib > 0)
    out = sp.diags(scale) @ counts
    out.data = np.log2(1.0 + out.data)
    return sp.csr_matrix(out, dtype=np.float32)


def _cells_anndata(
    counts: sp.csr_matrix,
    labels: np.ndarray,
    batches: np.ndarray | None,
    genes: pd.Index,
    target_sum: float,
    kind: str,
) -> ad.AnnData:
    order = list(dict.fromkeys(labels.tolist()))
    obs = pd.DataFrame({PERTURBATION_KEY: pd.Categorical(labels, categories=order)})
    obs[CELL_EVAL_KEY] = obs[PERTURBATION_KEY]
    if batches is not None:
        obs["batch"] = pd.Categorical(batches)
    obs.index = [f"{kind}_{i}" for i in range(len(obs))]
    adata = ad.AnnData(
        X=log2_normalised(counts, target_sum), obs=obs, var=pd.DataFrame(index=genes.astype(str))
    )
    adata.layers["counts"] = sp.csr_matrix(counts, dtype=np.float32)
    adata.uns["gpo_vae"] = {
        "cells": kind,
        "X": f"log2(1 + x * {target_sum:g} / library)",
        "target_sum": float(target_sum),
        "counts_layer": "counts",
    }
    return adata


def real_test_cells(data: EvaluationData, perturbations: Sequence[str]) -> tuple[ad.AnnData, pd.Series]:
    """The artifact's test cells of ``perturbations`` and its test controls; and their count per label."""
    test = data.cells.rows("test")
    wanted = set(perturbations) | {data.control_label}
    rows = test[np.isin(data.labels[test], list(wanted))]
    labels = data.labels[rows]
    batches = None if data.batches is None else data.batches[rows]
    adata = _cells_anndata(data.cells.counts[rows], labels, batches, data.genes, data.target_sum, "real")
    return adata, pd.Series(labels).value_counts()


def predicted_cells(
    kept: ad.AnnData,
    wanted: pd.Series,
    batch_names: Sequence[str],
    target_sum: float,
    seed: int,
) -> ad.AnnData:
    """``wanted[label]`` generated cells of every label (at most those kept), drawn from ``seed``.

    ``kept`` is :attr:`~gpo_vae.evaluation.generation.GeneratedSummary.kept`; a label's cells
    of several batches are drawn among all of them.
    """
    labels = kept.obs["gene"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    rows = []
    for label in [*wanted.index]:
        mine = np.flatnonzero(labels == label)
        take = min(int(wanted[label]), mine.size)
        if take == mine.size:
            rows.append(mine)
        else:
            rows.append(np.sort(rng.choice(mine, take, replace=False)))
    rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    codes = kept.obs["batch_index"].to_numpy()[rows]
    batches = np.asarray(batch_names, dtype=object)[codes] if batch_names and (codes >= 0).all() else None
    return _cells_anndata(
        sp.csr_matrix(kept.X[rows]), labels[rows], batches, pd.Index(kept.var_names), target_sum, "predicted"
    )


def cells_to_keep(config_cells: int | None, real_counts: pd.Series, n_generated: int) -> pd.Series:
    """Generated cells to export per label: ``config_cells`` each, or (None) as many as the real
    test cells of the label; never more than were generated."""
    wanted = real_counts if config_cells is None else pd.Series(config_cells, index=real_counts.index)
    return wanted.clip(upper=n_generated).astype(int)


__all__ = [
    "CELL_EVAL_KEY",
    "PREDICTIONS_FILE",
    "REAL_TEST_FILE",
    "cells_to_keep",
    "log2_normalised",
    "predicted_cells",
    "real_test_cells",
]
