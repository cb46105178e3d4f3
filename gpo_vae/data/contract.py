"""The raw-dataset contract (design §1): what every loader promises the later stages.

A raw dataset is an AnnData of UMI counts (cells × genes, sparse CSR, integer valued) with
``obs["gene"]`` holding each cell's canonical perturbation label (:mod:`gpo_vae.data.labels`:
a gene symbol, ``A+B`` for a combination, ``non-targeting`` for controls), gene symbols as
``var_names`` (unique) and, when the layout names a batch column, ``obs["batch"]``.
:func:`read_counts_h5ad` reads a file saved in any :class:`~gpo_vae.data.layout.ScreenLayout`
into it; every problem is a :class:`DataContractError` naming the file and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpo_vae.data.gene_columns import SYMBOL_COLUMNS, normalise_var_names, resolve_duplicate_genes
from gpo_vae.data.gene_ids import (
    ENSEMBL_ID_PATTERN,
    GENE_ID_KEY,
    TARGET_IDS_KEY,
    mostly_ensembl_ids,
    target_gene_ids,
)
from gpo_vae.data.labels import LabelError, canonical_labels
from gpo_vae.data.layout import (
    AUTO_COUNTS_LAYERS,
    BATCH_KEY,
    CONTROL_LABEL,
    PERTURBATION_KEY,
    ScreenLayout,
)
from gpo_vae.errors import DataContractError
from gpo_vae.io import file_problem

if TYPE_CHECKING:  # anndata is imported where a file is read: the registry's constants stay light
    import anndata as ad

#: Labels that are a missing value written out as text (``str(nan)``, ``str(None)``, pandas' NA).
MISSING_AS_TEXT = ("nan", "none", "<na>", "")
#: Stored values checked at once for being counts (bounds the temporaries, not the coverage).
_CHECK_BLOCK = 1 << 24

__all__ = [
    "CONTROL_LABEL",
    "GENE_ID_KEY",
    "PERTURBATION_KEY",
    "DataContractError",
    "first_non_count",
    "is_integer_valued",
    "read_counts_h5ad",
    "validate_counts_adata",
]


def _where(source: str | Path | None) -> str:
    return f"{source}: " if source is not None else ""


def first_non_count(matrix: sp.spmatrix | sp.sparray | np.ndarray) -> tuple[int, float] | None:
    """(row, value) of the first stored value that is negative, infinite or not an integer
    (NaN), or None.

    Every value is checked, in blocks of stored values, so a file whose last cells are
    normalised is caught as surely as one whose first cells are.
    """
    if sp.issparse(matrix):
        csr = matrix.tocsr() if not isinstance(matrix, sp.csr_matrix | sp.csr_array) else matrix
        values, indptr = csr.data, csr.indptr
    else:
        dense = np.asarray(matrix)
        values = dense.reshape(-1)
        indptr = np.arange(dense.shape[0] + 1) * (dense.shape[1] if dense.ndim == 2 else 1)
    for start in range(0, values.size, _CHECK_BLOCK):
        block = values[start : start + _CHECK_BLOCK]
        # inf passes the integer test (inf == floor(inf)), so finiteness is checked on its own
        bad = np.flatnonzero((block < 0) | ~np.isfinite(block) | (block != np.floor(block)))
        if bad.size:
            position = start + int(bad[0])
            return int(np.searchsorted(indptr, position, side="right") - 1), float(values[position])
    return None


def is_integer_valued(matrix: sp.spmatrix | sp.sparray | np.ndarray) -> bool:
    """Whether every stored value is a non-negative integer."""
    return first_non_count(matrix) is None


def _counts_source(adata: ad.AnnData, layout: ScreenLayout, source: str | Path | None) -> str:
    """Where the raw counts are (``X``, ``raw`` or a layer name), per ``layout.counts_layer``."""

    def matrix(name: str) -> Any:
        return adata.X if name == "X" else adata.raw.X if name == "raw" else adata.layers[name]

    return _choose_counts(
        layout.counts_layer,
        _where(source),
        list(adata.layers.keys()),
        adata.raw is not None,
        lambda name: first_non_count(matrix(name)),
        adata.obs_names,
    )


def _choose_counts(
    choice: str,
    where: str,
    layers: list[str],
    has_raw: bool,
    first_bad: Callable[[str], tuple[int, float] | None],
    obs_names: pd.Index,
) -> str:
    """The counts source (``X``, ``raw`` or a layer) that ``choice`` names or ``auto`` finds:
    ``first_bad(source)`` is the first value there that is not a count (:func:`first_non_count`;
    row −1: the source is absent)."""
    options = f"layers: {layers}" if layers else "no layers"
    if has_raw:
        options += ", .raw"

    def bad(name: str) -> str | None:
        found = first_bad(name)
        if found is None:
            return None
        row, value = found
        what = ".raw" if name == "raw" and choice == "auto" else name
        if row < 0:
            return f"{what} is absent"
        return f"{what} is not raw counts: cell {obs_names[row]!r} (row {row:,}) holds {value:.4g}"

    if choice == "auto":
        problem = bad("X")
        if problem is None:
            return "X"
        for name in AUTO_COUNTS_LAYERS:
            if name in layers and bad(name) is None:
                return name
        if has_raw and bad("raw") is None:
            return "raw"
        raise DataContractError(
            f"{where}{problem}, and no layer holds counts ({options}). The pipeline needs raw UMI "
            "counts: store them in X or in a layer and pass --counts-layer NAME."
        )
    if choice == "raw" and not has_raw:
        raise DataContractError(f"{where}--counts-layer raw, but the file has no .raw ({options}).")
    if choice not in ("X", "raw") and choice not in layers:
        raise DataContractError(f"{where}--counts-layer {choice!r}: no such layer ({options}).")
    problem = bad(choice)
    if problem is not None:
        raise DataContractError(f"{where}{problem}. Pass the layer that holds raw UMI counts ({options}).")
    return choice


def _as_counts_adata(adata: ad.AnnData, source_name: str) -> ad.AnnData:
    """A lean AnnData holding the chosen counts as X (CSR float32), its var and the obs."""
    import anndata as ad

    if source_name == "raw":
        X, var = adata.raw.X, adata.raw.var.copy()
    else:
        X = adata.X if source_name == "X" else adata.layers[source_name]
        var = adata.var.copy()
    X = sp.csr_matrix(X, dtype=np.float32) if not isinstance(X, sp.csr_matrix) or X.dtype != np.float32 else X
    return ad.AnnData(X=X, obs=adata.obs.copy(), var=var)


def validate_counts_adata(
    adata: ad.AnnData,
    source: str | Path | None = None,
    perturbation_key: str = PERTURBATION_KEY,
    control_label: str = CONTROL_LABEL,
) -> None:
    """Check a contract AnnData; raise :class:`DataContractError` naming the problem.

    Checks: the perturbation column exists and has no missing values, at least one control
    cell and one perturbed cell, unique cell and gene names, counts that are non-negative
    integers (every value), and at least one gene and cell.
    """
    validate_labels_and_names(adata, source, perturbation_key, control_label)
    found = first_non_count(adata.X)
    if found is not None:
        row, value = found
        raise DataContractError(
            f"{_where(source)}X does not hold raw UMI counts: cell {adata.obs_names[row]!r} (row {row:,}) holds "
            f"{value:.4g}. Store the raw counts in X or a layer (--counts-layer), not normalised data."
        )


def validate_labels_and_names(
    adata: ad.AnnData,
    source: str | Path | None = None,
    perturbation_key: str = PERTURBATION_KEY,
    control_label: str = CONTROL_LABEL,
) -> None:
    """The checks of :func:`validate_counts_adata` that need no count (obs and var alone)."""
    where = _where(source)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DataContractError(f"{where}the dataset is empty ({adata.n_obs} cells × {adata.n_vars} genes).")
    _check_labels_column(adata.obs, perturbation_key, control_label, where)
    labels = adata.obs[perturbation_key].astype(str)
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
        raise DataContractError(
            f"{where}duplicate gene names, e.g. {dup}; pass --duplicate-genes sum or first."
        )


def _check_labels_column(obs: pd.DataFrame, key: str, control_label: str, where: str) -> None:
    if key not in obs.columns:
        raise DataContractError(
            f"{where}obs has no column {key!r} naming each cell's perturbed gene "
            f"(columns present: {list(obs.columns)[:20]}). Pass the right column with "
            "--perturbation-key."
        )
    labels = obs[key]
    if labels.isna().any():
        raise DataContractError(
            f"{where}obs[{key!r}] is missing for {int(labels.isna().sum())} cells; "
            f"label controls {control_label!r} and drop unassigned cells."
        )
    distinct = (
        labels.cat.categories if isinstance(labels.dtype, pd.CategoricalDtype) else pd.Index(labels.unique())
    )
    text = pd.Index(distinct.astype(str))
    odd = text[text.str.strip().str.lower().isin(MISSING_AS_TEXT)]
    if len(odd):
        n_cells = int(labels.astype(str).isin(odd).sum())
        raise DataContractError(
            f"{where}obs[{key!r}] holds {odd[0]!r} for {n_cells} cells: a missing label saved "
            f"as text (a column of NaN cast to str), not a gene; label controls {control_label!r} and drop "
            "unassigned cells."
        )


def screen_labels(
    obs: pd.DataFrame, var: pd.DataFrame, var_names: pd.Index, layout: ScreenLayout, source: str | Path | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Canonical label of every cell (:func:`~gpo_vae.data.labels.canonical_labels`) and the record."""
    where = _where(source)
    _check_labels_column(obs, layout.perturbation_key, layout.control_label, where)
    raw = obs[layout.perturbation_key]
    categories = (
        raw.cat.categories
        if isinstance(raw.dtype, pd.CategoricalDtype)
        else pd.Index(raw.astype(str).unique())
    )
    gene_ids = var[GENE_ID_KEY] if GENE_ID_KEY in var.columns else None
    try:
        canon = canonical_labels(
            categories.astype(str), layout, var_names, gene_ids, source=str(source) if source else None
        )
    except LabelError as err:
        raise DataContractError(str(err)) from None
    _check_targets_named_like_genes(var_names, canon.record["unmatched"], where)
    labels = raw.astype(str).map(canon.mapping).to_numpy(dtype=object)
    return labels, canon.record


