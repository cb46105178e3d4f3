"""Doublet calls (design §2): scrublet on chunks of cells, each a stratified slice of every
perturbation, on the CPU (the ``scrublet`` package) or on a GPU (rapids-singlecell).

A chunk's scrublet runs as scrublet's own steps with its gene filter (v-scores, cells per gene)
computed without whole copies of the normalised counts (the same genes, scores and calls); the
heap memory a chunk freed is handed back before the next.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from gpo_vae.data.contract import PERTURBATION_KEY
from gpo_vae.preprocessing.backend import resolve_backend
from gpo_vae.preprocessing.config import Backend
from gpo_vae.preprocessing.normalize import as_csr
from gpo_vae.runtime import ordered_map, release_freed_memory, work_threads

logger = logging.getLogger(__name__)


def stratified_chunks(labels: Sequence | np.ndarray | pd.Series, n_chunks: int, seed: int = 0) -> np.ndarray:
    """Chunk index of each cell so that every chunk holds a slice of every perturbation.

    Cells of a perturbation are shuffled and dealt round-robin from a random starting chunk, so
    chunk sizes per perturbation differ by at most one (the reference sliced each perturbation
    in file order, leaving most controls in its last chunk).
    """
    if n_chunks < 1:
        raise ValueError(f"n_chunks must be ≥ 1, got {n_chunks}")
    rng = np.random.default_rng(seed)
    codes = pd.Categorical(np.asarray(labels).astype(str)).codes
    n = len(codes)
    shuffled = rng.permutation(n)
    order = shuffled[np.argsort(codes[shuffled], kind="stable")]  # grouped, random within group
    sorted_codes = codes[order]
    group_start = np.searchsorted(sorted_codes, sorted_codes, side="left")
    rank_in_group = np.arange(n) - group_start
    offsets = rng.integers(0, n_chunks, size=codes.max(initial=-1) + 1)
    chunk = np.empty(n, dtype=np.int64)
    chunk[order] = (rank_in_group + offsets[sorted_codes]) % n_chunks
    return chunk


@dataclass(frozen=True)
class DoubletReport:
    """Doublet calls with their provenance: ``scores`` is NaN in skipped chunks."""

    predicted: np.ndarray
    scores: np.ndarray
    chunk: np.ndarray
    n_chunks: int
    skipped: tuple[dict[str, Any], ...]

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


def _scrublet_cpu(X: sp.csr_matrix, seed: int, expected_doublet_rate: float) -> tuple[np.ndarray, np.ndarray]:
    import scrublet

    matrix = sp.csc_matrix(X)
    del X  # the caller's chunk is this function's alone: scrublet keeps the CSC copy
    # scrublet seeds numpy's global generator; keep the caller's stream untouched
    state = np.random.get_state()  # noqa: NPY002 (legacy global state is what scrublet uses)
    try:
        scrub = scrublet.Scrublet(matrix, expected_doublet_rate=expected_doublet_rate, random_state=seed)
        del matrix
        predicted = _scrub_doublets(scrub)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    if predicted is None:
        raise RuntimeError("scrublet found no automatic doublet-score threshold")
    return np.asarray(predicted, dtype=bool), np.asarray(scrub.doublet_scores_obs_, dtype=np.float64)


def _scrub_doublets(scrub: Any) -> np.ndarray | None:
    """``Scrublet.scrub_doublets()`` with its default arguments, step by step, its gene filter
    computed without the whole copies of the normalised counts scrublet's ``filter_genes``
    (``E[arange(n), :]`` and ``E[:, genes] >= 3``) and ``get_vscores`` (``E[:, genes]``, and
    ``E · (1 / n)`` in each of scipy's two means) make: the same genes, scores and calls (test).
    Return the calls.
    """
    from scrublet import helper_functions as steps

    _scrublet_normalize(scrub)
    scrub._gene_filter = _scrublet_gene_filter(scrub._E_obs_norm)
    steps.pipeline_apply_gene_filter(scrub)
    scrub.simulate_doublets(sim_doublet_ratio=scrub.sim_doublet_ratio, synthetic_doublet_umi_subsampling=1.0)
    _scrublet_normalize(scrub, postnorm_total=1e6)
    _scrublet_zscore(scrub)
    steps.pipeline_pca(scrub, n_prin_comps=30, random_state=scrub.random_state, svd_solver="arpack")
    import scrublet.scrublet as scoring

    original = scoring.get_knn_graph
    scoring.get_knn_graph = _knn_graph  # scrublet's own scoring, its neighbours found on every core
    try:
        scrub.calculate_doublet_scores(
            use_approx_neighbors=True, distance_metric="euclidean", get_doublet_neighbor_parents=False
        )
    finally:
        scoring.get_knn_graph = original
    return scrub.call_doublets(verbose=False)


def _knn_graph(
    X: np.ndarray,
    k: int = 5,
    dist_metric: str = "euclidean",
    approx: bool = False,
    return_edges: bool = True,
    random_seed: int = 0,
) -> Any:
    """scrublet's ``get_knn_graph``, the same neighbours (test), its annoy queries on every core.

    scrublet builds an annoy index (its seed, 10 trees) and asks it for each cell's neighbours one
    cell at a time in a Python loop: about half a chunk's time. The index is built as scrublet
    builds it and the queries, which release the GIL and read the index only, run in threads.
    Other settings go to scrublet's own function.
    """
    from scrublet import helper_functions

    if not approx or return_edges or dist_metric != "euclidean":
        return helper_functions.get_knn_graph(X, k, dist_metric, approx, return_edges, random_seed)
    from annoy import AnnoyIndex

    index = AnnoyIndex(X.shape[1], metric=dist_metric)
    index.set_seed(random_seed)
    for i, row in enumerate(X.tolist()):  # the same doubles scrublet's list(X[i, :]) passes
        index.add_item(i, row)
    index.build(10)
    blocks = np.array_split(np.arange(X.shape[0]), max(1, min(work_threads(), X.shape[0])))
    found = ordered_map(lambda cells: [index.get_nns_by_item(int(i), k + 1)[1:] for i in cells], blocks)
    return np.array([neighbours for block in found for neighbours in block], dtype=int)


def _scrublet_normalize(scrub: Any, postnorm_total: float | None = None) -> None:
    """scrublet's ``pipeline_normalize``, bit for bit (test), each cell's values scaled in place
    of its product with a sparse diagonal matrix (which converts the counts to CSR, multiplies
    and converts back: three copies and about a quarter of a chunk's time)."""
    if postnorm_total is None:
        postnorm_total = scrub._total_counts_obs.mean()
    scrub._E_obs_norm = _scaled_rows(scrub._E_obs, float(postnorm_total) / scrub._total_counts_obs)
    if scrub._E_sim is not None:
        scrub._E_sim_norm = _scaled_rows(scrub._E_sim, float(postnorm_total) / scrub._total_counts_sim)


def _scrublet_zscore(scrub: Any) -> None:
    """scrublet's ``pipeline_zscore``, bit for bit and in the same memory order (test), each
    matrix made dense once and z-scored in place. scrublet subtracts the means from a dense copy,
    multiplies it by a sparse diagonal matrix (another copy) and copies the transposed result
    again: the chunk's peak (0.7 GB more for 18,000 RPE1 cells)."""
    from scrublet.helper_functions import sparse_var

    means = np.asarray(scrub._E_obs_norm.mean(0))
    with np.errstate(divide="ignore"):  # a gene no cell expresses: scrublet's 1 / 0 = inf
        inverse = 1 / np.sqrt(sparse_var(scrub._E_obs_norm))
    scrub._E_obs_norm = _zscored(scrub._E_obs_norm, means, inverse)
    if scrub._E_sim_norm is not None:
        scrub._E_sim_norm = _zscored(scrub._E_sim_norm, means, inverse)


def _zscored(matrix: sp.spmatrix, means: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """``(matrix − means) · inverse`` per column as scrublet's ``sparse_zscore`` gives it: its
    diagonal product adds each one product to 0.0, so the values are the same, and its last
    transpose leaves the array column-major, so this one is too (PCA's products then sum in the
    same order)."""
    with np.errstate(invalid="ignore"):  # a gene no cell expresses: scrublet's 0 · inf = NaN
        dense = matrix.toarray(order="F")
        dense -= means
        dense *= inverse
    return dense


#: Stored values scaled at once by :func:`_scaled_rows`.
_SCALE_SLICE = 1 << 22


def _scaled_rows(counts: sp.spmatrix, factors: np.ndarray) -> sp.csc_matrix:
    """``diag(factors) · counts`` in CSC as scipy computes it: each product in float64 (the
    diagonal is float64), products that are 0 not stored."""
    counts = counts.tocsc()
    factors = np.asarray(factors, dtype=np.float64)
    values = counts.data.astype(np.float64)
    # a slice of values at a time: the gathered factors of every stored value would be one more
    # float64 copy of the chunk (about 0.4 GB for 17,000 RPE1 cells)
    for start in range(0, values.size, _SCALE_SLICE):
        values[start : start + _SCALE_SLICE] *= factors[counts.indices[start : start + _SCALE_SLICE]]
    scaled = sp.csc_matrix((values, counts.indices.copy(), counts.indptr.copy()), shape=counts.shape)
    if not values.all():
        scaled.eliminate_zeros()
    return scaled


def _scrublet_gene_filter(
    normalised: sp.csc_matrix, min_counts: float = 3, min_cells: int = 3, min_vscore_pctl: float = 85
) -> np.ndarray:
    """scrublet's ``filter_genes`` on all cells: genes with a positive v-score in its top
    ``100 − min_vscore_pctl`` percent and ≥ ``min_counts`` in ≥ ``min_cells`` cells."""
    vscores, genes = _scrublet_vscores(normalised)
    positive = vscores > 0
    vscores, genes = vscores[positive], genes[positive]
    min_vscore = np.percentile(vscores, min_vscore_pctl)
    # cells ≥ min_counts per gene, counted on the stored values (min_counts > 0: zeros never count)
    matrix = normalised.tocsc()
    high = matrix.data >= min_counts
    cells = np.zeros(matrix.shape[1], dtype=np.int64)
    filled = np.diff(matrix.indptr) > 0
    if filled.any():
        cells[filled] = np.add.reduceat(high, matrix.indptr[:-1][filled], dtype=np.int64)
    return genes[(cells[genes] >= min_cells) & (vscores >= min_vscore)]


def _column_moments(matrix: sp.csc_matrix, block_values: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Every column's mean and mean of squares, bit for bit as ``matrix.mean(axis=0)`` and
    ``E.data **= 2; E.mean(axis=0)`` compute them (scipy sums ``value · (1 / n)`` in storage
    order, one column at a time: ``np.add.at`` adds in the same order), a block of about
    ``block_values`` stored values at a time instead of two whole copies."""
    scale = 1.0 / matrix.shape[0]
    n_columns = matrix.shape[1]
    indptr = matrix.indptr
    mean, mean_square = np.zeros(n_columns), np.zeros(n_columns)
    left = 0
    while left < n_columns:
        right = int(np.searchsorted(indptr, indptr[left] + block_values, side="right")) - 1
        right = min(max(right, left + 1), n_columns)
        values = matrix.data[indptr[left] : indptr[right]]
        columns = np.repeat(np.arange(left, right), np.diff(indptr[left : right + 1]))
        np.add.at(mean, columns, values * scale)
        np.add.at(mean_square, columns, values**2 * scale)
        left = right
    return mean, mean_square


def _scrublet_vscores(
    normalised: sp.csc_matrix, nbins: int = 50, fit_percentile: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """scrublet's ``get_vscores`` with its defaults, bit for bit (test), its gene moments read
    without copying the matrix (:func:`_column_moments`); return the v-scores and their genes
    (those with a positive mean)."""
    import scipy.optimize
    from scrublet.helper_functions import runningquantile

    mean, mean_square = _column_moments(normalised.tocsc())
    genes = np.nonzero(mean > 0)[0]
    mu = mean[genes]
    fano = (mean_square[genes] - mu**2) / mu
    # scrublet's fit of the Fano factor's floor against the mean, as get_vscores does it
    x, y = runningquantile(np.log(mu), np.log(fano / mu), fit_percentile, nbins)
    x, y = x[~np.isnan(y)], y[~np.isnan(y)]
    counts, edges = np.histogram(np.log(fano[mu > 0]), bins=200)
    centres = edges[:-1] + np.diff(edges) / 2
    c = np.max((np.exp(centres[np.argmax(counts)]), 1))

    def error(b2: np.ndarray) -> float:
        return np.sum(abs(np.log(c * np.exp(-x) + b2) - y) ** 1)

    b = scipy.optimize.fmin(func=error, x0=[0.1], disp=False)
    a = c / (1 + b) - 1
    return fano / ((1 + a) * (1 + b) + b * mu), genes


def _scrublet_rapids(
    X: sp.csr_matrix, seed: int, expected_doublet_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    import cupy as cp
    import rapids_singlecell as rsc

    light = ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(X.shape[0])]))
    try:
        rsc.get.anndata_to_GPU(light)
        rsc.pp.scrublet(light, expected_doublet_rate=expected_doublet_rate, random_state=seed, verbose=False)
        # scrublet drops cells with < 3 genes before scoring: they come back NaN → not doublets
        predicted = light.obs["predicted_doublet"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        scores = light.obs["doublet_score"].to_numpy(dtype=np.float64)
    finally:
        del light
        cp.get_default_memory_pool().free_all_blocks()
    return predicted, scores


def scrublet_chunk(
    X: Any, seed: int, expected_doublet_rate: float, backend: Backend = "cpu"
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Scrublet on one chunk of cells (counts, cells × genes): ``(calls, scores, why skipped)``.

    A chunk where scrublet fails (too few cells or genes, no threshold found) is not an error:
    its cells are singlets with NaN scores and the reason is returned. The heap memory the chunk
    freed is handed back, so that each chunk's peak is its own.
    """
    run = _scrublet_cpu if resolve_backend(backend) == "cpu" else _scrublet_rapids
    n = X.shape[0]
    held = [as_csr(X)]
    del X  # scrublet is handed the only reference: it drops the CSR once it holds its CSC
    try:
        predicted, scores, reason = *run(held.pop(), seed, expected_doublet_rate), None
    except Exception as err:  # scrublet raises many types on degenerate input
        predicted, scores, reason = (
            np.zeros(n, dtype=bool),
            np.full(n, np.nan),
            f"{type(err).__name__}: {err}",
        )
    release_freed_memory()
    return predicted, scores, reason


def detect_doublets_report(
    adata: ad.AnnData,
    n_chunks: int | None = None,
    max_cells_per_chunk: int = 20_000,
    seed: int = 0,
    backend: Backend = "auto",
    perturbation_key: str = PERTURBATION_KEY,
    expected_doublet_rate: float = 0.05,
    show_progress: bool = True,
    counts: Any = None,
) -> DoubletReport:
    """Scrublet on chunks of cells, each a stratified slice of every perturbation (for memory).

    ``n_chunks`` defaults to ``ceil(n_cells / max_cells_per_chunk)``. A chunk where scrublet fails
    (too few cells or genes, no threshold found) is logged, recorded in ``skipped`` and its cells
    are called singlets. ``expected_doublet_rate`` = 0.05 as scanpy/rapids-singlecell's default.
    """
    use = resolve_backend(backend)
    n = adata.n_obs
    if n_chunks is None:
        n_chunks = max(1, -(-n // max_cells_per_chunk))
    if perturbation_key in adata.obs:
        labels = adata.obs[perturbation_key]
    else:
        logger.info("obs has no %r column: doublet chunks are random, not stratified", perturbation_key)
        labels = np.zeros(n)
    chunk = stratified_chunks(labels, n_chunks, seed)
    X = as_csr(adata.X) if counts is None else counts  # on disk: each chunk's cells are read alone
    predicted = np.zeros(n, dtype=bool)
    scores = np.full(n, np.nan)
    skipped: list[dict[str, Any]] = []
    for k in tqdm(range(n_chunks), desc="scrublet chunks", disable=not show_progress):
        rows = np.flatnonzero(chunk == k)
        predicted[rows], scores[rows], reason = scrublet_chunk(X[rows], seed + k, expected_doublet_rate, use)
        if reason is not None:
            skipped.append({"chunk": k, "n_cells": int(rows.size), "reason": reason})
            logger.warning(
                "scrublet skipped chunk %d (%d cells): %s; its cells count as singlets", k, rows.size, reason
            )
    if skipped:
        logger.warning("doublet detection skipped %d of %d chunks", len(skipped), n_chunks)
    logger.info("doublets: %d of %d cells (%d chunks, %s)", int(predicted.sum()), n, n_chunks, use)
    return DoubletReport(
        predicted=predicted, scores=scores, chunk=chunk, n_chunks=n_chunks, skipped=tuple(skipped)
    )


def detect_doublets(
    adata: ad.AnnData,
    n_chunks: int | None = None,
    max_cells_per_chunk: int = 20_000,
    seed: int = 0,
    backend: Backend = "auto",
    **kwargs: Any,
) -> np.ndarray:
    """Boolean doublet call per cell; see :func:`detect_doublets_report` for the details."""
    return detect_doublets_report(adata, n_chunks, max_cells_per_chunk, seed, backend, **kwargs).predicted
