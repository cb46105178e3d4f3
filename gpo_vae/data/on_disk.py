"""Raw counts read from an ``.h5ad`` file a block of cells at a time, never as a whole matrix.

:class:`CountsOnDisk` stands where a stage would take the in-memory CSR count matrix: it has a
``shape``, its rows are read by slice or by index (``counts[a:b]``, ``counts[rows]``, each a CSR
float32 block), :meth:`CountsOnDisk.row_blocks` walks it in blocks of cells, and the contract's
column plan (duplicate gene symbols summed or dropped, :func:`gpo_vae.data.gene_columns.duplicate_column_plan`)
is applied to every block as it is read. The rows of a CSR element are read as slices of its
``data`` and ``indices`` (its row pointers read once); a dense element is read with h5py. Peak
memory is one block.

Why not dask: the stages that need whole columns (the Wilcoxon test, scrublet) take in-memory
blocks, and blocks of our own make the on-disk and in-memory paths give identical artifacts.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

#: Cells read at a time by :meth:`CountsOnDisk.row_blocks` (about 100 MB at 8,700 genes and a
#: third of the values non-zero).
BLOCK_CELLS = 4096
#: Rows this far apart (or closer) are read as one slice, the rows between them dropped.
_MAX_GAP = 64


class CountsFormatError(ValueError):
    """The counts element of a file is no matrix."""


def _element_kind(node: h5py.Group | h5py.Dataset) -> str:
    if isinstance(node, h5py.Dataset):
        return "dense"
    encoding = node.attrs.get("encoding-type", "")
    encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
    if encoding in ("csr_matrix", "csc_matrix"):
        return encoding[:3]
    raise CountsFormatError(
        f"element {node.name!r} is neither a dense array nor a sparse matrix ({encoding!r})"
    )


@dataclass(frozen=True)
class CountsOnDisk:
    """Rows ``rows`` of the count matrix stored at ``element`` of ``path``, columns per ``columns``.

    Parameters
    ----------
    path
        The ``.h5ad`` file.
    element
        Where the counts are: ``X``, ``layers/<name>`` or ``raw/X``.
    rows
        Increasing file rows this matrix holds (None: every row).
    columns
        None (every stored column), an index array of the stored columns to keep, or a CSR
        matrix (stored columns × columns) that the block is multiplied by (summing duplicates).
    block_cells
        Cells per block of :meth:`row_blocks`.
    """

    path: Path
    element: str = "X"
    rows: np.ndarray | None = None
    columns: np.ndarray | sp.csr_matrix | None = None
    block_cells: int = BLOCK_CELLS

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        with h5py.File(self.path, "r") as file:
            if self.element not in file:
                raise CountsFormatError(f"{self.path}: no element {self.element!r}")
            node = file[self.element]
            kind = _element_kind(node)
            shape = tuple(int(n) for n in (node.shape if kind == "dense" else node.attrs["shape"]))
        memory = None
        if kind == "csc":  # cannot be read by rows: held in memory as CSR, as a whole read would
            from anndata.io import read_elem

            logger.warning(
                "%s: %s is stored column by column (CSC), which cannot be read a block of cells at a time: "
                "it is read into memory whole. Save it as CSR to keep memory bounded "
                "(adata.X = adata.X.tocsr(); adata.write_h5ad(...)).",
                self.path,
                self.element,
            )
            with h5py.File(self.path, "r") as file:
                memory = sp.csr_matrix(read_elem(file[self.element]), dtype=np.float32)
        object.__setattr__(self, "_memory", memory)
        if self.rows is not None:
            rows = np.asarray(self.rows, dtype=np.int64)
            if rows.ndim != 1 or (
                rows.size and (rows[0] < 0 or rows[-1] >= shape[0] or np.any(np.diff(rows) <= 0))
            ):
                raise ValueError(f"rows must be increasing file rows in [0, {shape[0]})")
            object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_stored_shape", shape)

    @property
    def shape(self) -> tuple[int, int]:
        n_obs = self._stored_shape[0] if self.rows is None else int(self.rows.size)
        if self.columns is None:
            return n_obs, self._stored_shape[1]
        if sp.issparse(self.columns):
            return n_obs, int(self.columns.shape[1])
        return n_obs, int(np.asarray(self.columns).size)

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def file_rows(self, positions: np.ndarray | slice) -> np.ndarray:
        """The file rows of these positions."""
        if self.rows is None:
            return np.arange(self._stored_shape[0])[positions]
        return self.rows[positions]

    def subset(self, positions: np.ndarray) -> CountsOnDisk:
        """The matrix of these rows (a boolean mask or increasing positions)."""
        positions = np.asarray(positions)
        if positions.dtype == bool:
            positions = np.flatnonzero(positions)
        rows = self.file_rows(positions.astype(np.int64))
        if rows.size > 1 and np.any(np.diff(rows) <= 0):
            raise ValueError("subset takes increasing positions")
        return self.with_fields(rows=rows)

    def with_fields(self, **fields: object) -> CountsOnDisk:
        """A copy with these fields changed, sharing what was read when this one was opened (the
        file's layout; a CSC matrix held in memory is not read again)."""
        new = copy.copy(self)
        for name, value in fields.items():
            object.__setattr__(new, name, value)
        return new

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice | np.ndarray | list[int]) -> sp.csr_matrix:
        if isinstance(key, tuple):
            raise TypeError("CountsOnDisk is read by rows: counts[rows], then index the columns of the block")
        if isinstance(key, slice):
            return self._read(self.file_rows(key))
        positions = np.asarray(key)
        if positions.dtype == bool:
            positions = np.flatnonzero(positions)
        positions = positions.astype(np.int64)
        if positions.size and (positions.min() < -self.shape[0] or positions.max() >= self.shape[0]):
            raise IndexError(f"row index out of range for {self.shape[0]} rows")
        positions = np.where(positions < 0, positions + self.shape[0], positions)
        wanted = self.file_rows(positions)
        unique, inverse = np.unique(wanted, return_inverse=True)
        block = self._read(unique)
        return block if unique.size == wanted.size and np.all(np.diff(wanted) > 0) else block[inverse]

    def row_blocks(self, size: int | None = None) -> Iterator[tuple[int, int, sp.csr_matrix]]:
        """(start, stop, rows start:stop as CSR) over the whole matrix, ``size`` cells at a time."""
        size = size or self.block_cells
        for start in range(0, self.shape[0], size):
            stop = min(start + size, self.shape[0])
            yield start, stop, self[start:stop]

    def to_memory(self) -> sp.csr_matrix:
        """Every row as one CSR matrix (the whole matrix in memory)."""
        blocks = [block for _, _, block in self.row_blocks()]
        if not blocks:
            return sp.csr_matrix(self.shape, dtype=np.float32)
        return sp.vstack(blocks, format="csr")

    def _row_pointers(self, file: h5py.File) -> np.ndarray:
        """The CSR element's row pointers, read once (8 bytes a cell)."""
        cached = getattr(self, "_indptr", None)
        if cached is None:
            cached = np.asarray(file[self.element]["indptr"][:], dtype=np.int64)
            object.__setattr__(self, "_indptr", cached)
        return cached

    def _read(self, file_rows: np.ndarray) -> sp.csr_matrix:
        """These increasing file rows, as CSR float32 in the plan's columns."""
        file_rows = np.asarray(file_rows, dtype=np.int64)
        n_stored = self._stored_shape[1]
        if file_rows.size == 0:
            block = sp.csr_matrix((0, n_stored), dtype=np.float32)
        elif self._memory is not None:
            block = self._memory[file_rows]
        elif self._kind == "csr":
            with h5py.File(self.path, "r") as file:
                block = _csr_rows(file[self.element], self._row_pointers(file), file_rows, n_stored)
        else:
            # a dense element: runs of nearby rows are read as one slice each, the rows between
            # them dropped
            breaks = np.flatnonzero(np.diff(file_rows) > _MAX_GAP) + 1
            parts = []
            with h5py.File(self.path, "r") as file:
                reader = file[self.element]
                for run in np.split(file_rows, breaks):
                    # a run spans at most block_cells file rows per read: memory holds one block
                    for lo in range(int(run[0]), int(run[-1]) + 1, self.block_cells):
                        wanted = run[(run >= lo) & (run < lo + self.block_cells)]
                        if wanted.size == 0:
                            continue
                        first, last = int(wanted[0]), int(wanted[-1]) + 1
                        part = reader[first:last]
                        parts.append(part if wanted.size == last - first else part[wanted - first])
            # one conversion for the whole block (a batch of scattered cells is many one-row parts)
            block = sp.csr_matrix(parts[0] if len(parts) == 1 else np.concatenate(parts), dtype=np.float32)
        if self.columns is not None:
            block = block @ self.columns if sp.issparse(self.columns) else block[:, self.columns]
            block = sp.csr_matrix(block, dtype=np.float32)
        block.sort_indices()
        return block


