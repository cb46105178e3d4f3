"""Treatment nodes of the GRN and the dosage matrix D (design §4).

Nodes are the sorted perturbed genes (P of them) followed by the sorted FC3 genes that are not
perturbed (A of them). D (cells × T, T = P + A) one-hot encodes each cell's perturbation among
the P columns; the A columns are always zero: they exist so the GRN can have downstream nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpo_vae.data.contract import CONTROL_LABEL


def treatment_nodes(
    perturbed_genes: Iterable[str], fc3_genes: Iterable[str], control_label: str = CONTROL_LABEL
) -> tuple[list[str], int]:
    """``(nodes, P)``: sorted perturbed genes, then sorted FC3 genes that are not perturbed.

    The control label is not a node, and duplicates are dropped.
    """
    perturbed = sorted(set(map(str, perturbed_genes)) - {control_label})
    extra = sorted(set(map(str, fc3_genes)) - set(perturbed) - {control_label})
    return perturbed + extra, len(perturbed)


def dosage_matrix(
    perturbation_labels: Sequence[str] | np.ndarray | pd.Series,
    nodes: Sequence[str],
    control_label: str = CONTROL_LABEL,
    n_perturbed: int | None = None,
) -> sp.csr_matrix:
    """One-hot dosages (cells × nodes, CSR float32); controls are all-zero rows.

    With ``n_perturbed`` (= P), a label must be one of the first P nodes: a cell labelled with an
    A node would put a one where D must stay zero. An unknown label raises, naming it.
    """
    nodes = list(nodes)
    index = pd.Index(nodes)
    if not index.is_unique:
        raise ValueError(f"duplicate nodes: {index[index.duplicated()].tolist()[:5]}")
    n_perturbed = len(nodes) if n_perturbed is None else int(n_perturbed)
    if not 0 <= n_perturbed <= len(nodes):
        raise ValueError(f"n_perturbed={n_perturbed} outside 0..{len(nodes)}")
    labels = pd.Categorical(np.asarray(perturbation_labels).astype(str))
    # look categories up once, then map every cell by its category code
    column_of_category = index.get_indexer(labels.categories)
    is_control = np.asarray(labels.categories == control_label)
    bad = (~is_control) & ((column_of_category < 0) | (column_of_category >= n_perturbed))
    if bad.any():
        offending = labels.categories[bad].tolist()
        kind = "not a treatment node" if (column_of_category[bad] < 0).all() else "not a perturbed (P) node"
        raise ValueError(
            f"perturbation labels {offending[:5]} are {kind} and not the control {control_label!r} "
            f"({len(offending)} such labels)"
        )
    cell_column = column_of_category[labels.codes]
    perturbed_cells = np.flatnonzero(~is_control[labels.codes])
    return sp.csr_matrix(
        (
            np.ones(perturbed_cells.size, dtype=np.float32),
            (perturbed_cells, cell_column[perturbed_cells]),
        ),
        shape=(len(labels), len(nodes)),
    )
