"""The field's GRN methods that take minutes, as T × T score matrices over a run's nodes.

Each reads the training cells' log-normalised expression of the node genes (cells × T) and is a
maintained package's own algorithm; nothing here re-implements one:

- GRNBoost2 (``arboreto``; Moerman et al., Bioinformatics 2019), the regression method of
  SCENIC and of CausalBench's GRNBoost baseline: one gradient-boosting regression per target on
  the perturbed nodes' expression, the feature importance as the edge score. arboreto's own
  driver (``arboreto.algo.grnboost2``) builds a dask graph that fails with dask ≥ 2025
  (``from_delayed`` of an empty meta list; a LocalCluster of processes does not start in a
  sandbox), so we call its per-target function ``arboreto.core.infer_partial_network`` with its
  GRNBoost2 settings (``SGBM_KWARGS``, early-stop window 25) — the same regressions, without dask.
- GIES (``gies``; Hauser & Bühlmann, JMLR 2012), the interventional greedy equivalence search
  CausalBench benchmarks: Gaussian BIC over one environment per perturbation (its targets as
  the intervention) and the controls. Its output is a graph (1 for an edge, also for the
  undirected edges of its essential graph), so its AUPRC ranks a binary score. We run its
  forward and backward phases once (``GIES_PHASES``, no turning phase, no iteration): the full
  search did not finish within 14 minutes on the default screen (52 node genes, 32
  environments) on this 2-core machine, the two phases took 196 s.

Why these two: GRNBoost2 is the observational method biologists run most (SCENIC, CausalBench's
strongest observational baseline) and GIES the interventional method CausalBench ships a
maintained Python package for (DCDI and NOTEARS need a GPU-sized torch setup per run; ``sdcd``
pins pandas < 2). Both are in the ``grn`` extra (``pip install -e '.[grn]'``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from gpo_vae.grn.effects import node_gene_columns
from gpo_vae.preprocessing.normalize import DEFAULT_TARGET_SUM, as_csr

#: Seed of every method that draws.
SEED = 0
#: GIES's phases, run once each (``gies.fit_bic(..., phases=GIES_PHASES, iterate=False)``).
GIES_PHASES = ("forward", "backward")


def node_expression(
    counts: sp.spmatrix, rows: np.ndarray, nodes: Sequence[str], genes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``log1p(target_sum · x / library)`` of the measured node genes (cells × measured nodes),
    and the node index of each column."""
    columns = node_gene_columns(nodes, genes)
    measured = np.flatnonzero(columns >= 0)
    cells = as_csr(counts)[np.asarray(rows, dtype=np.int64)]
    library = np.asarray(cells.sum(axis=1)).ravel().astype(np.float64)
    scale = np.divide(DEFAULT_TARGET_SUM, library, out=np.zeros_like(library), where=library > 0)
    block = cells[:, columns[measured]].toarray().astype(np.float64)
    return np.log1p(block * scale[:, None]), measured


def grnboost2_scores(
    expression: np.ndarray, measured: np.ndarray, n_nodes: int, n_perturbed: int
) -> np.ndarray:
    """GRNBoost2 importances: entry (s, t) = importance of source s (a perturbed node) for target t.

    A regulator is a feature only when its gene is measured: on a screen whose targets are not
    measured (a panel) GRNBoost2 has no regulator, and every score is 0.
    """
    from arboreto.core import EARLY_STOP_WINDOW_LENGTH, SGBM_KWARGS, infer_partial_network

    sources = [i for i, node in enumerate(measured) if node < n_perturbed]
    names = [str(node) for node in measured]
    tf_matrix = expression[:, sources]
    tf_names = [names[i] for i in sources]
    scores = np.zeros((n_nodes, n_nodes))
    for column, node in enumerate(measured):
        if not [i for i in sources if i != column]:
            continue  # no measured regulator but itself: nothing to regress on (its scores stay 0)
        links = infer_partial_network(
            "GBM",
            SGBM_KWARGS,
            tf_matrix,
            tf_names,
            names[column],
            expression[:, column],
            include_meta=False,
            early_stop_window_length=EARLY_STOP_WINDOW_LENGTH,
            seed=SEED,
        )
        for source, importance in zip(links["TF"], links["importance"], strict=True):
            scores[int(source), node] = float(importance)
    np.fill_diagonal(scores, 0.0)
    return scores


def gies_scores(
    expression: np.ndarray,
    measured: np.ndarray,
    node_of_cell: np.ndarray,
    n_nodes: int,
    n_perturbed: int,
) -> np.ndarray:
    """GIES's graph as scores: 1 where it has an edge ``s → t`` (or ``s — t``), 0 elsewhere.

    ``node_of_cell`` is each cell's perturbed node (−1 for a control); every perturbation is an
    environment whose intervention target is its node (when measured), the controls one more.
    """
    import gies

    position = {int(node): i for i, node in enumerate(measured)}
    data, targets = [], []
    for node in [-1, *range(n_perturbed)]:
        cells = expression[node_of_cell == node]
        if len(cells) < 2:
            continue
        data.append(cells)
        targets.append([position[node]] if node in position else [])
    estimate, _ = gies.fit_bic(data, targets, phases=list(GIES_PHASES), iterate=False)
    scores = np.zeros((n_nodes, n_nodes))
    scores[np.ix_(measured, measured)] = (np.asarray(estimate) != 0).astype(np.float64)
    np.fill_diagonal(scores, 0.0)
    return scores
