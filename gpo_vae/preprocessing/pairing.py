"""Optimal-transport pairing of perturbed cells with control cells (design §5).

Within each split, batch and perturbation group, every perturbed cell is matched to one control
cell of the same split and batch, by optimal transport between the group and those controls on
features every screen has (:func:`pairing_feature_matrix`): library-normalised log1p expression
of the measured perturbed genes (published), or the top principal components of the most
variable genes when the panel does not measure the targets. The partner defines ΔX
(:func:`gpo_vae.preprocessing.derived.delta_x`), the target of the GRN alignment loss.

Published defaults: Euclidean cost / 100, uniform marginals, entropic OT (POT ``ot.sinkhorn``,
reg = 1.0), partner = argmax of the cell's row of the transport plan.
"""

from __future__ import annotations

import logging
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from tqdm.auto import tqdm

from gpo_vae.data.contract import CONTROL_LABEL
from gpo_vae.data.on_disk import BLOCK_CELLS, CountsOnDisk, write_dense_rows
from gpo_vae.preprocessing.derived import log1p_normalised_columns
from gpo_vae.preprocessing.normalize import as_csr, on_disk

logger = logging.getLogger(__name__)

PairingMethod = Literal["sinkhorn", "emd", "hungarian"]

#: Where :func:`pairing_features` writes the features in a scratch file.
FEATURES_ELEMENT = "pairing_features"

# Above this ratio of largest cost to reg, exp(-M/reg) in the plain Sinkhorn kernel underflows
# (or its scalings overflow) in float64; the log-domain solver is then used instead.
_LOG_DOMAIN_RATIO = 100.0


def pairing_features(
    X_counts: sp.spmatrix | sp.sparray | np.ndarray,
    var_names: Sequence[str] | pd.Index,
    perturbed_genes: Sequence[str],
    target_sum: float = 1e4,
    out: str | Path | None = None,
) -> tuple[np.ndarray | CountsOnDisk, list[str]]:
    """Features for OT pairing: log1p(counts / library size · ``target_sum``) of the measured
    perturbed genes.

    Library sizes are the totals over all genes (as ``scanpy.pp.normalize_total``); only the
    perturbed genes' columns are densified. Perturbed genes absent from ``var_names`` are skipped
    (logged). ``out``: a scratch ``.h5`` file (created or replaced) the features are written to a
    block of cells at a time (element :data:`FEATURES_ELEMENT`), returned as a
    :class:`~gpo_vae.data.on_disk.CountsOnDisk` that :func:`pair_cells_ot` reads a group at a
    time: the cells × targets matrix, which grows with both, is never held.

    Returns
    -------
    (features, measured): dense float32 ``N × P_measured`` (on disk with ``out``) and the
    measured gene names, in the order of ``perturbed_genes``.
    """
    index = pd.Index(var_names)
    positions = index.get_indexer(list(perturbed_genes))
    measured = [g for g, pos in zip(perturbed_genes, positions, strict=True) if pos >= 0]
    if len(measured) < len(perturbed_genes):
        logger.info(
            "%d of %d perturbed genes are not measured and are left out of the pairing features",
            len(perturbed_genes) - len(measured),
            len(perturbed_genes),
        )
    if not measured:
        raise ValueError(
            f"none of the {len(perturbed_genes)} perturbed genes is measured (the screen's genes do not "
            "include its targets, as in a targeted or HVG panel): pairing.features: targets has nothing "
            "to pair on; use pairing.features: pca (or auto)"
        )
    columns = positions[positions >= 0]
    if out is None:
        return log1p_normalised_columns(X_counts, columns, target_sum=target_sum).toarray(), measured
    X = X_counts if on_disk(X_counts) else as_csr(X_counts)

    def blocks() -> Iterator[tuple[int, int, np.ndarray]]:
        for start in range(0, X.shape[0], BLOCK_CELLS):
            rows = X[start : start + BLOCK_CELLS]
            yield start, start + rows.shape[0], log1p_normalised_columns(rows, columns, target_sum).toarray()

    with h5py.File(out, "w") as file:
        write_dense_rows(file, FEATURES_ELEMENT, (X.shape[0], columns.size), blocks())
    return CountsOnDisk(Path(out), FEATURES_ELEMENT), measured


