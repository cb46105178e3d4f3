"""The raw-data contract for a counts file whose matrix stays on disk (:func:`open_counts_h5ad`).

The same decisions as :func:`gpo_vae.data.contract.read_counts_h5ad` (where the counts are, gene
symbols, duplicates, labels, batches, every check and error), made from obs, var and the counts
read a block of values at a time, so that nothing the size of the matrix is held.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import numpy as np
import pandas as pd
from anndata.io import read_elem

from gpo_vae.data.contract import (
    _CHECK_BLOCK,
    DataContractError,
    _choose_counts,
    _label_contract,
    _where,
    first_non_count,
)
from gpo_vae.data.gene_columns import duplicate_column_plan, normalise_var_names, resolve_duplicate_genes
from gpo_vae.data.layout import ScreenLayout
from gpo_vae.data.on_disk import CountsFormatError, CountsOnDisk
from gpo_vae.io import FileMemo, file_problem


def _first_non_count_on_disk(node: Any) -> tuple[int, float] | None:
    """:func:`first_non_count` of a stored matrix, read a block of values at a time."""
    if isinstance(node, h5py.Dataset):  # dense: blocks of rows
        step = max(1, _CHECK_BLOCK // max(int(node.shape[1]), 1))
        for start in range(0, int(node.shape[0]), step):
            found = first_non_count(np.asarray(node[start : start + step]))
            if found is not None:
                return start + found[0], found[1]
        return None
    data = node["data"]
    indptr = None
    for start in range(0, int(data.shape[0]), _CHECK_BLOCK):
        block = np.asarray(data[start : start + _CHECK_BLOCK])
        bad = np.flatnonzero((block < 0) | ~np.isfinite(block) | (block != np.floor(block)))
        if bad.size:
            if indptr is None:
                indptr = np.asarray(node["indptr"])
            position = start + int(bad[0])
            encoding = node.attrs.get("encoding-type", "")
            if str(encoding.decode() if isinstance(encoding, bytes) else encoding).startswith("csc"):
                return int(node["indices"][position]), float(block[bad[0]])  # column-major: indices are rows
            return int(np.searchsorted(indptr, position, side="right") - 1), float(block[bad[0]])
    return None


def _counts_element(file: Any, layout: ScreenLayout, path: Path, obs_names: pd.Index) -> tuple[str, str]:
    """(element, counts source) of :func:`_counts_source`, for a file whose matrices stay on disk."""

    def element(name: str) -> str:
        return "X" if name == "X" else "raw/X" if name == "raw" else f"layers/{name}"

    def first_bad(name: str) -> tuple[int, float] | None:
        return _first_non_count_on_disk(file[element(name)]) if element(name) in file else (-1, float("nan"))

    layers = list(file["layers"].keys()) if "layers" in file else []
    has_raw = "raw" in file and "X" in file["raw"]
    source = _choose_counts(layout.counts_layer, _where(path), layers, has_raw, first_bad, obs_names)
    return element(source), source


#: The screen this process opened last: the summary statistics and the preprocessing of one
#: run (threads of one process) check a file's labels and every stored count once, not once per
#: stage. One file (obs and var of one screen), under the layout asked for and as resolved (what
#: a later stage is given: it makes the same decisions). Counts held in memory (a CSC file) are
#: not kept.
_OPENED = FileMemo(max_files=1)


def open_counts_h5ad(path: str | Path, layout: ScreenLayout | None = None) -> tuple[ad.AnnData, CountsOnDisk]:
    """:func:`read_counts_h5ad` with the counts left on disk: (contract AnnData without X, counts).

    The AnnData holds obs, var and uns as :func:`read_counts_h5ad` makes them; the counts are a
    :class:`~gpo_vae.data.on_disk.CountsOnDisk` over the element that holds them (checked to be
    raw counts a block at a time), in the contract's columns. Nothing the size of the matrix is
    read. A file unchanged since this process last opened it with the same layout is not read or
    checked again (a copy of the AnnData is returned).
    """
    path = Path(path)
    layout = layout or ScreenLayout()
    known = _OPENED.recall(
        path,
        lambda: _open_counts_h5ad(path, layout),
        variant=layout,
        keep=lambda opened: opened[1]._memory is None,
        aliases=lambda opened: [ScreenLayout.from_dict(opened[0].uns["layout"])],
    )
    adata, counts = known
    return adata.copy(), counts


def _open_counts_h5ad(path: Path, layout: ScreenLayout) -> tuple[ad.AnnData, CountsOnDisk]:
    problem = file_problem(path)
    if problem:
        raise DataContractError(f"{path}: {problem}; give the path of an .h5ad file.")
    try:
        with h5py.File(path, "r") as file:
            obs = read_elem(file["obs"])
            element, source_name = _counts_element(file, layout, path, pd.Index(obs.index))
            var = read_elem(file["raw/var"] if element == "raw/X" else file["var"])
    except DataContractError:
        raise
    except Exception as err:  # h5py/anndata raise many types for a corrupt file
        raise DataContractError(f"{path}: not a readable .h5ad file ({type(err).__name__}: {err}).") from err
    adata = ad.AnnData(obs=obs, var=var)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DataContractError(f"{path}: the dataset is empty ({adata.n_obs} cells × {adata.n_vars} genes).")
    full_obs = adata.obs.copy()
    record: dict[str, Any] = {"counts": source_name}
    record.update(normalise_var_names(adata))
    names = pd.Index(adata.var_names.astype(str))
    adata, duplicates = resolve_duplicate_genes(adata, layout.duplicate_genes, path)
    record.update(duplicates)
    columns = (
        duplicate_column_plan(names, pd.DataFrame(index=names), layout.duplicate_genes)[0]
        if (duplicates["duplicate_genes"])
        else None
    )
    try:
        counts = CountsOnDisk(path, element, columns=columns)
    except CountsFormatError as err:
        raise DataContractError(str(err)) from err
    return _label_contract(adata, record, layout, path, full_obs, None), counts
