"""Library-size normalisation and log1p on sparse count matrices (design §4, §5).

Every function keeps a CSR matrix sparse: scaling a row multiplies its stored values only, and
``log1p(0) = 0`` leaves the sparsity pattern unchanged. The results match
``scanpy.pp.normalize_total(target_sum=...)`` followed by ``scanpy.pp.log1p`` up to float32
rounding (we accumulate library sizes in float64).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpo_vae.preprocessing.config import DEFAULT_TARGET_SUM

# Stored values handled at once when summing or scaling rows: bounds the float64 temporaries
# (~16M values ≈ 130 MB each) on matrices with billions of stored values.
_BLOCK_NNZ = 1 << 24


def as_csr(X: sp.spmatrix | sp.sparray | np.ndarray, dtype: np.dtype | type | None = None) -> sp.csr_matrix:
    """``X`` as a ``scipy.sparse.csr_matrix`` (no copy when it already is one of ``dtype``).

    ``csr_matrix`` rather than ``csr_array``: parts of the single-cell stack (scrublet, older
    scanpy helpers) still call matrix-only methods.
    """
    if not sp.issparse(X):
        X = sp.csr_matrix(np.asarray(X))
    elif not isinstance(X, sp.csr_matrix):
        X = sp.csr_matrix(X)
    if dtype is not None and X.dtype != dtype:
        X = X.astype(dtype)
    return X


def _row_blocks(X: sp.csr_matrix, max_nnz: int = _BLOCK_NNZ) -> list[tuple[int, int]]:
    """Contiguous row ranges holding about ``max_nnz`` stored values each."""
    n_rows = X.shape[0]
    rows_per_block = max(1, int(max_nnz * n_rows // max(X.nnz, 1)))
    return [(start, min(start + rows_per_block, n_rows)) for start in range(0, n_rows, rows_per_block)]


def on_disk(X: object) -> bool:
    """Whether ``X`` is a :class:`~gpo_vae.data.on_disk.CountsOnDisk` (read a block at a time)."""
    return hasattr(X, "row_blocks")


def row_blocks(X: Any, size: int) -> Iterator[tuple[int, int, sp.csr_matrix]]:
    """(start, stop, rows start:stop as CSR) over an in-memory or on-disk count matrix."""
    if on_disk(X):
        yield from X.row_blocks(size)
        return
    X = as_csr(X)
    for start in range(0, X.shape[0], size):
        stop = min(start + size, X.shape[0])
        yield start, stop, X[start:stop]


def map_row_blocks(X: Any, function: Callable[[Any], Any]) -> Any:
    """``function(X)`` for a row-wise function; on an on-disk matrix, applied to each block of
    rows and the results stacked (CSR, DataFrame or array), so the whole matrix is never held."""
    if not on_disk(X):
        return function(X)
    parts = [function(block) for _, _, block in X.row_blocks()]
    if not parts:
        return function(sp.csr_matrix((0, X.shape[1]), dtype=np.float32))
    if sp.issparse(parts[0]):
        return sp.vstack(parts, format="csr")
    if isinstance(parts[0], pd.DataFrame):
        return pd.concat(parts)
    return np.concatenate(parts)


def take_rows(X: Any, rows: np.ndarray) -> Any:
    """Rows ``rows`` (increasing): an on-disk matrix stays on disk (a view of those rows), a
    sparse one is CSR, a dense one stays dense."""
    if on_disk(X):
        return X.subset(rows)
    return as_csr(X)[rows] if sp.issparse(X) else np.asarray(X)[rows]


def rows_and_columns(X: Any, rows: np.ndarray, columns: np.ndarray, block_cells: int = 4096) -> sp.csr_matrix:
    """``X[rows][:, columns]`` as CSR, reading an on-disk matrix ``block_cells`` rows at a time
    (only the columns kept), so the rows' other genes are never held together."""
    rows = np.asarray(rows, dtype=np.int64)
    columns = np.asarray(columns, dtype=np.int64)
    if not on_disk(X):
        return as_csr(X[rows] if sp.issparse(X) else np.asarray(X)[rows])[:, columns]
    parts = [X[rows[start : start + block_cells]][:, columns] for start in range(0, rows.size, block_cells)]
    if not parts:
        return sp.csr_matrix((0, columns.size), dtype=np.float32)
    return sp.vstack(parts, format="csr")


def library_size(X: sp.spmatrix | sp.sparray | np.ndarray) -> np.ndarray:
    """Total counts per row (cell), accumulated in float64 (an on-disk matrix a block at a time)."""
    if on_disk(X):
        return np.concatenate([library_size(block) for _, _, block in X.row_blocks()] or [np.zeros(0)])
    if not sp.issparse(X):
        return np.asarray(X, dtype=np.float64).sum(axis=1)
    X = as_csr(X)
    out = np.zeros(X.shape[0], dtype=np.float64)
    # np.add.reduceat gives an empty row the next row's first value: only filled rows are summed
    # (each runs to the next filled row's start). It converts to float64 a buffer at a time and
    # is 4× faster than differences of a running sum.
    filled = np.flatnonzero(np.diff(X.indptr) > 0)
    if filled.size:
        out[filled] = np.add.reduceat(X.data[: X.indptr[-1]], X.indptr[filled], dtype=np.float64)
    return out


def scale_rows(
    X: sp.spmatrix | sp.sparray, factors: np.ndarray, dtype: np.dtype | type = np.float32
) -> sp.csr_matrix:
    """A new CSR matrix with row ``i`` of ``X`` multiplied by ``factors[i]`` (pattern kept)."""
    X = as_csr(X)
    factors = np.asarray(factors, dtype=np.float64)
    if factors.shape != (X.shape[0],):
        raise ValueError(f"need one factor per row: got shape {factors.shape} for {X.shape[0]} rows")
    data = np.empty(X.nnz, dtype=dtype)
    for start, stop in _row_blocks(X):
        lo, hi = X.indptr[start], X.indptr[stop]
        per_value = np.repeat(factors[start:stop], np.diff(X.indptr[start : stop + 1]))
        data[lo:hi] = X.data[lo:hi] * per_value
    return sp.csr_matrix((data, X.indices.copy(), X.indptr.copy()), shape=X.shape)


def normalize_total(
    X: sp.spmatrix | sp.sparray | np.ndarray, target_sum: float = DEFAULT_TARGET_SUM
) -> sp.csr_matrix:
    """Scale each cell to ``target_sum`` total counts (CSR float32). Empty cells stay all-zero."""
    X = as_csr(X)
    lib = library_size(X)
    factors = np.divide(target_sum, lib, out=np.zeros_like(lib), where=lib > 0)
    return scale_rows(X, factors)


def normalize_log1p(
    X: sp.spmatrix | sp.sparray | np.ndarray, target_sum: float = DEFAULT_TARGET_SUM
) -> sp.csr_matrix:
    """``log1p`` of library-normalised counts (CSR float32), as scanpy's normalize_total + log1p."""
    Xn = normalize_total(X, target_sum)
    np.log1p(Xn.data, out=Xn.data)
    return Xn
