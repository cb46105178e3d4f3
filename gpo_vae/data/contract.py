"""The raw-dataset contract (design §1): what every loader promises the later stages.

A raw dataset is an AnnData of UMI counts (cells × genes, sparse CSR, integer valued) with
``obs[PERTURBATION_KEY]`` naming the perturbed gene (``CONTROL_LABEL`` for controls) and gene
symbols as ``var_names``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:  # anndata is imported where a file is read: the registry's constants stay light
    import anndata as ad

PERTURBATION_KEY = "gene"
CONTROL_LABEL = "non-targeting"
GENE_ID_KEY = "gene_id"


class DataContractError(ValueError):
    """A dataset does not meet the raw-data contract; the message names the file and the fix."""


def _where(source: str | Path | None) -> str:
    return f"{source}: " if source is not None else ""


def normalise_var_names(adata: ad.AnnData) -> ad.AnnData:
    """Use gene symbols as ``var_names`` and keep Ensembl ids in ``var["gene_id"]``.

    Replogle files index genes by Ensembl id and store symbols in ``var["gene_name"]``; other
    files already index by symbol. Duplicate symbols are made unique (``GENE-1``) as scanpy does.
    Works in place and returns ``adata``.
    """
    index = pd.Index(adata.var_names.astype(str))
    if "gene_name" in adata.var.columns:
        if GENE_ID_KEY not in adata.var.columns:
            adata.var[GENE_ID_KEY] = index.to_numpy()
        adata.var_names = pd.Index(adata.var["gene_name"].astype(str).to_numpy())
    elif index.str.startswith("ENSG").all() and GENE_ID_KEY not in adata.var.columns:
        adata.var[GENE_ID_KEY] = index.to_numpy()
    if not adata.var_names.is_unique:
        adata.var_names_make_unique()
    return adata


def is_integer_valued(matrix: sp.spmatrix | np.ndarray, max_check: int = 5_000_000) -> bool:
    """Whether the (first ``max_check`` stored) values are non-negative integers."""
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()
    values = values[:max_check]
    if values.size == 0:
        return True
    return bool(np.all(values >= 0) and np.all(np.equal(np.mod(values, 1), 0)))


def validate_counts_adata(
    adata: ad.AnnData,
    source: str | Path | None = None,
    perturbation_key: str = PERTURBATION_KEY,
    control_label: str = CONTROL_LABEL,
) -> None:
    """Check ``adata`` against the raw contract; raise :class:`DataContractError` naming the problem.

    Checks: the perturbation column exists and has no missing values, at least one control
    cell and one perturbed cell, unique cell and gene names, counts that are non-negative
    integers, and at least one gene and cell.
    """
    where = _where(source)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DataContractError(f"{where}the dataset is empty ({adata.n_obs} cells × {adata.n_vars} genes).")
    if perturbation_key not in adata.obs.columns:
        raise DataContractError(
            f"{where}obs has no column {perturbation_key!r} naming each cell's perturbed gene "
            f"(columns present: {list(adata.obs.columns)[:20]}). Pass the right column with "
            "--perturbation-key."
        )
    labels = adata.obs[perturbation_key]
    if labels.isna().any():
        raise DataContractError(
            f"{where}obs[{perturbation_key!r}] is missing for {int(labels.isna().sum())} cells; "
            f"label controls {control_label!r} and drop unassigned cells."
        )
    labels = labels.astype(str)
    n_controls = int((labels == control_label).sum())
    if n_controls == 0:
        examples = ", ".join(map(repr, labels.value_counts().index[:5]))
        raise DataContractError(
            f"{where}no control cells: no cell has obs[{perturbation_key!r}] == {control_label!r} "
            f"(most common labels: {examples}). Pass the control label with --control-label."
        )
    if n_controls == adata.n_obs:
        raise DataContractError(f"{where}every cell is a control; there are no perturbed cells.")
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][:3].tolist()
        raise DataContractError(f"{where}duplicate cell names, e.g. {dup}; make them unique.")
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()][:3].tolist()
        raise DataContractError(f"{where}duplicate gene names, e.g. {dup}; make them unique.")
    if not is_integer_valued(adata.X):
        raise DataContractError(
            f"{where}X does not hold raw UMI counts (found negative or non-integer values). "
            "Store the raw counts in X (or pass a file whose X is counts), not normalised data."
        )


def read_counts_h5ad(
    path: str | Path,
    perturbation_key: str = PERTURBATION_KEY,
    control_label: str = CONTROL_LABEL,
    rows: np.ndarray | None = None,
) -> ad.AnnData:
    """Read a counts ``.h5ad`` into the raw contract: CSR float32 X, symbols as ``var_names``,
    ``obs["gene"]`` as the perturbation label with controls named ``non-targeting``.

    ``rows`` (a boolean mask or indices) reads only those cells from disk, so a large file's
    kept cells can be loaded without holding the whole matrix. Raises
    :class:`DataContractError` (naming ``path``) when the file breaks the contract.
    """
    path = Path(path)
    if not path.exists():
        raise DataContractError(f"{path}: no such file.")
    import anndata as ad

    try:
        if rows is None:
            adata = ad.read_h5ad(path)
        else:
            backed = ad.read_h5ad(path, backed="r")
            index = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
            adata = backed[index].to_memory()
            backed.file.close()
    except Exception as err:  # h5py/anndata raise many types for a corrupt file
        raise DataContractError(f"{path}: not a readable .h5ad file ({type(err).__name__}: {err}).") from err
    normalise_var_names(adata)
    validate_counts_adata(adata, path, perturbation_key, control_label)
    labels = adata.obs[perturbation_key].astype(str)
    adata.obs[PERTURBATION_KEY] = pd.Categorical(labels.where(labels != control_label, CONTROL_LABEL))
    if not sp.issparse(adata.X):
        adata.X = sp.csr_matrix(adata.X)
    elif not sp.isspmatrix_csr(adata.X):
        adata.X = sp.csr_matrix(adata.X)
    if adata.X.dtype != np.float32:
        adata.X = adata.X.astype(np.float32)
    return adata
