"""Average treatment effects, "perturbseq" method (design §7).

The ATE of perturbation ``p`` on gene ``g`` is ``mean over p's cells of log2(1 + s·x)`` minus the
same mean over control cells, with ``s = target_sum / library size`` per cell (1e4 by default).
A cell without counts stays all-zero (as ``scanpy.pp.normalize_total``).

Sparse counts are never densified: row blocks of the CSR matrix are transformed (sharing the
index arrays) and summed per group by a sparse indicator-matrix product, so memory stays at the
input plus one block. Dense counts (a model's generated cells) are processed in row chunks.

References for the data's ATE (design §7): :func:`ate_reference_all_cells` (the published
reference: every cell, whatever its split) and :func:`ate_reference_heldout` (test cells only,
including the control mean; training cells are never read).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpo_vae.data.contract import CONTROL_LABEL
from gpo_vae.data.on_disk import stored_values
from gpo_vae.preprocessing.normalize import DEFAULT_TARGET_SUM, as_csr, library_size, on_disk, take_rows

logger = logging.getLogger(__name__)

Counts = sp.spmatrix | sp.sparray | np.ndarray
# Stored values transformed at once: bounds the float64 temporaries (~16M values ≈ 130 MB).
_BLOCK_NNZ = 1 << 24
_DENSE_BLOCK_VALUES = 1 << 22


def _transform_inplace(values: np.ndarray, log: bool) -> np.ndarray:
    """``log2(1 + values)`` written over ``values`` (a float64 temporary), or ``values`` as is."""
    if log:
        values += 1.0
        np.log2(values, out=values)
    return values


def _scale_factors(lib: np.ndarray, target_sum: float) -> np.ndarray:
    return np.divide(target_sum, lib, out=np.zeros_like(lib, dtype=np.float64), where=lib > 0)


def group_means(
    X: Counts,
    codes: np.ndarray,
    n_groups: int,
    target_sum: float = DEFAULT_TARGET_SUM,
    log: bool = True,
    columns: np.ndarray | None = None,
    square: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean normalised expression per group: ``(means n_groups × G float64, cells per group)``.

    ``codes[i]`` is cell ``i``'s group in ``0..n_groups-1`` (``-1``: ignored). Each cell is scaled
    to ``target_sum`` counts, then ``log2(1 + x)`` when ``log`` (else left linear), then squared
    when ``square`` (the second moment, for variances). A group without cells has NaN means.
    ``columns`` restricts the output to those genes (library sizes still count every gene).
    ``X`` may be on disk (:class:`~gpo_vae.data.on_disk.CountsOnDisk`): its rows are read in the
    blocks an in-memory matrix is cut into, so both give the same sums, bit for bit.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.shape != (X.shape[0],):
        raise ValueError(f"need one group code per cell: {codes.shape} codes for {X.shape[0]} cells")
    if sp.issparse(X) or on_disk(X):
        sums = _sparse_group_sums(X, codes, n_groups, target_sum, log, columns, square)
    else:
        sums = _dense_group_sums(np.asarray(X), codes, n_groups, target_sum, log, columns, square)
    counts = np.bincount(codes[codes >= 0], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    means[counts == 0] = np.nan
    return means, counts


def _indicator(block_codes: np.ndarray, keep: np.ndarray, n_groups: int) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(keep.size), (block_codes[keep], keep)), shape=(n_groups, block_codes.size))


def _sparse_group_sums(
    X: Counts,
    codes: np.ndarray,
    n_groups: int,
    target_sum: float,
    log: bool,
    columns: np.ndarray | None,
    square: bool,
) -> np.ndarray:
    """Per-group sums of the transformed values of a sparse (in memory or on disk) matrix, one
    block of about ``_BLOCK_NNZ`` stored values at a time."""
    disk = on_disk(X)
    if not disk:
        X = as_csr(X)
    n_cells = X.shape[0]
    # in memory the scale factors come from the whole matrix, as they always have; on disk from
    # each block (the same numbers for counts, whose row sums are exact)
    factors = None if disk else _scale_factors(library_size(X), target_sum)
    n_genes = X.shape[1] if columns is None else len(columns)
    sums = np.zeros((n_groups, n_genes))
    rows_per_block = max(1, int(_BLOCK_NNZ * n_cells // max(stored_values(X), 1)))
    for start in range(0, n_cells, rows_per_block):
        stop = min(start + rows_per_block, n_cells)
        block_codes = codes[start:stop]
        keep = np.flatnonzero(block_codes >= 0)
        if keep.size == 0:
            continue  # never read
        if disk:
            block = X[start:stop]
            scale = _scale_factors(library_size(block), target_sum)
            indices, indptr = block.indices, block.indptr
            values = block.data
        else:
            lo, hi = X.indptr[start], X.indptr[stop]
            scale = factors[start:stop]
            # the block shares X's index arrays: only the transformed values are new
            indices, indptr = X.indices[lo:hi], X.indptr[start : stop + 1] - lo
            values = X.data[lo:hi]
        data = _transform_inplace(values * np.repeat(scale, np.diff(indptr)), log)
        if square:
            data *= data
        block = sp.csr_matrix((data, indices, indptr), shape=(stop - start, X.shape[1]))
        if columns is not None:
            block = block[:, columns]
        sums += (_indicator(block_codes, keep, n_groups) @ block).toarray()
    return sums


def _dense_group_sums(
    X: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
    target_sum: float,
    log: bool,
    columns: np.ndarray | None,
    square: bool,
) -> np.ndarray:
    """Per-group sums of the transformed values of a dense matrix (a model's generated cells)."""
    factors = None
    if columns is not None:
        factors = _scale_factors(library_size(X), target_sum)
        X = X[:, columns]
    n_genes = X.shape[1]
    sums = np.zeros((n_groups, n_genes))
    rows_per_block = max(1, _DENSE_BLOCK_VALUES // max(n_genes, 1))
    for start in range(0, X.shape[0], rows_per_block):
        stop = min(start + rows_per_block, X.shape[0])
        block_codes = codes[start:stop]
        keep = np.flatnonzero(block_codes >= 0)
        if keep.size == 0:
            continue
        block = X[start:stop].astype(np.float64)  # a copy: the input is never modified
        # library sizes from the block itself spare a float64 pass over the whole input
        scale = _scale_factors(block.sum(axis=1), target_sum) if factors is None else factors[start:stop]
        block *= scale[:, None]
        block = _transform_inplace(block, log)
        if square:
            block *= block
        if keep.size == block.shape[0] and (block_codes == block_codes[0]).all():
            sums[block_codes[0]] += block.sum(axis=0)  # one group (generated cells): no product
        else:
            sums += _indicator(block_codes, keep, n_groups) @ block
    return sums


def mean_log2_expression(counts: Counts, target_sum: float = DEFAULT_TARGET_SUM) -> np.ndarray:
    """Mean over cells (rows) of ``log2(1 + target_sum·x/library)``: a length-G float64 vector."""
    if counts.shape[0] == 0:
        raise ValueError("no cells: the mean expression is undefined")
    means, _ = group_means(counts, np.zeros(counts.shape[0], dtype=np.int64), 1, target_sum)
    return means[0]


def _labels(labels: Sequence | np.ndarray | pd.Series, n_cells: int) -> np.ndarray:
    values = np.asarray(labels).astype(str)
    if values.shape != (n_cells,):
        raise ValueError(f"need one label per cell: {values.shape[0]} labels for {n_cells} cells")
    return values


def _gene_index(genes: Sequence[str] | pd.Index | None, n_genes: int) -> pd.Index:
    if genes is None:
        return pd.RangeIndex(n_genes, name="gene")
    index = pd.Index(genes, name="gene")
    if len(index) != n_genes:
        raise ValueError(f"{len(index)} gene names for {n_genes} columns")
    return index


def ate_perturbseq(
    X_counts: Counts,
    labels: Sequence | np.ndarray | pd.Series,
    control_label: str = CONTROL_LABEL,
    perturbations: Iterable[str] | None = None,
    target_sum: float = DEFAULT_TARGET_SUM,
    genes: Sequence[str] | pd.Index | None = None,
    batches: Sequence | np.ndarray | pd.Series | None = None,
) -> pd.DataFrame:
    """ATE of every perturbation vs the control cells among the cells given.

    Parameters
    ----------
    X_counts
        Cells × genes raw counts (CSR or dense).
    labels
        Perturbation label per cell; ``control_label`` marks controls.
    perturbations
        Rows of the result, in this order (default: every label with cells, sorted). A requested
        perturbation without cells gets a NaN row (logged).
    genes
        Column names (default ``0..G-1``).
    batches
        Batch of every cell (None: one batch). A perturbation's effect is then measured against
        the controls of each of its batches and averaged with its cells' batch shares:
        ``Σ_b n_pb / n_p · (mean_pb − control_b)``, so a batch difference is never read as an
        effect. A batch holding a perturbation's cells but no control raises.

    Returns
    -------
    DataFrame perturbations × genes (index ``perturbation``, columns ``gene``), float64.
    """
    values = _labels(labels, X_counts.shape[0])
    if perturbations is None:
        perturbations = sorted(set(values.tolist()) - {control_label})
    rows = pd.Index(list(perturbations), name="perturbation")
    if control_label in rows:
        raise ValueError(f"{control_label!r} is the control label, not a perturbation")
    if not rows.is_unique:
        raise ValueError("perturbations must be unique")
    columns = _gene_index(genes, X_counts.shape[1])
    groups = rows.append(pd.Index([control_label]))
    if batches is None:
        codes = groups.get_indexer(values)
        means, counts = group_means(X_counts, codes, len(groups), target_sum)
        if counts[-1] == 0:
            raise ValueError(f"no control cell ({control_label!r}) among the {len(values)} cells given")
        _log_missing(rows[counts[:-1] == 0])
        return pd.DataFrame(means[:-1] - means[-1], index=rows, columns=columns)
    batch = _labels(batches, X_counts.shape[0])
    names, batch_code = np.unique(batch, return_inverse=True)
    label_code = groups.get_indexer(values)
    codes = np.where(label_code >= 0, label_code * names.size + batch_code, -1)
    means, counts = group_means(X_counts, codes, len(groups) * names.size, target_sum)
    means = means.reshape(len(groups), names.size, -1)
    counts = counts.reshape(len(groups), names.size)
    control_mean, control_counts = means[-1], counts[-1]
    needed = (counts[:-1] > 0) & (control_counts == 0)[None, :]
    if needed.any():
        p, b = np.argwhere(needed)[0]
        raise ValueError(
            f"batch {str(names[b])!r} has cells of {rows[p]!r} but no control cell ({control_label!r})"
        )
    weights = counts[:-1] / np.maximum(counts[:-1].sum(axis=1, keepdims=True), 1)
    effects = np.nan_to_num(means[:-1] - control_mean[None], nan=0.0)
    ate = np.einsum("pb,pbg->pg", weights, effects)
    missing = counts[:-1].sum(axis=1) == 0
    ate[missing] = np.nan
    _log_missing(rows[missing])
    return pd.DataFrame(ate, index=rows, columns=columns)


def _log_missing(missing: pd.Index) -> None:
    """Log the requested perturbations without a cell (NaN rows). At debug level: the callers ask
    for them on purpose (a training-cell baseline of held-out labels) and say so where it matters."""
    if len(missing):
        shown = ", ".join(map(str, missing[:5])) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        logger.debug("%d perturbations have no cell here (NaN rows): %s", len(missing), shown)


def batch_shares(
    labels: Sequence | np.ndarray,
    batches: Sequence | np.ndarray,
    perturbations: Sequence[str],
    batch_names: Sequence[str],
) -> pd.DataFrame:
    """Each perturbation's share of cells in each batch (rows sum to 1; a row without cells is NaN)."""
    frame = pd.crosstab(pd.Series(np.asarray(labels).astype(str)), pd.Series(np.asarray(batches).astype(str)))
    frame = frame.reindex(index=list(perturbations), columns=list(batch_names), fill_value=0).astype(float)
    return frame.div(frame.sum(axis=1).replace(0, np.nan), axis=0)


def _control_vector(
    control_mean: pd.Series | np.ndarray, genes: pd.Index | None
) -> tuple[np.ndarray, pd.Index]:
    if isinstance(control_mean, pd.Series):
        if genes is not None and not control_mean.index.equals(genes):
            control_mean = control_mean.reindex(genes)
            if control_mean.isna().any():
                raise ValueError("control_mean lacks some of the genes given")
        return control_mean.to_numpy(dtype=np.float64), pd.Index(control_mean.index, name="gene")
    vector = np.asarray(control_mean, dtype=np.float64)
    return vector, _gene_index(genes, vector.shape[0])


def ate_from_generated(
    generated: Mapping[str, Counts] | tuple[Sequence | np.ndarray, Counts],
    control_mean: pd.Series | np.ndarray | None = None,
    control_label: str = CONTROL_LABEL,
    genes: Sequence[str] | pd.Index | None = None,
    target_sum: float = DEFAULT_TARGET_SUM,
) -> pd.DataFrame:
    """ATE of a model's generated cells (design §7: 2,500 cells per perturbation).

    Parameters
    ----------
    generated
        Either a mapping ``perturbation → counts (cells × G)``, read one key at a time (a lazy
        mapping that generates on access keeps one perturbation in memory), or a pair
        ``(labels, counts)`` of all generated cells.
    control_mean
        Mean ``log2(1 + 1e4·x/library)`` of the control cells (:func:`mean_log2_expression`).
        Default: from the generated controls (``generated[control_label]``), as SAMS-VAE does;
        pass the data's control mean to measure against observed controls instead.
    genes
        Column names; default: ``control_mean``'s index when it is a Series, else ``0..G-1``.

    Returns
    -------
    DataFrame perturbations × genes as :func:`ate_perturbseq` (controls not a row).
    """
    genes_index = None if genes is None else pd.Index(genes, name="gene")
    if isinstance(generated, tuple):
        labels, counts = generated
        values = _labels(labels, counts.shape[0])
        if control_mean is None:
            return ate_perturbseq(counts, values, control_label, None, target_sum, genes_index)
        perts = pd.Index(sorted(set(values.tolist()) - {control_label}), name="perturbation")
        means, _ = group_means(counts, perts.get_indexer(values), len(perts), target_sum)
        control, columns = _control_vector(control_mean, genes_index)
        return pd.DataFrame(means - control, index=perts, columns=columns)
    keys = [key for key in generated.keys() if key != control_label]
    if control_mean is None:
        if control_label not in generated:
            raise ValueError(f"no control_mean given and no generated {control_label!r} cells to compute it")
        control_mean = mean_log2_expression(generated[control_label], target_sum)
    control, columns = _control_vector(control_mean, genes_index)
    ate = np.empty((len(keys), control.shape[0]))
    for i, key in enumerate(keys):
        counts = generated[key]
        if counts.shape[1] != control.shape[0]:
            raise ValueError(f"generated[{key!r}] has {counts.shape[1]} genes, expected {control.shape[0]}")
        ate[i] = mean_log2_expression(counts, target_sum) - control
    return pd.DataFrame(ate, index=pd.Index(keys, name="perturbation"), columns=columns)


def split_rows(split: Sequence | np.ndarray | pd.Series, which: str, n_cells: int) -> np.ndarray:
    """Row indices of the cells whose split label is ``which`` (error when there are none)."""
    values = _labels(split, n_cells)
    rows = np.flatnonzero(values == which)
    if rows.size == 0:
        raise ValueError(f"no cell in split {which!r} (splits present: {sorted(set(values.tolist()))})")
    return rows


def ate_on_split(
    X_counts: Counts,
    labels: Sequence | np.ndarray | pd.Series,
    split: Sequence | np.ndarray | pd.Series,
    which: str,
    control_label: str = CONTROL_LABEL,
    perturbations: Iterable[str] | None = None,
    target_sum: float = DEFAULT_TARGET_SUM,
    genes: Sequence[str] | pd.Index | None = None,
    batches: Sequence | np.ndarray | pd.Series | None = None,
) -> pd.DataFrame:
    """:func:`ate_perturbseq` on the cells of split ``which`` only, controls included.

    The rows are selected before anything is computed, so no cell of another split is read.
    """
    rows = split_rows(split, which, X_counts.shape[0])
    values = _labels(labels, X_counts.shape[0])[rows]
    assert (_labels(split, X_counts.shape[0])[rows] == which).all()
    X_sub = take_rows(X_counts, rows)
    sub_batches = None if batches is None else np.asarray(batches)[rows]
    return ate_perturbseq(X_sub, values, control_label, perturbations, target_sum, genes, sub_batches)


def ate_reference_all_cells(
    X_counts: Counts,
    labels: Sequence | np.ndarray | pd.Series,
    control_label: str = CONTROL_LABEL,
    perturbations: Iterable[str] | None = None,
    target_sum: float = DEFAULT_TARGET_SUM,
    genes: Sequence[str] | pd.Index | None = None,
    batches: Sequence | np.ndarray | pd.Series | None = None,
) -> pd.DataFrame:
    """The published reference ATE: every cell of the data, training cells included."""
    return ate_perturbseq(X_counts, labels, control_label, perturbations, target_sum, genes, batches)


def ate_reference_heldout(
    X_counts: Counts,
    labels: Sequence | np.ndarray | pd.Series,
    split: Sequence | np.ndarray | pd.Series,
    control_label: str = CONTROL_LABEL,
    perturbations: Iterable[str] | None = None,
    target_sum: float = DEFAULT_TARGET_SUM,
    genes: Sequence[str] | pd.Index | None = None,
    test_split: str = "test",
    batches: Sequence | np.ndarray | pd.Series | None = None,
) -> pd.DataFrame:
    """The honest reference ATE: test cells only, the control mean from test controls."""
    return ate_on_split(
        X_counts, labels, split, test_split, control_label, perturbations, target_sum, genes, batches
    )


def percent_knockdown(
    X_counts: Counts,
    labels: Sequence | np.ndarray | pd.Series,
    genes: Sequence[str] | pd.Index,
    control_label: str = CONTROL_LABEL,
    perturbations: Iterable[str] | None = None,
    target_sum: float = DEFAULT_TARGET_SUM,
) -> pd.Series:
    """Knockdown of each perturbation's own target gene, as Replogle's "percent knockdown".

    ``mean(target in perturbed cells) / mean(target in controls) − 1`` on library-normalised
    (linear) expression, e.g. −0.9 for a 90 % knockdown. NaN when the target is not among
    ``genes``, has no perturbed cell, or is not expressed in controls.
    """
    values = _labels(labels, X_counts.shape[0])
    gene_index = _gene_index(genes, X_counts.shape[1])
    if perturbations is None:
        perturbations = sorted(set(values.tolist()) - {control_label})
    rows = pd.Index(list(perturbations), name="perturbation")
    target_col = gene_index.get_indexer(rows)
    measured = np.flatnonzero(target_col >= 0)
    out = pd.Series(np.nan, index=rows, name="percent_knockdown")
    if measured.size == 0:
        return out
    groups = rows.append(pd.Index([control_label]))
    codes = groups.get_indexer(values)
    means, counts = group_means(
        X_counts, codes, len(groups), target_sum, log=False, columns=target_col[measured]
    )
    if counts[-1] == 0:
        raise ValueError(f"no control cell ({control_label!r}) among the {len(values)} cells given")
    own = means[measured, np.arange(measured.size)]
    control = means[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(control > 0, own / control - 1.0, np.nan)
    out.iloc[measured] = ratio
    return out