def _check_targets_named_like_genes(var_names: pd.Index, unmatched: list[str], where: str) -> None:
    """Stop when the genes are Ensembl ids with no symbol column while the labels name genes by
    symbol: every target would read as "not measured" (no on-target filter, PCA pairing) though
    it is measured under its id."""
    names = pd.Index(var_names.astype(str))
    if not mostly_ensembl_ids(names):
        return
    symbols = [gene for gene in unmatched if not re.match(ENSEMBL_ID_PATTERN, gene)]
    if not symbols:
        return
    raise DataContractError(
        f"{where}the genes are Ensembl ids (e.g. {names[0]}) and .var has no column of gene symbols "
        f"(looked for {', '.join(SYMBOL_COLUMNS)}), while the perturbation labels name genes by symbol "
        f"({', '.join(map(repr, symbols[:5]))}{' …' if len(symbols) > 5 else ''}): every target would read as "
        "not measured. Add the symbols as a .var column, e.g. adata.var['gene_name'] = symbols; "
        "adata.write_h5ad(path), or label the cells by Ensembl id."
    )


def screen_batches(obs: pd.DataFrame, layout: ScreenLayout, source: str | Path | None) -> np.ndarray | None:
    """The batch of every cell (strings), or None when the layout names no batch column."""
    if layout.batch_key is None:
        return None
    where = _where(source)
    if layout.batch_key not in obs.columns:
        raise DataContractError(
            f"{where}--batch-key {layout.batch_key!r}: obs has no such column "
            f"(columns present: {list(obs.columns)[:20]})."
        )
    values = obs[layout.batch_key]
    if values.isna().any():
        raise DataContractError(
            f"{where}obs[{layout.batch_key!r}] is missing for {int(values.isna().sum())} cells; give every cell its batch."
        )
    return values.astype(str).to_numpy(dtype=object)


