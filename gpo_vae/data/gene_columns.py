"""Gene columns of a raw screen (design §1): gene symbols as ``var_names``, Ensembl ids in
``var["gene_id"]``, and one column per symbol (duplicates summed, the first kept, or refused).

The plan for duplicates (:func:`duplicate_column_plan`) is also what an on-disk screen applies
to every block of counts it reads (:mod:`gpo_vae.data.on_disk`), so the two paths agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpo_vae.data.gene_ids import GENE_ID_COLUMNS, GENE_ID_KEY, id_column, mostly_ensembl_ids
from gpo_vae.errors import DataContractError

if TYPE_CHECKING:
    import anndata as ad

#: var columns that hold gene symbols when the index holds Ensembl ids (Replogle, 10x, CELLxGENE).
SYMBOL_COLUMNS = ("gene_name", "gene_symbols", "gene_symbol", "feature_name", "symbol", "gene_short_name")


def _symbol_column(var: pd.DataFrame, index: pd.Index) -> str | None:
    """The var column to take symbols from: ``gene_name`` when present (Replogle), else a known
    symbol column when the index holds Ensembl ids."""
    if "gene_name" in var.columns:
        return "gene_name"
    if not mostly_ensembl_ids(index):
        return None
    return next((column for column in SYMBOL_COLUMNS if column in var.columns), None)


def normalise_var_names(adata: ad.AnnData) -> dict[str, Any]:
    """Use gene symbols as ``var_names`` and keep Ensembl ids in ``var["gene_id"]`` (in place).

    The ids come from the index when it holds them (and a symbol column exists), else from the
    first column of :data:`GENE_ID_COLUMNS` that holds ids (``gene_ids`` of 10x, ``ensemble_id``
    of the GPO-VAE authors' files). A gene whose symbol is missing keeps its id. Duplicates are
    left for :func:`resolve_duplicate_genes`. Returns what was done (the symbol and id columns
    used, if any).
    """
    index = pd.Index(adata.var_names.astype(str))
    ids_from = None
    if GENE_ID_KEY not in adata.var.columns and (ids_from := id_column(adata.var, GENE_ID_COLUMNS)):
        adata.var[GENE_ID_KEY] = adata.var[ids_from].astype(str).to_numpy()
    column = _symbol_column(adata.var, index)
    if column is not None:
        if GENE_ID_KEY not in adata.var.columns:
            adata.var[GENE_ID_KEY] = index.to_numpy()
        symbols = adata.var[column].astype(object).where(adata.var[column].notna(), None)
        symbols = pd.Series(
            [
                str(s).strip() if s is not None and str(s).strip() else i
                for s, i in zip(symbols, index, strict=True)
            ]
        )
        adata.var_names = pd.Index(symbols.to_numpy(dtype=str))
    elif index.str.startswith("ENSG").all() and GENE_ID_KEY not in adata.var.columns:
        adata.var[GENE_ID_KEY] = index.to_numpy()
    return {"symbol_column": column, "gene_id_column": ids_from}


def resolve_duplicate_genes(
    adata: ad.AnnData, how: str, source: str | Path | None = None
) -> tuple[ad.AnnData, dict[str, Any]]:
    """One column per gene symbol: ``sum`` the counts of duplicate symbols, keep the ``first``,
    or raise (``error``) naming them. Returns the (new) AnnData and a record of the duplicates."""
    names = pd.Index(adata.var_names.astype(str))
    duplicated = names[names.duplicated(keep=False)]
    if duplicated.empty:
        return adata, {"duplicate_genes": [], "duplicate_genes_resolved": None}
    genes = sorted(set(duplicated))
    shown = ", ".join(f"{g} ({int((names == g).sum())} columns)" for g in genes[:5])
    more = f" and {len(genes) - 5} more" if len(genes) > 5 else ""
    if how == "error":
        where = f"{source}: " if source is not None else ""
        raise DataContractError(
            f"{where}{len(genes)} gene symbols name more than one column: {shown}{more}. "
            "Pass --duplicate-genes sum (add their counts) or --duplicate-genes first (keep the first)."
        )
    columns, var = duplicate_column_plan(names, adata.var, how)
    import anndata as ad

    if adata.X is None:  # obs and var of a file whose counts stay on disk
        X = None
    else:
        X = adata.X[:, columns] if how == "first" else sp.csr_matrix(adata.X) @ columns
    out = ad.AnnData(X=X, obs=adata.obs, var=var)
    return out, {"duplicate_genes": genes, "duplicate_genes_resolved": how}


def duplicate_column_plan(
    names: pd.Index, var: pd.DataFrame, how: str
) -> tuple[np.ndarray | sp.csr_matrix, pd.DataFrame]:
    """How duplicate symbols become one column each, and the var that results.

    ``first``: the stored columns to keep (an index array); ``sum``: a stored-columns × genes
    CSR matrix of ones that a block of counts is multiplied by. Gene ids of summed columns are
    joined with ``;``.
    """
    first = ~names.duplicated(keep="first")
    out = var.loc[first].copy()
    if how == "first":
        return np.flatnonzero(first), out
    codes = pd.Index(names[first]).get_indexer(names)
    join = sp.csr_matrix((np.ones(len(names), np.float32), (np.arange(len(names)), codes)))
    if GENE_ID_KEY in var.columns:
        ids = var[GENE_ID_KEY].astype(str).groupby(codes, sort=True).agg(";".join)
        out[GENE_ID_KEY] = ids.to_numpy()
    return join, out
