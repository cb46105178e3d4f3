"""Inputs derived from counts, splits and OT partners (design §5): ΔX, counterfactual cells
(cfX) and the training-set normalisation statistics.

All functions take the raw counts (CSR float32, design §1) and keep them sparse; dense blocks
are bounded by a chunk size.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from gpo_vae.data.contract import is_integer_valued
from gpo_vae.data.on_disk import CountsOnDisk, CsrAppender, write_dense_rows
from gpo_vae.preprocessing.normalize import map_row_blocks, on_disk, take_rows
from gpo_vae.runtime import ordered_map

logger = logging.getLogger(__name__)

Matrix = sp.spmatrix | sp.sparray | np.ndarray

#: Element of a scratch file :func:`delta_x` writes ΔX to.
DELTA_X_ELEMENT = "delta_x"
# Bytes of one dense (cells × counterfactual cells × genes) float32 block in the median.
_MEDIAN_BLOCK_BYTES = 64 * 2**20


def _as_csr(X: Matrix) -> sp.csr_matrix:
    """CSR in memory; an on-disk matrix (read by rows, a block at a time) is passed through."""
    return X if isinstance(X, sp.csr_matrix) or on_disk(X) else sp.csr_matrix(X)


def log1p_normalised_columns(
    X_counts: Matrix, columns: Sequence[int] | np.ndarray, target_sum: float = 1e4
) -> sp.csr_matrix:
    """``log1p(x / library size · target_sum)`` of selected gene columns, as CSR float32.

    Library sizes are totals over *all* genes (as ``scanpy.pp.normalize_total``), so the result
    equals the full library-normalised log1p matrix restricted to ``columns``, without building
    it. A column index of −1 gives an all-zero column (a node whose gene is not measured). Cells
    with no counts stay zero.
    """
    X = _as_csr(X_counts)
    columns = np.asarray(columns, dtype=np.int64)
    if columns.ndim != 1 or np.any(columns >= X.shape[1]) or np.any(columns < -1):
        raise ValueError(f"column indices must be −1 or in [0, {X.shape[1]}), got {columns}")
    if on_disk(X):  # row-wise: each block of rows on its own
        return map_row_blocks(X, lambda block: log1p_normalised_columns(block, columns, target_sum))
    library = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
    scale = np.divide(target_sum, library, out=np.zeros_like(library), where=library > 0)
    measured = np.flatnonzero(columns >= 0)
    sub = X[:, columns[measured]].tocsr()
    sub.sort_indices()
    rows = np.repeat(np.arange(X.shape[0]), np.diff(sub.indptr))
    data = np.log1p(sub.data.astype(np.float64) * scale[rows]).astype(np.float32)
    # Re-index the measured columns to their positions in `columns`; unmeasured ones stay empty.
    return sp.csr_matrix((data, measured[sub.indices], sub.indptr.copy()), shape=(X.shape[0], columns.size))


def delta_x(
    X_counts: Matrix,
    partner: np.ndarray,
    node_gene_index: Sequence[int] | np.ndarray,
    target_sum: float = 1e4,
    chunk_size: int = 16384,
    out: str | Path | None = None,
) -> np.ndarray | CountsOnDisk:
    """ΔX = |log1p-norm(x_cell) − log1p-norm(x_partner)| on the T treatment nodes.

    Parameters
    ----------
    X_counts
        ``N × G`` raw counts (normalisation happens here, on the node columns only), in memory
        or on disk.
    partner
        Length-N row index of each cell's OT partner (:func:`~gpo_vae.preprocessing.pairing.pair_cells_ot`);
        a control paired with itself gets ΔX = 0.
    node_gene_index
        Length-T: the column of X holding node t's gene, or −1 if it is not measured (ΔX = 0).
    target_sum, chunk_size
        Library size after normalisation; cells computed at a time.
    out
        An ``.h5`` scratch file ΔX is written into a block at a time (dataset ``delta_x``),
        returned as a :class:`~gpo_vae.data.on_disk.CountsOnDisk` instead of held.

    Returns
    -------
    Dense float32 ``N × T`` (or the same on disk). The distinct partners' node values (the
    controls) are computed once and the cells a block at a time, so memory holds a block and the
    partners, not the N × T node matrix; each row's values are those of the whole matrix (a row's
    normalisation reads that row alone).
    """
    X = _as_csr(X_counts)
    if not on_disk(X) and not is_integer_valued(X):  # on disk: checked when the file was opened
        raise ValueError("delta_x expects raw counts (it normalises them itself); X has non-integer values")
    partner = np.asarray(partner, dtype=np.int64)
    if partner.shape != (X.shape[0],) or partner.min(initial=0) < 0 or partner.max(initial=0) >= X.shape[0]:
        raise ValueError(f"partner must hold one row index in [0, {X.shape[0]}) per cell")
    columns = np.asarray(node_gene_index, dtype=np.int64)
    partners, partner_row = np.unique(partner, return_inverse=True)
    # on disk the partners (every control) are read a block at a time, only their node columns kept
    partner_nodes = log1p_normalised_columns(take_rows(X, partners), columns, target_sum=target_sum)

    def blocks() -> Iterator[tuple[int, int, np.ndarray]]:
        for start in range(0, X.shape[0], chunk_size):
            stop = min(start + chunk_size, X.shape[0])
            cells = log1p_normalised_columns(X[start:stop], columns, target_sum=target_sum)
            yield start, stop, np.abs(cells.toarray() - partner_nodes[partner_row[start:stop]].toarray())

    shape = (X.shape[0], columns.size)
    if out is None:
        result = np.empty(shape, dtype=np.float32)
        for start, stop, block in blocks():
            result[start:stop] = block
        return result
    with h5py.File(out, "a") as file:
        write_dense_rows(file, DELTA_X_ELEMENT, shape, blocks())
    return CountsOnDisk(out, DELTA_X_ELEMENT)


def counterfactual_indices(
    perturbation_labels: Sequence[str] | np.ndarray | pd.Series,
    split_labels: Sequence[str] | np.ndarray | pd.Series,
    qc_fail: Sequence[bool] | np.ndarray | pd.Series,
    max_cells: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """For each cell, up to ``max_cells`` random QC-fail cells of its perturbation and split.

    The counterfactual term (design §6) encodes cfX with the cell's QC flag flipped and compares
    it with the cell itself encoded under the flipped flag. As in the reference code, every cell
    (QC-pass or QC-fail) draws from the QC-fail cells of its (perturbation, split) group; unlike
    the reference, a QC-fail cell never draws itself (its cfX would otherwise partly be its own
    x), draws are without replacement (the reference's ``np.random.choice`` repeated cells), and
    the indices are global rows of the AnnData (the reference mixed split-subset positions with
    full-matrix rows).

    Returns
    -------
    int64 ``N × max_cells``; each row's valid indices ascending, then −1 padding. A cell whose
    group has no other QC-fail cell gets a row of −1 (cfX = 0, the term skips it).
    Deterministic given ``seed`` (``numpy.random.default_rng``), groups drawn in sorted order.
    """
    labels = np.asarray(perturbation_labels).astype(str)
    split = np.asarray(split_labels).astype(str)
    fail = np.asarray(qc_fail).astype(bool)
    n_cells = labels.size
    if split.shape != (n_cells,) or fail.shape != (n_cells,):
        raise ValueError("perturbation_labels, split_labels and qc_fail must have one entry per cell")
    if max_cells < 1:
        raise ValueError(f"max_cells must be at least 1, got {max_cells}")
    _, split_code = np.unique(split, return_inverse=True)
    label_names, label_code = np.unique(labels, return_inverse=True)
    key = split_code.astype(np.int64) * label_names.size + label_code
    order = np.argsort(key, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(key[order]) != 0])
    rng = np.random.default_rng(seed)
    sentinel = np.iinfo(np.int64).max
    out = np.full((n_cells, max_cells), -1, dtype=np.int64)
    for cells in np.split(order, starts[1:]) if n_cells else []:
        pool = cells[fail[cells]]  # ascending, since the sort was stable
        if pool.size == 0:
            continue
        take = min(pool.size, max_cells)
        # Row blocks keep the random-key matrix (cells × pool) at a few MB for large control groups.
        block = max(1, 2_000_000 // pool.size)
        for start in range(0, cells.size, block):
            rows = cells[start : start + block]
            keys = rng.random((rows.size, pool.size))
            is_self = fail[rows]
            keys[np.flatnonzero(is_self), np.searchsorted(pool, rows[is_self])] = np.inf
            if take < pool.size:
                chosen = np.argpartition(keys, take - 1, axis=1)[:, :take]
            else:
                chosen = np.argsort(keys, axis=1)
            # A QC-fail cell's own slot has key +inf: it is never chosen when the pool exceeds
            # `take`; otherwise it sorts last and is dropped here.
            n_valid = np.minimum(pool.size - is_self, max_cells)
            valid = np.arange(take) < n_valid[:, None]
            picked = np.where(valid, pool[chosen], sentinel)
            picked.sort(axis=1)
            out[rows, :take] = np.where(picked == sentinel, -1, picked)
    return out


def _check_index(cf_index: np.ndarray, n_rows: int) -> np.ndarray:
    cf_index = np.asarray(cf_index, dtype=np.int64)
    if cf_index.ndim != 2:
        raise ValueError(
            f"counterfactual indices must be 2-D (cells × max_cells), got shape {cf_index.shape}"
        )
    if cf_index.size and (cf_index.max() >= n_rows or cf_index.min() < -1):
        raise ValueError(f"counterfactual indices must be −1 or in [0, {n_rows})")
    return cf_index


def counterfactual_median(X_counts: Matrix, cf_index_rows: np.ndarray) -> np.ndarray:
    """Per-gene median over each cell's counterfactual cells (zeros for a row of −1).

    Rows are grouped by their number k of valid indices; each group is densified in blocks of
    at most 64 MB (cells × k × G) and sorted along k, which for float32 is several times faster
    than ``np.median``/``np.partition``. The median of an even k is the mean of the two middle
    values (numpy's convention; the reference's ``torch.median`` took the lower one).

    Parameters
    ----------
    X_counts
        ``N × G`` raw counts, CSR.
    cf_index_rows
        ``B × max_cells`` rows of :func:`counterfactual_indices` (−1 = padding, anywhere).

    Returns
    -------
    Dense float32 ``B × G``.
    """
    X = _as_csr(X_counts)
    cf_index = _check_index(cf_index_rows, X.shape[0])
    n_genes = X.shape[1]
    out = np.zeros((cf_index.shape[0], n_genes), dtype=np.float32)
    n_valid = (cf_index >= 0).sum(axis=1)
    for k in np.unique(n_valid[n_valid > 0]):
        rows = np.flatnonzero(n_valid == k)
        index = cf_index[rows]
        index = index[index >= 0].reshape(rows.size, k)  # row-major mask keeps each row's k together
        block = max(1, _MEDIAN_BLOCK_BYTES // (int(k) * n_genes * 4))
        for start in range(0, rows.size, block):
            dense = X[index[start : start + block].ravel()].toarray().astype(np.float32, copy=False)
            dense = dense.reshape(-1, k, n_genes)
            dense.sort(axis=1)
            out[rows[start : start + block]] = 0.5 * (dense[:, (k - 1) // 2] + dense[:, k // 2])
    return out


#: Counterfactual cells read from the counts at a time by :func:`counterfactual_table` (whole
#: pools: one larger than this is read alone): about 90 MB at RPE1 density, whatever the screen's size.
CF_CHUNK_CELLS = 4096


def _pool_components(local: np.ndarray, n_pool: int) -> np.ndarray:
    """Which pool each counterfactual cell belongs to: cells drawn together for some cell are
    linked, and a (perturbation, split) group's QC-fail cells are drawn only by its own cells, so
    the linked sets are the groups' pools (or parts of one). ``local``: rows of pool positions."""
    from scipy.sparse.csgraph import connected_components

    rows, slots = np.nonzero(local >= 0)
    links = sp.coo_matrix(
        (
            np.ones(rows.size, dtype=np.int8),
            (local[rows, 0].astype(np.int32), local[rows, slots].astype(np.int32)),
        ),
        shape=(n_pool, n_pool),
    )
    return connected_components(links, directed=False)[1]


def counterfactual_table(
    X_counts: Matrix,
    cf_index: np.ndarray,
    batch_size: int = 512,
    progress: bool = True,
    out: str | Path | None = None,
    chunk_cells: int = CF_CHUNK_CELLS,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Precompute cfX once: the distinct medians as CSR plus a row of that table per cell.

    Cells with the same set of counterfactual cells share a row (e.g. all QC-pass cells of a
    group with at most ``max_cells`` QC-fail cells), so each distinct median is computed once.
    Rows come pool by pool (the QC-fail cells of a (perturbation, split) group, which only that
    group's cells draw from), and the counts of about ``chunk_cells`` pool cells are read at a
    time: an on-disk matrix is never held beyond one such chunk, however many cells fail QC.
    ``out``: an ``.h5`` scratch file the medians are appended to a batch at a time (element
    ``cf_medians``), returned as a :class:`~gpo_vae.data.on_disk.CountsOnDisk` instead of held.

    Returns
    -------
    (medians, row): CSR float32 ``U × G`` and int64 length N, the row of ``medians`` holding each
    cell's cfX, or −1 for a cell without counterfactual cells (cfX = 0).
    """
    X = _as_csr(X_counts)
    cf_index = _check_index(cf_index, X.shape[0])
    # Sorting each row (padding last) makes equal sets equal rows, whatever the draw order.
    sentinel = np.iinfo(np.int64).max
    canonical = np.sort(np.where(cf_index >= 0, cf_index, sentinel), axis=1)
    canonical[canonical == sentinel] = -1
    has_cf = canonical[:, 0] >= 0 if canonical.shape[1] else np.zeros(canonical.shape[0], dtype=bool)
    unique, inverse = np.unique(canonical[has_cf], axis=0, return_inverse=True)
    inverse = inverse.ravel()
    del canonical
    pool = np.unique(unique[unique >= 0])
    local = np.where(unique >= 0, np.searchsorted(pool, unique), -1)
    del unique
    # pool by pool: a stable sort keeps each pool's sets in their sorted order
    component = _pool_components(local, pool.size)
    row_component = component[local[:, 0]] if local.size else np.zeros(0, np.int64)
    order = np.argsort(row_component, kind="stable")
    local, row_component = local[order], row_component[order]
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    inverse = position[inverse]
    # chunks of whole pools: the rows of consecutive components whose cells add up to chunk_cells
    pool_sizes = np.bincount(component, minlength=int(component.max(initial=-1)) + 1)
    by_component = np.argsort(component, kind="stable")
    pool_start = np.r_[0, np.cumsum(pool_sizes)]
    chunk_edges, filled = [0], 0
    for c, size in enumerate(pool_sizes.tolist()):
        if filled and filled + size > chunk_cells:
            chunk_edges.append(c)
            filled = 0
        filled += size
    chunk_edges.append(pool_sizes.size)
    bar = tqdm(total=local.shape[0], desc="cfX medians", unit="cell", disable=not progress)

    def tasks() -> Iterator[tuple[sp.csr_matrix, np.ndarray]]:
        for first, last in itertools.pairwise(chunk_edges):
            if first == last:
                continue
            cells = np.sort(by_component[pool_start[first] : pool_start[last]])
            counts = X[pool[cells]]  # increasing rows: one read, in file order
            rows = np.arange(*np.searchsorted(row_component, [first, last]))  # rows sorted by pool
            for batch in np.array_split(rows, -(-rows.size // batch_size)):
                sets = local[batch]
                yield counts, np.where(sets >= 0, np.searchsorted(cells, sets), -1)

    def median(task: tuple[sp.csr_matrix, np.ndarray]) -> sp.csr_matrix:
        block = sp.csr_matrix(counterfactual_median(*task))
        bar.update(block.shape[0])
        return block

    # numpy's sorts, scipy's row gathers and the dense → CSR conversion release the GIL:
    # batches on every core, in order
    batches = ordered_map(median, tasks())
    if out is not None:
        with h5py.File(out, "a") as file:
            appender = CsrAppender(file, "cf_medians", X.shape[1])
            for block in batches:
                appender.append(block)
            medians = appender.finish()
    else:
        blocks = list(batches)
        medians = (
            sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, X.shape[1]), dtype=np.float32)
        )
        medians = medians.astype(np.float32)
    bar.close()
    row = np.full(cf_index.shape[0], -1, dtype=np.int64)
    row[has_cf] = inverse
    logger.info(
        "cfX: %d distinct medians for %d cells with counterfactual cells", local.shape[0], has_cf.sum()
    )
    return medians, row


def counterfactual_matrix(
    X_counts: Matrix, cf_index: np.ndarray, batch_size: int = 512, progress: bool = True
) -> sp.csr_matrix:
    """cfX for every cell as CSR float32 ``N × G`` (zero rows for cells without counterfactual
    cells), expanded from :func:`counterfactual_table`. Prefer the table where memory is tight:
    this matrix has about as many stored values as X."""
    medians, row = counterfactual_table(X_counts, cf_index, batch_size=batch_size, progress=progress)
    # An appended empty row stands in for "no counterfactual cells".
    padded = sp.vstack([medians, sp.csr_matrix((1, medians.shape[1]), dtype=np.float32)], format="csr")
    return padded[np.where(row >= 0, row, medians.shape[0])]


def normalisation_stats(
    X_counts: Matrix, train_mask: np.ndarray, chunk_size: int = 8192
) -> dict[str, np.ndarray]:
    """Per-gene mean and standard deviation of x and of log(x + 1) over training cells.

    Sparse-aware (zeros contribute nothing to the sums, and log(0 + 1) = 0); float64 sums over
    row blocks. The standard deviation is the unbiased one (ddof = 1), as ``torch.std`` in the
    reference; it is 0 for a gene constant over training cells, so callers dividing by it must
    guard.

    Returns
    -------
    ``{"x_mean", "x_std", "log_x_mean", "log_x_std"}`` float64 arrays of length G, and
    ``"n_cells"`` (0-d int array).
    """
    X = _as_csr(X_counts)
    train_mask = np.asarray(train_mask, dtype=bool)
    if train_mask.shape != (X.shape[0],):
        raise ValueError(f"train_mask must have one entry per cell ({X.shape[0]}), got {train_mask.shape}")
    n = int(train_mask.sum())
    if n < 2:
        raise ValueError(f"need at least 2 training cells for a standard deviation, got {n}")
    n_genes = X.shape[1]
    sums = np.zeros((4, n_genes))  # x, x², log1p(x), log1p(x)²
    for start in range(0, X.shape[0], chunk_size):
        block = X[start : start + chunk_size][train_mask[start : start + chunk_size]]
        values = block.data.astype(np.float64)
        logs = np.log1p(values)
        for i, weights in enumerate((values, values * values, logs, logs * logs)):
            sums[i] += np.bincount(block.indices, weights=weights, minlength=n_genes)
    stats: dict[str, np.ndarray] = {"n_cells": np.asarray(n)}
    for name, total, total_sq in (("x", sums[0], sums[1]), ("log_x", sums[2], sums[3])):
        mean = total / n
        # The clip absorbs the tiny negative rounding of (Σx² − n·mean²) for near-constant genes.
        var = np.clip((total_sq - n * mean * mean) / (n - 1), 0.0, None)
        stats[f"{name}_mean"] = mean
        stats[f"{name}_std"] = np.sqrt(var)
    return stats