def control_cells_by_batch(
    labels: np.ndarray | pd.Series, batches: np.ndarray | pd.Series | None, control_label: str = CONTROL_LABEL
) -> dict[str, int]:
    """Control cells per batch (``{"all": n}`` without batches)."""
    is_control = np.asarray(labels).astype(str) == control_label
    if batches is None:
        return {"all": int(is_control.sum())}
    batch = np.asarray(batches).astype(str)
    return {str(name): int((is_control & (batch == name)).sum()) for name in sorted(set(batch.tolist()))}


def read_counts_h5ad(
    path: str | Path,
    layout: ScreenLayout | None = None,
    rows: np.ndarray | None = None,
) -> ad.AnnData:
    """Read a counts ``.h5ad`` saved in ``layout`` into the raw contract.

    X becomes the raw counts (CSR float32) wherever they were stored, ``var_names`` unique gene
    symbols, ``obs["gene"]`` the canonical labels and ``obs["batch"]`` the batch when the layout
    names one. ``uns["layout"]`` holds the layout with ``counts_layer`` resolved (pass it back
    to read the same file the same way) and ``uns["layout_record"]`` what was decided (counts
    source, symbol column, duplicates, control label found, guide pattern, combinations, genes
    matched ignoring case or by id).

    ``rows`` (a boolean mask or indices) reads only those cells from disk, so a large file's
    kept cells can be loaded without holding the whole matrix; labels are still decided from
    every cell's label. Raises :class:`DataContractError` (naming ``path``) when the file breaks
    the contract.
    """
    path = Path(path)
    layout = layout or ScreenLayout()
    problem = file_problem(path)
    if problem:
        raise DataContractError(f"{path}: {problem}; give the path of an .h5ad file.")
    import anndata as ad

    index = None
    if rows is not None:
        index = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
    try:
        if index is None:
            adata = ad.read_h5ad(path)
            full_obs = adata.obs
        else:
            backed = ad.read_h5ad(path, backed="r")
            full_obs = backed.obs.copy()
            adata = backed[index].to_memory()
            backed.file.close()
    except Exception as err:  # h5py/anndata raise many types for a corrupt file
        raise DataContractError(f"{path}: not a readable .h5ad file ({type(err).__name__}: {err}).") from err
    return counts_from_adata(adata, layout, path, full_obs, index)


