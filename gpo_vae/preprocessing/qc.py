"""Per-cell quality-control flags (design §2): metrics, MAD thresholds, and the doublet calls of
:mod:`gpo_vae.preprocessing.doublets`.

Cells are flagged, never removed. Thresholds are fitted once on the data and stored
(:class:`QCThresholds`), so that generated cells are judged by the very same numbers.

The GPU backend (rapids-singlecell + cupy, the ``gpu`` extra) is imported lazily inside the
functions that use it; the package imports and runs on CPU without it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

# rapids_available, DoubletReport, detect_doublets and stratified_chunks: importable from here too
from gpo_vae.preprocessing.backend import rapids_available, resolve_backend  # noqa: F401
from gpo_vae.preprocessing.config import DEFAULT_NMADS, Backend
from gpo_vae.preprocessing.doublets import (  # noqa: F401
    DoubletReport,
    detect_doublets,
    detect_doublets_report,
    stratified_chunks,
)
from gpo_vae.preprocessing.normalize import as_csr, on_disk, take_rows
from gpo_vae.stats.mad import Side, mad_threshold, outside_threshold

logger = logging.getLogger(__name__)

# gene-name rules of the reference code (human symbols)
MT_PREFIX = "MT-"
RIBO_PREFIXES = ("RPS", "RPL")
HB_PATTERN = r"^HB[^P]"

QC_METRICS = ("total_counts", "n_genes_by_counts", "pct_counts_mt", "pct_counts_ribo", "pct_counts_hb")
# metric → (outlier side, flag stem): low library size / complexity, high mt/ribo/hb share
QC_RULES: dict[str, tuple[Side, str]] = {
    "total_counts": ("low", "low_counts"),
    "n_genes_by_counts": ("low", "low_genes"),
    "pct_counts_mt": ("high", "high_mt"),
    "pct_counts_ribo": ("high", "high_ribo"),
    "pct_counts_hb": ("high", "high_hb"),
}
DOUBLET_FLAG = "qc_doublet"
TOTAL_QC = "total_qc"


def qc_gene_sets(var_names: Iterable[str]) -> pd.DataFrame:
    """Boolean ``mt``/``ribo``/``hb`` columns over genes (``MT-``, ``RPS``/``RPL``, ``^HB[^P]``)."""
    names = pd.Index(var_names).astype(str)
    return pd.DataFrame(
        {
            "mt": names.str.startswith(MT_PREFIX),
            "ribo": names.str.startswith(RIBO_PREFIXES),
            "hb": names.str.contains(HB_PATTERN, regex=True),
        },
        index=names,
    )


def compute_qc_metrics(
    adata: ad.AnnData, backend: Backend = "auto", gpu_block_cells: int = 100_000, counts: Any = None
) -> pd.DataFrame:
    """Per-cell QC metrics (index = ``obs_names``), columns :data:`QC_METRICS`.

    ``scanpy.pp.calculate_qc_metrics`` on CPU, ``rapids_singlecell.pp.calculate_qc_metrics`` on GPU
    (in blocks of ``gpu_block_cells`` cells to bound GPU memory). ``adata`` is not modified.
    Percentages are NaN for cells with no counts. ``counts``: the count matrix when it is not
    ``adata.X`` (on disk: every metric is per cell, so it is computed a block of cells at a time).
    """
    var = qc_gene_sets(adata.var_names)
    X = adata.X if counts is None else counts
    if resolve_backend(backend) == "rapids":
        if on_disk(X):
            parts = [
                _compute_qc_metrics_rapids(
                    block, pd.DataFrame(index=adata.obs_names[a:b]), var, gpu_block_cells
                )
                for a, b, block in X.row_blocks()
            ]
            return pd.concat(parts)
        return _compute_qc_metrics_rapids(
            as_csr(X), pd.DataFrame(index=adata.obs_names), var, gpu_block_cells
        )
    if on_disk(X):
        parts = [_qc_metrics_cpu(block, adata.obs_names[a:b], var) for a, b, block in X.row_blocks()]
        return pd.concat(parts)
    return _qc_metrics_cpu(as_csr(X), adata.obs_names, var)


def _qc_metrics_cpu(X: sp.csr_matrix, obs_names: pd.Index, var: pd.DataFrame) -> pd.DataFrame:
    """The cells' columns of ``sc.pp.calculate_qc_metrics`` (``percent_top=None``, no log1p),
    computed as scanpy computes them (the same values and dtypes: test) without its per-gene
    metrics, which it computes too and we never read (a third of its time)."""
    if X.nnz and not X.data.all():  # scanpy drops stored zeros (in place) before counting genes
        X = X.copy()
        X.eliminate_zeros()
    metrics = pd.DataFrame(index=obs_names)
    metrics["n_genes_by_counts"] = X.getnnz(axis=1)
    metrics["total_counts"] = np.ravel(np.sum(X, axis=1))
    for name in var.columns:
        metrics[f"total_counts_{name}"] = np.ravel(np.sum(X[:, var[name].to_numpy()], axis=1))
        metrics[f"pct_counts_{name}"] = metrics[f"total_counts_{name}"] / metrics["total_counts"] * 100
    return metrics.loc[:, list(QC_METRICS)]


def _compute_qc_metrics_rapids(
    X: sp.csr_matrix, obs: pd.DataFrame, var: pd.DataFrame, block: int
) -> pd.DataFrame:
    import cupy as cp
    import rapids_singlecell as rsc

    parts = []
    for start in range(0, X.shape[0], block):
        stop = min(start + block, X.shape[0])
        light = ad.AnnData(X=X[start:stop], obs=obs.iloc[start:stop].copy(), var=var.copy())
        rsc.get.anndata_to_GPU(light)
        rsc.pp.calculate_qc_metrics(light, qc_vars=list(var.columns), log1p=False)
        parts.append(light.obs.loc[:, list(QC_METRICS)].copy())
        del light
        cp.get_default_memory_pool().free_all_blocks()
    return pd.concat(parts).astype(np.float64)


def _suffix(nmads: float) -> str:
    return f"t{float(nmads):g}"


@dataclass(frozen=True)
class QCThresholds:
    """MAD thresholds per number of MADs ``t``: ``values[t][metric]`` (low or high side per
    :data:`QC_RULES`), fitted on ``n_cells_fit`` cells. JSON-safe via :meth:`to_dict`."""

    values: Mapping[float, Mapping[str, float]]
    n_cells_fit: int
    sides: Mapping[str, str] = field(default_factory=lambda: {m: side for m, (side, _) in QC_RULES.items()})

    @property
    def nmads(self) -> tuple[float, ...]:
        return tuple(sorted(self.values))

    def threshold(self, metric: str, nmads: float) -> float:
        return float(self.values[float(nmads)][metric])

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_cells_fit": int(self.n_cells_fit),
            "sides": dict(self.sides),
            "thresholds": {
                f"{t:g}": {m: float(v) for m, v in per.items()} for t, per in sorted(self.values.items())
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QCThresholds:
        sides = dict(data.get("sides", {}))
        expected = {m: side for m, (side, _) in QC_RULES.items()}
        if sides and sides != expected:
            raise ValueError(f"stored QC sides {sides} differ from this version's rules {expected}")
        values = {
            float(t): {m: float(v) for m, v in per.items()} for t, per in dict(data["thresholds"]).items()
        }
        for t, per in values.items():
            missing = set(QC_METRICS) - set(per)
            if missing:
                raise ValueError(f"stored QC thresholds for t={t:g} lack {sorted(missing)}")
        return cls(values=values, n_cells_fit=int(data["n_cells_fit"]))


def fit_qc_thresholds(
    metrics: pd.DataFrame, nmads: Sequence[float] = DEFAULT_NMADS, fit_mask: np.ndarray | None = None
) -> QCThresholds:
    """``median ∓ t·MAD`` of each metric over the cells in ``fit_mask`` (default: all cells).

    The reference code fitted on all cells, test cells included (design §10); the caller decides
    by passing e.g. the training mask.
    """
    missing = set(QC_METRICS) - set(metrics.columns)
    if missing:
        raise KeyError(f"QC metrics lack columns {sorted(missing)}; compute them with compute_qc_metrics")
    fit = np.ones(len(metrics), dtype=bool) if fit_mask is None else np.asarray(fit_mask, dtype=bool)
    if fit.shape != (len(metrics),):
        raise ValueError(f"fit_mask has shape {fit.shape}, expected ({len(metrics)},)")
    if not fit.any():
        raise ValueError("fit_mask selects no cell: cannot fit QC thresholds")
    values = {
        float(t): {
            m: mad_threshold(metrics[m].to_numpy()[fit], float(t), side) for m, (side, _) in QC_RULES.items()
        }
        for t in nmads
    }
    return QCThresholds(values=values, n_cells_fit=int(fit.sum()))


def apply_qc_thresholds(
    metrics: pd.DataFrame,
    thresholds: QCThresholds,
    doublets: np.ndarray | None = None,
    default_nmads: float = 3,
) -> pd.DataFrame:
    """Boolean flags per ``t``: ``qc_low_counts_t3``, ``qc_low_genes_t3``, ``qc_high_mt_t3``,
    ``qc_high_ribo_t3``, ``qc_high_hb_t3`` …, ``qc_doublet``, ``qc_fail_t{t}`` (any flag of that
    ``t`` or a doublet), and ``total_qc`` = ``qc_fail`` at ``default_nmads`` as int8 0/1.

    Generated cells are judged with the stored thresholds and ``doublets=None`` (no doublet flag).
    """
    if float(default_nmads) not in thresholds.values:
        raise ValueError(f"default_nmads={default_nmads} is not among the fitted t {thresholds.nmads}")
    doublet = np.zeros(len(metrics), dtype=bool) if doublets is None else np.asarray(doublets, dtype=bool)
    if doublet.shape != (len(metrics),):
        raise ValueError(f"doublets has shape {doublet.shape}, expected ({len(metrics)},)")
    flags: dict[str, np.ndarray] = {}
    for t in thresholds.nmads:
        fail = doublet.copy()
        for metric, (side, stem) in QC_RULES.items():
            flag = outside_threshold(metrics[metric].to_numpy(), thresholds.threshold(metric, t), side)
            flags[f"qc_{stem}_{_suffix(t)}"] = flag
            fail |= flag
        flags[f"qc_fail_{_suffix(t)}"] = fail
    flags[DOUBLET_FLAG] = doublet
    out = pd.DataFrame(flags, index=metrics.index)
    out[TOTAL_QC] = out[f"qc_fail_{_suffix(default_nmads)}"].astype(np.int8)
    return out


def run_qc(
    adata: ad.AnnData,
    nmads: Sequence[float] = DEFAULT_NMADS,
    fit_mask: np.ndarray | None = None,
    doublets: bool = True,
    backend: Backend = "auto",
    seed: int = 0,
    default_nmads: float = 3,
    doublet_calls: np.ndarray | None = None,
    counts: Any = None,
    **doublet_kwargs: Any,
) -> tuple[pd.DataFrame, QCThresholds, pd.DataFrame]:
    """Metrics → thresholds (fitted on ``fit_mask``) → flags, plus doublets when ``doublets``.

    ``doublet_calls`` (a boolean per cell) are doublet calls made before, e.g. the scrublet
    calls a processed file ships: used instead of running scrublet again.

    ``total_qc`` is the verdict at ``default_nmads``; ``doublet_kwargs`` go to
    :func:`detect_doublets_report` (``n_chunks``, ``max_cells_per_chunk``, ``perturbation_key`` …).
    Pass the training mask as ``fit_mask`` to keep test cells out of the thresholds (the
    reference fitted them on all cells, design §10); flags are computed for every cell.

    Returns
    -------
    ``(flags, thresholds, metrics)``: flags as :func:`apply_qc_thresholds` (write them to ``obs``),
    the stored thresholds, and the metrics; with doublets the metrics also hold
    ``doublet_score`` (NaN where a chunk was skipped), ``doublet_chunk`` and
    ``doublet_chunk_skipped``.
    """
    metrics = compute_qc_metrics(adata, backend=backend, counts=counts)
    thresholds = fit_qc_thresholds(metrics, nmads=nmads, fit_mask=fit_mask)
    called = None
    if doublets and doublet_calls is not None:
        called = np.asarray(doublet_calls, dtype=bool)
    elif doublets:
        report = detect_doublets_report(adata, seed=seed, backend=backend, counts=counts, **doublet_kwargs)
        called = report.predicted
        skipped_chunks = [s["chunk"] for s in report.skipped]
        metrics = metrics.assign(
            doublet_score=report.scores,
            doublet_chunk=report.chunk,
            doublet_chunk_skipped=np.isin(report.chunk, skipped_chunks),
        )
    flags = apply_qc_thresholds(metrics, thresholds, doublets=called, default_nmads=default_nmads)
    logger.info(
        "QC: %d of %d cells fail at t=%g (thresholds fitted on %d cells)",
        int(flags[TOTAL_QC].sum()),
        len(flags),
        default_nmads,
        thresholds.n_cells_fit,
    )
    return flags, thresholds, metrics


def run_qc_by_batch(
    adata: ad.AnnData,
    batches: np.ndarray | None,
    fit_mask: np.ndarray | None = None,
    **kwargs: Any,
) -> tuple[pd.DataFrame, QCThresholds, pd.DataFrame, dict[str, QCThresholds]]:
    """:func:`run_qc` within each batch (thresholds and doublets per batch), flags for every cell.

    Cell lines differ in size and mitochondrial share, so one set of MAD thresholds would flag
    one line's ordinary cells. Returns ``(flags, thresholds, metrics, per_batch)``: the flags and
    metrics of all cells in their original order, thresholds fitted on every ``fit_mask`` cell
    (what generated cells are judged by), and each batch's thresholds. Without ``batches`` it is
    :func:`run_qc`, and ``per_batch`` is empty.
    """
    if batches is None:
        flags, thresholds, metrics = run_qc(adata, fit_mask=fit_mask, **kwargs)
        return flags, thresholds, metrics, {}
    batches = np.asarray(batches).astype(str)
    fit = np.ones(adata.n_obs, dtype=bool) if fit_mask is None else np.asarray(fit_mask, dtype=bool)
    calls = kwargs.pop("doublet_calls", None)
    counts = kwargs.pop("counts", None)
    flag_parts, metric_parts, per_batch = [], [], {}
    for name in sorted(set(batches.tolist())):
        rows = np.flatnonzero(batches == name)
        batch_calls = None if calls is None else np.asarray(calls, dtype=bool)[rows]
        batch_counts = None if counts is None else take_rows(counts, rows)
        flags, thresholds, metrics = run_qc(
            adata[rows], fit_mask=fit[rows], doublet_calls=batch_calls, counts=batch_counts, **kwargs
        )
        flag_parts.append(flags)
        metric_parts.append(metrics)
        per_batch[name] = thresholds
    flags = pd.concat(flag_parts).reindex(adata.obs_names)
    metrics = pd.concat(metric_parts).reindex(adata.obs_names)
    pooled = fit_qc_thresholds(
        metrics.loc[:, list(QC_METRICS)], nmads=kwargs.get("nmads", DEFAULT_NMADS), fit_mask=fit
    )
    return flags, pooled, metrics, per_batch
