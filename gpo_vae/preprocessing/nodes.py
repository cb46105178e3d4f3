"""Treatment nodes of the GRN and the dosage matrix D (design §4).

Nodes are the sorted perturbed genes (P of them: every gene of every label, so ``A+B`` adds no
node of its own) followed by the sorted FC3 genes that are not perturbed (A of them). D (cells ×
T, T = P + A) is the multi-hot dose of each cell's perturbation among the P columns: one 1 for a
single perturbation, a 1 for each of its genes for a combination (design §6 sums D(M⊙E), so a
combination shares its nodes with the singles). The A columns are always zero: they exist so
the GRN can have downstream nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpo_vae.data.contract import CONTROL_LABEL
from gpo_vae.data.labels import label_genes, single_genes


def treatment_nodes(
    perturbed_labels: Iterable[str], fc3_genes: Iterable[str], control_label: str = CONTROL_LABEL
) -> tuple[list[str], int]:
    """``(nodes, P)``: the sorted genes of the perturbation labels, then sorted FC3 genes that
    are not perturbed. The control label is not a node, and duplicates are dropped."""
    perturbed = single_genes([label for label in map(str, perturbed_labels) if label != control_label])
    extra = sorted(set(map(str, fc3_genes)) - set(perturbed) - {control_label})
    return perturbed + extra, len(perturbed)


def dosage_matrix(
    perturbation_labels: Sequence[str] | np.ndarray | pd.Series,
    nodes: Sequence[str],
    control_label: str = CONTROL_LABEL,
    n_perturbed: int | None = None,
) -> sp.csr_matrix:
    """Multi-hot dosages (cells × nodes, CSR float32); controls are all-zero rows.

    With ``n_perturbed`` (= P), every gene of a label must be one of the first P nodes: a cell
    dosed on an A node would put a one where D must stay zero. An unknown label raises, naming it.
    """
    nodes = list(nodes)
    index = pd.Index(nodes)
    if not index.is_unique:
        raise ValueError(f"duplicate nodes: {index[index.duplicated()].tolist()[:5]}")
    n_perturbed = len(nodes) if n_perturbed is None else int(n_perturbed)
    if not 0 <= n_perturbed <= len(nodes):
        raise ValueError(f"n_perturbed={n_perturbed} outside 0..{len(nodes)}")
    labels = pd.Categorical(np.asarray(perturbation_labels).astype(str))
    # look each category's genes up once, then expand every cell by its category code
    columns, bad = [], []
    for category in labels.categories:
        genes = [] if category == control_label else label_genes(str(category))
        found = index.get_indexer(genes)
        if ((found < 0) | (found >= n_perturbed)).any():
            bad.append((category, (found < 0).all()))
        columns.append(found)
    if bad:
        offending = [category for category, _ in bad]
        kind = "not a treatment node" if all(missing for _, missing in bad) else "not a perturbed (P) node"
        raise ValueError(
            f"perturbation labels {offending[:5]} are {kind} and not the control {control_label!r} "
            f"({len(offending)} such labels)"
        )
    n_doses = np.array([len(c) for c in columns], dtype=np.int64)
    flat = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)
    first = np.r_[0, np.cumsum(n_doses)[:-1]] if len(columns) else np.zeros(0, dtype=np.int64)
    per_cell = n_doses[labels.codes]
    rows = np.repeat(np.arange(len(labels)), per_cell)
    within = np.arange(rows.size) - np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
    cols = flat[first[labels.codes[rows]] + within]
    return sp.csr_matrix(
        (np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(len(labels), len(nodes))
    )