def _csr_rows(node: h5py.Group, indptr: np.ndarray, file_rows: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """Increasing rows of a CSR element, reading only their values: the rows whose stored values
    are adjacent in the file (consecutive rows) are one slice of ``data`` and ``indices``, so a
    block of cells is one read and a batch of scattered cells one small read per cell (a training
    batch no longer pays a matrix object and its row pointers per cell)."""
    lo, hi = indptr[file_rows], indptr[file_rows + 1]
    first = np.flatnonzero(np.r_[True, lo[1:] != hi[:-1]])
    last = np.r_[first[1:], lo.size] - 1
    data_node, index_node = node["data"], node["indices"]
    data = [data_node[lo[a] : hi[b]] for a, b in zip(first, last, strict=True)]
    indices = [index_node[lo[a] : hi[b]] for a, b in zip(first, last, strict=True)]
    pointers = np.zeros(file_rows.size + 1, dtype=np.int64)
    np.cumsum(hi - lo, out=pointers[1:])
    return sp.csr_matrix(
        (
            (data[0] if len(data) == 1 else np.concatenate(data)).astype(np.float32, copy=False),
            indices[0] if len(indices) == 1 else np.concatenate(indices),
            pointers,
        ),
        shape=(file_rows.size, n_cols),
    )


#: Counts are held in memory while they take at most this share of the memory available.
MEMORY_SHARE = 0.25


def fits_in_memory(counts: CountsOnDisk, share: float = MEMORY_SHARE) -> bool:
    """Whether ``counts`` (8 bytes a stored value: CSR float32, 32-bit indices) take at most
    ``share`` of the memory available now."""
    import os

    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    need = stored_values(counts) * 8
    logger.info("counts %.2f GB, %.2f GB available", need / 1e9, available / 1e9)
    return need <= share * available


def stored_values(X: object) -> int:
    """Stored values of an in-memory sparse matrix, or (at most) those of an on-disk one's rows."""
    if isinstance(X, CountsOnDisk):
        if X._memory is not None:
            return int(np.diff(X._memory.indptr)[X.file_rows(slice(None))].sum())
        with h5py.File(X.path, "r") as file:
            node = file[X.element]
            if X._kind == "dense":
                return X.shape[0] * X.shape[1]
            indptr = np.asarray(node["indptr"])
        rows = np.arange(indptr.size - 1) if X.rows is None else X.rows
        return int((indptr[rows + 1] - indptr[rows]).sum())
    return int(X.nnz) if sp.issparse(X) else int(np.count_nonzero(X))


def write_counts(file: h5py.File, key: str, X: object, block_cells: int = BLOCK_CELLS) -> None:
    """Write ``X`` (in memory or :class:`CountsOnDisk`) as a CSR element ``key`` of an open
    ``.h5ad``, a block of cells at a time: the same bytes whichever ``X`` holds the values.

    The row pointers are 64-bit when the values could exceed 2³¹ (anndata cannot widen them
    while appending); the column indices stay 32-bit while the genes fit.
    """
    from anndata.io import sparse_dataset, write_elem

    wide = stored_values(X) >= np.iinfo(np.int32).max
    if isinstance(X, CountsOnDisk):
        blocks = (block for _, _, block in X.row_blocks(block_cells))
    else:
        X = sp.csr_matrix(X, dtype=np.float32)
        blocks = (X[start : start + block_cells] for start in range(0, max(X.shape[0], 1), block_cells))
    written = None
    for block in blocks:
        block = sp.csr_matrix(block, dtype=np.float32)
        block.sort_indices()
        if written is None:
            if wide:
                block.indptr = block.indptr.astype(np.int64)
                block.indices = block.indices.astype(_index_dtype(block.shape[1]))
            write_elem(file, key, block)
            written = sparse_dataset(file[key])
        else:
            written.append(block)
    if written is None:  # no rows: an empty matrix of the right width
        write_elem(file, key, sp.csr_matrix((0, X.shape[1]), dtype=np.float32))


def write_dense(file: h5py.File, key: str, X: object, block_cells: int = BLOCK_CELLS) -> None:
    """Write ``X`` (a float32 array, or a :class:`CountsOnDisk` over a dense element) as a dense
    element ``key`` of an open ``.h5ad``, a block of rows at a time, as anndata writes an array
    (one contiguous dataset): the same bytes whichever ``X`` holds the values."""

    def blocks() -> Iterator[tuple[int, int, np.ndarray]]:
        for start in range(0, X.shape[0], block_cells):
            stop = min(start + block_cells, X.shape[0])
            block = X[start:stop]
            yield start, stop, block.toarray() if sp.issparse(block) else np.asarray(block, dtype=np.float32)

    write_dense_rows(file, key, tuple(X.shape), blocks())


def write_dense_rows(
    file: h5py.File, key: str, shape: tuple[int, int], blocks: Iterable[tuple[int, int, np.ndarray]]
) -> None:
    """A dense float32 element ``key`` of an open ``.h5ad`` or scratch file, written from
    ``(start, stop, rows)`` blocks as they come (as anndata writes an array: one contiguous
    dataset), so the whole matrix is never held."""
    written = file.create_dataset(key, shape=shape, dtype=np.float32)
    for start, stop, block in blocks:
        written[start:stop] = block
    written.attrs["encoding-type"] = "array"
    written.attrs["encoding-version"] = "0.2.0"


def _index_dtype(n_cols: int) -> type:
    """The column index type of an appended CSR element: 32-bit unless the columns need more."""
    return np.int32 if n_cols < np.iinfo(np.int32).max else np.int64


class CsrAppender:
    """A CSR element of an open ``.h5ad`` written a block of rows at a time (64-bit row pointers,
    as the total is not known in advance; 32-bit column indices, which any gene count fits, so
    a stored value takes 8 bytes, not 12); :meth:`finish` gives it as a :class:`CountsOnDisk`."""

    def __init__(self, file: h5py.File, key: str, n_cols: int) -> None:
        self.file, self.key, self.n_cols, self._written = file, key, n_cols, None

    def append(self, block: sp.spmatrix | np.ndarray) -> None:
        from anndata.io import sparse_dataset, write_elem

        block = sp.csr_matrix(block, dtype=np.float32)
        block.sort_indices()
        if self._written is None:
            block.indptr = block.indptr.astype(np.int64)
            block.indices = block.indices.astype(_index_dtype(self.n_cols))
            write_elem(self.file, self.key, block)
            self._written = sparse_dataset(self.file[self.key])
        else:
            self._written.append(block)

    def finish(self) -> CountsOnDisk:
        if self._written is None:
            self.append(sp.csr_matrix((0, self.n_cols), dtype=np.float32))
        self.file.flush()
        return CountsOnDisk(Path(self.file.filename), self.key)


def rows_by_group(
    counts: CountsOnDisk | sp.spmatrix,
    codes: np.ndarray,
    max_cells: int | None = None,
    scratch_dir: str | Path | None = None,
) -> Iterator[tuple[int, np.ndarray, sp.csr_matrix]]:
    """``(code, positions, rows)`` for every group code 0, 1, … in turn: the positions of its
    cells (increasing) and their rows as CSR; rows with a negative code are skipped.

    In memory the rows are indexed directly. On disk, reading each group's scattered rows would
    read the file many times over, so one pass sorts the rows into batches of whole consecutive
    groups (at most ``max_cells`` cells each, default five of its blocks, or one larger group)
    in a scratch file in ``scratch_dir`` (default: the system's temporary folder; it takes about
    the file's counts again, and is removed after), and each batch is read back whole. Memory is
    then one batch.
    """
    codes = np.asarray(codes, dtype=np.int64)
    n_groups = int(codes.max()) + 1 if codes.size and codes.max() >= 0 else 0
    keyed = np.where(codes < 0, n_groups, codes)  # skipped rows sort last
    order = np.argsort(keyed, kind="stable")
    bounds = np.searchsorted(keyed[order], np.arange(n_groups + 1))
    if not isinstance(counts, CountsOnDisk):
        matrix = sp.csr_matrix(counts)
        for code in range(n_groups):
            positions = order[bounds[code] : bounds[code + 1]]
            yield code, positions, matrix[positions]
        return
    import tempfile

    max_cells = max_cells or 5 * counts.block_cells
    # batches of whole consecutive groups
    batch_of_group = np.zeros(n_groups, dtype=np.int64)
    batch, filled = 0, 0
    for code in range(n_groups):
        size = int(bounds[code + 1] - bounds[code])
        if filled and filled + size > max_cells:
            batch, filled = batch + 1, 0
        batch_of_group[code], filled = batch, filled + size
    batch_of_row = np.where(codes >= 0, batch_of_group[np.clip(codes, 0, None)], -1) if n_groups else codes
    n_batches = batch + 1 if n_groups else 0
    from gpo_vae.io import full_disk_as_error, require_space

    where = Path(scratch_dir or tempfile.gettempdir())
    require_space(
        where, int(stored_values(counts) * 8 * 1.1) + (1 << 20), "the counts grouped by perturbation"
    )
    with (
        tempfile.TemporaryDirectory(prefix="gpo_vae_groups_", dir=where) as folder,
        full_disk_as_error(where, (OSError, RuntimeError)),
    ):
        path = Path(folder) / "groups.h5"
        with h5py.File(path, "w") as file:
            writers = [CsrAppender(file, f"batch{b}", counts.shape[1]) for b in range(n_batches)]
            for start, stop, block in counts.row_blocks():
                in_block = batch_of_row[start:stop]
                for b in np.unique(in_block[in_block >= 0]):
                    writers[b].append(block[np.flatnonzero(in_block == b)])
            for writer in writers:
                writer.finish()
        code = 0
        for b in range(n_batches):
            positions = np.flatnonzero(batch_of_row == b)  # file order, as written
            rows = CountsOnDisk(path, f"batch{b}").to_memory()
            while code < n_groups and batch_of_group[code] == b:
                mine = np.flatnonzero(codes[positions] == code)
                yield code, positions[mine], rows[mine]
                code += 1