def pca_features(
    X_counts: sp.spmatrix | sp.sparray | np.ndarray,
    var_names: Sequence[str] | pd.Index,
    fit_mask: np.ndarray,
    n_hvgs: int = 2000,
    n_pcs: int = 20,
    target_sum: float = 1e4,
    seed: int = 0,
    max_fit_cells: int = 20_000,
) -> tuple[np.ndarray, dict[str, int]]:
    """Top principal components of the log-normalised most variable genes, for every cell.

    Genes: scanpy's ``seurat`` HVGs of the ``fit_mask`` cells (at most ``n_hvgs``). The PCA is
    fitted on at most ``max_fit_cells`` of those cells (drawn with ``seed``) and applied to all
    cells in blocks, so only the HVG columns of a block are ever dense.

    Returns
    -------
    (features, record): float32 ``N × n_pcs`` (fewer when there are fewer genes or cells) and
    the numbers of HVGs and components used.
    """
    import anndata as ad
    from sklearn.decomposition import PCA

    from gpo_vae.preprocessing.deg import highly_variable_genes
    from gpo_vae.preprocessing.normalize import as_csr, normalize_log1p, on_disk

    names = pd.Index(var_names)
    fit_rows = np.flatnonzero(np.asarray(fit_mask, dtype=bool))
    rng = np.random.default_rng(seed)
    if fit_rows.size > max_fit_cells:
        fit_rows = np.sort(rng.choice(fit_rows, max_fit_cells, replace=False))
    # normalisation is per cell: the fitted cells and each block are normalised on their own, so
    # an on-disk matrix is read a block at a time and never held whole
    X = X_counts if on_disk(X_counts) else as_csr(X_counts)
    fit_logged = normalize_log1p(X[fit_rows], target_sum)
    n_top = min(n_hvgs, names.size)
    if n_top < names.size:
        sub = ad.AnnData(X=fit_logged, var=pd.DataFrame(index=names.astype(str)))
        hvg = highly_variable_genes(sub, batch_key=None, n_top=n_top).to_numpy()
    else:
        hvg = np.ones(names.size, dtype=bool)
    columns = np.flatnonzero(hvg)
    n_components = int(min(n_pcs, columns.size, fit_rows.size - 1))
    if n_components < 1:
        raise ValueError("too few genes or training cells for PCA pairing features")
    pca = PCA(n_components=n_components, random_state=seed)
    pca.fit(fit_logged[:, columns].toarray())
    del fit_logged
    features = np.empty((X.shape[0], n_components), dtype=np.float32)
    block = max(1, 50_000_000 // max(columns.size, 1) // 8)
    for start in range(0, X.shape[0], block):
        logged = normalize_log1p(X[start : start + block], target_sum)
        features[start : start + block] = pca.transform(logged[:, columns].toarray())
    return features, {"n_hvgs": int(columns.size), "n_components": n_components}


def pairing_feature_matrix(
    X_counts: sp.spmatrix | sp.sparray | np.ndarray,
    var_names: Sequence[str] | pd.Index,
    perturbed_genes: Sequence[str],
    fit_mask: np.ndarray,
    features: Literal["auto", "targets", "pca"] = "auto",
    min_measured_targets: int = 5,
    n_hvgs: int = 2000,
    n_pcs: int = 20,
    target_sum: float = 1e4,
    seed: int = 0,
    out: str | Path | None = None,
) -> tuple[np.ndarray | CountsOnDisk, dict[str, object]]:
    """The features cells are paired on, and a record of the choice (for ``record.json``).

    ``targets``: :func:`pairing_features` (written to ``out`` when given); ``pca``:
    :func:`pca_features` (fitted on the ``fit_mask`` cells; cells × components, held);
    ``auto``: the targets when at least ``min_measured_targets`` are measured, else the
    components.
    """
    index = pd.Index(var_names)
    n_measured = int((index.get_indexer(list(perturbed_genes)) >= 0).sum())
    use = features
    if features == "auto":
        use = "targets" if n_measured >= min_measured_targets else "pca"
    record: dict[str, object] = {
        "requested": features,
        "features": use,
        "measured_targets": n_measured,
        "perturbed_genes": len(perturbed_genes),
    }
    if use == "targets":
        matrix, measured = pairing_features(X_counts, index, perturbed_genes, target_sum, out)
        record["n_features"] = len(measured)
        return matrix, record
    matrix, pca_record = pca_features(X_counts, index, fit_mask, n_hvgs, n_pcs, target_sum, seed)
    record.update(pca_record, n_features=pca_record["n_components"])
    return matrix, record


def _sinkhorn_rows(cost: np.ndarray, reg: float, num_iter_max: int) -> np.ndarray:
    """Argmax of each row of the entropic plan with uniform marginals."""
    import ot  # POT imports torch when it is installed: only when pairing runs

    a = np.full(cost.shape[0], 1.0 / cost.shape[0])
    b = np.full(cost.shape[1], 1.0 / cost.shape[1])
    solver = "sinkhorn_log" if cost.max() / reg > _LOG_DOMAIN_RATIO else "sinkhorn"
    plan = ot.sinkhorn(a, b, cost, reg, method=solver, numItermax=num_iter_max)
    if solver == "sinkhorn" and not np.all(np.isfinite(plan)):
        plan = ot.sinkhorn(a, b, cost, reg, method="sinkhorn_log", numItermax=num_iter_max)
    return np.argmax(plan, axis=1)


def _emd_rows(cost: np.ndarray, num_iter_max: int) -> np.ndarray:
    """Argmax of each row of the exact plan with uniform marginals."""
    import ot

    a = np.full(cost.shape[0], 1.0 / cost.shape[0])
    b = np.full(cost.shape[1], 1.0 / cost.shape[1])
    return np.argmax(ot.emd(a, b, cost, numItermax=max(num_iter_max, 100_000)), axis=1)


def _hungarian_rows(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost assignment; with fewer controls than cells the controls are tiled, so each
    control serves at most ``ceil(cells / controls)`` cells."""
    n_cells, n_controls = cost.shape
    repeats = -(-n_cells // n_controls)
    tiled = np.tile(cost, (1, repeats)) if repeats > 1 else cost
    rows, cols = linear_sum_assignment(tiled)
    matched = np.empty(n_cells, dtype=np.int64)
    matched[rows] = cols % n_controls
    return matched


def _match(cost: np.ndarray, method: PairingMethod, reg: float, num_iter_max: int) -> np.ndarray:
    if method == "sinkhorn":
        return _sinkhorn_rows(cost, reg, num_iter_max)
    if method == "emd":
        return _emd_rows(cost, num_iter_max)
    return _hungarian_rows(cost)


def _dense64(features: np.ndarray | sp.spmatrix | sp.sparray, rows: np.ndarray) -> np.ndarray:
    block = features[rows]
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    return block.astype(np.float64, copy=False)


def pair_cells_ot(
    features: np.ndarray | sp.spmatrix | sp.sparray,
    perturbation_labels: Sequence[str] | np.ndarray | pd.Series,
    split_labels: Sequence[str] | np.ndarray | pd.Series,
    control_label: str = CONTROL_LABEL,
    method: PairingMethod = "sinkhorn",
    reg: float = 1.0,
    cost_scale: float = 100.0,
    num_iter_max: int = 1000,
    progress: bool = True,
    batches: Sequence[str] | np.ndarray | pd.Series | None = None,
    max_controls: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Match every perturbed cell to a control cell of the same split (and batch) by optimal transport.

    For each (split, batch, perturbation) group, the cost to each control cell of the split and
    batch is the
    Euclidean distance between feature rows divided by ``cost_scale``; both marginals are
    uniform. Deterministic: no randomness is involved (hence no seed); argmax ties go to the
    control with the lowest row index.

    Parameters
    ----------
    features
        ``N × F`` features per cell (see :func:`pairing_features`); dense, sparse or on disk
        (:class:`~gpo_vae.data.on_disk.CountsOnDisk`: each split's controls and each group's cells
        read when paired), densified per group.
    perturbation_labels, split_labels
        Per cell.
    control_label
        Label of control cells.
    method
        ``"sinkhorn"`` (published): entropic plan (``ot.sinkhorn``), partner = argmax of the row.
        When ``max(cost) / reg > 100`` the log-domain solver (``method="sinkhorn_log"``) is used,
        since the plain kernel ``exp(-cost/reg)`` underflows; a non-finite plain plan is also
        recomputed in the log domain. ``"emd"``: exact plan (``ot.emd``), partner = argmax of the
        row. ``"hungarian"``: one-to-one minimum-cost assignment
        (``scipy.optimize.linear_sum_assignment``); with fewer controls than cells the controls
        are tiled, each serving at most ``ceil(cells / controls)`` cells.
    reg
        Entropic regularisation of ``"sinkhorn"``.
    cost_scale
        Divisor of the Euclidean distance (the published 100).
    num_iter_max
        Iteration cap of the Sinkhorn solvers (EMD uses at least 100,000).
    progress
        Show a tqdm bar over groups.
    batches
        Batch of every cell (None: one batch); a cell is only ever paired within its batch.
    max_controls
        At most this many controls of a split (and batch) are candidates (None: all, as
        published): a split with more pairs with :func:`control_subset` of them, the same
        ones for every group and whichever chunk of perturbations is paired. Each group's cost
        matrix is its cells × the controls, so without a cap the pairing's time grows with the
        square of the cells.
    seed
        Seed of the control subsets.

    Returns
    -------
    int64 array of length N: the row index of each cell's partner. A control cell is its own
    partner, so that its ΔX is 0.

    Raises
    ------
    ValueError
        If a split (or batch of a split) that has perturbed cells has no control cells (the
        message names them), or if the inputs disagree in length.
    """
    if method not in ("sinkhorn", "emd", "hungarian"):
        raise ValueError(f"method must be 'sinkhorn', 'emd' or 'hungarian', got {method!r}")
    if reg <= 0 or cost_scale <= 0:
        raise ValueError(f"reg and cost_scale must be positive, got reg={reg}, cost_scale={cost_scale}")
    if max_controls is not None and max_controls < 1:
        raise ValueError(f"max_controls must be at least 1 (or None for all), got {max_controls}")
    labels = np.asarray(perturbation_labels).astype(str)
    split_names_only = np.asarray(split_labels).astype(str)
    n_cells = features.shape[0]
    batch = np.full(n_cells, "", dtype=object) if batches is None else np.asarray(batches).astype(str)
    # a "split" here is a (split, batch) pair: controls are looked up within it
    split = (
        split_names_only
        if batches is None
        else np.char.add(np.char.add(split_names_only, " / "), batch.astype(str))
    )
    if labels.shape != (n_cells,) or split_names_only.shape != (n_cells,) or batch.shape != (n_cells,):
        raise ValueError(
            f"features has {n_cells} rows but perturbation_labels has {labels.size} and "
            f"split_labels {split.size} entries"
        )
    is_control = labels == control_label
    split_names, split_code = np.unique(split, return_inverse=True)
    label_names, label_code = np.unique(labels, return_inverse=True)
    # One sort puts each (split, perturbation) group in a contiguous run, cells in index order.
    key = split_code.astype(np.int64) * label_names.size + label_code
    perturbed = np.flatnonzero(~is_control)
    perturbed = perturbed[np.argsort(key[perturbed], kind="stable")]
    starts = np.flatnonzero(np.r_[True, np.diff(key[perturbed]) != 0])
    groups = np.split(perturbed, starts[1:]) if perturbed.size else []

    for s, name in enumerate(split_names):
        if np.any(split_code[perturbed] == s) and not np.any(is_control & (split_code == s)):
            what = "split" if batches is None else "split / batch"
            raise ValueError(
                f"{what} {str(name)!r} has perturbed cells but no {control_label!r} control cells to pair "
                "them with; every split (and batch) needs controls (see validate_splits)"
            )

    import ot

    partner = np.arange(n_cells, dtype=np.int64)
    n_warned = 0
    current_split, controls, control_features = -1, None, None
    for cells in tqdm(groups, desc=f"OT pairing ({method})", unit="group", disable=not progress):
        s = split_code[cells[0]]
        if s != current_split:  # groups come sorted by split: densify each split's controls once
            current_split = s
            controls = control_subset(
                np.flatnonzero(is_control & (split_code == s)), str(split_names[s]), max_controls, seed
            )
            control_features = _dense64(features, controls)
        cost = ot.dist(_dense64(features, cells), control_features, metric="euclidean") / cost_scale
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            partner[cells] = controls[_match(cost, method, reg, num_iter_max)]
        n_warned += bool(caught)
    if n_warned:
        logger.warning(
            "the OT solver warned (e.g. did not converge in %d iterations) on %d of %d groups; "
            "partners are the argmax of the last plan",
            num_iter_max,
            n_warned,
            len(groups),
        )
    logger.info("paired %d perturbed cells in %d groups (%s)", perturbed.size, len(groups), method)
    return partner


def control_subset(controls: np.ndarray, where: str, max_controls: int | None, seed: int) -> np.ndarray:
    """``max_controls`` of a split's ``controls`` (increasing rows), drawn without replacement
    with a generator seeded by ``seed`` and the split's name ``where``; all of them when there
    are no more than that.

    The draw depends on the controls' order, not their rows, so the pairing of one chunk of
    perturbations (which holds every control, fewer other cells) draws the same controls.
    """
    if max_controls is None or controls.size <= max_controls:
        return controls
    rng = np.random.default_rng([seed, zlib.crc32(where.encode())])
    return controls[np.sort(rng.choice(controls.size, max_controls, replace=False))]


def partner_rows(
    partners: dict[str, str], names: Sequence[str] | pd.Index, perturbed: np.ndarray
) -> np.ndarray:
    """Each cell's partner row from chunks' ``partners`` (names): a control is its own partner.

    Raises
    ------
    ValueError
        If a perturbed cell has no partner or a partner is no cell here (the chunks were
        computed for another screen).
    """
    index = pd.Index(np.asarray(names).astype(str))
    rows = np.arange(index.size, dtype=np.int64)
    cells = index[np.asarray(perturbed, dtype=bool)]
    wanted = pd.Series(partners).reindex(cells)
    if wanted.isna().any():
        raise ValueError(
            f"the pairing chunks give no partner for {int(wanted.isna().sum())} perturbed cells "
            f"(e.g. {wanted.index[wanted.isna()][0]!r}): they were computed for another screen; run the "
            "same command again with `redun run --no-cache ...`"
        )
    found = index.get_indexer(wanted.to_numpy())
    if (found < 0).any():
        raise ValueError(
            f"the pairing chunks name partners that are no cell of this screen (e.g. "
            f"{wanted.to_numpy()[found < 0][0]!r}); run the same command again with `redun run --no-cache ...`"
        )
    rows[np.flatnonzero(np.asarray(perturbed, dtype=bool))] = found
    return rows