def counts_from_adata(
    adata: ad.AnnData,
    layout: ScreenLayout | None = None,
    source: str | Path | None = None,
    full_obs: pd.DataFrame | None = None,
    rows: np.ndarray | None = None,
) -> ad.AnnData:
    """An in-memory AnnData (saved by any tool) as the raw contract; see :func:`read_counts_h5ad`.

    ``adata`` is not modified. ``source`` names it in errors. ``full_obs`` and ``rows`` are for
    a subset read from a file: labels are decided on every cell of ``full_obs``, then the
    ``rows`` (indices) of it that ``adata`` holds are kept.
    """
    layout = layout or ScreenLayout()
    where = _where(source)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DataContractError(f"{where}the dataset is empty ({adata.n_obs} cells × {adata.n_vars} genes).")
    if adata.isbacked:  # read_h5ad(..., backed="r"): its matrix is read from the file once, here
        adata = adata.to_memory()
    full_obs = adata.obs if full_obs is None else full_obs
    source_name = _counts_source(adata, layout, source)
    adata = _as_counts_adata(adata, source_name)
    record: dict[str, Any] = {"counts": source_name}
    record.update(normalise_var_names(adata))
    adata, duplicates = resolve_duplicate_genes(adata, layout.duplicate_genes, source)
    record.update(duplicates)
    return _label_contract(adata, record, layout, source, full_obs, rows)


def _label_contract(
    adata: ad.AnnData,
    record: dict[str, Any],
    layout: ScreenLayout,
    source: str | Path | None,
    full_obs: pd.DataFrame,
    rows: np.ndarray | None,
) -> ad.AnnData:
    """Labels, batches, checks and ``uns`` of the contract, on counts already resolved (``adata.X``
    None: counts on disk, checked where they were found)."""
    source_name = record["counts"]
    labels, label_record = screen_labels(full_obs, adata.var, adata.var_names, layout, source)
    target_ids = target_gene_ids(full_obs, labels)
    if rows is not None:
        labels = labels[rows]
    record.update(label_record)
    adata.obs[PERTURBATION_KEY] = pd.Categorical(labels)
    batches = screen_batches(adata.obs, layout, source)
    if batches is not None:
        adata.obs[BATCH_KEY] = pd.Categorical(batches)
        record["batches"] = sorted(set(batches.tolist()))
    if adata.X is None:
        validate_labels_and_names(adata, source, PERTURBATION_KEY, CONTROL_LABEL)
    else:
        validate_counts_adata(adata, source, PERTURBATION_KEY, CONTROL_LABEL)
    resolved = ScreenLayout.from_dict({**layout.to_dict(), "counts_layer": source_name})
    adata.uns["layout"] = resolved.to_dict()
    adata.uns["layout_record"] = record
    if target_ids:
        adata.uns[TARGET_IDS_KEY] = target_ids
    return adata
