"""The preprocessing stage composed (design §2–§5): raw counts in, one artifact out.

Order: perturbation filters → splits → QC (thresholds fitted on training cells) → DE genes on
training cells → treatment nodes and dosage → OT pairing within split and perturbation → ΔX →
counterfactual cells → training-cell normalisation statistics. Every sub-stage is timed and
its counts go into the record stored with the artifact.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from gpo_vae.config import to_dict
from gpo_vae.data.contract import CONTROL_LABEL, GENE_ID_KEY, PERTURBATION_KEY, read_counts_h5ad
from gpo_vae.data.summary_stats_io import read_summary_stats, strong_perturbations
from gpo_vae.io import provenance, sha256_of
from gpo_vae.preprocessing.config import (
    PerturbationFilterConfig,
    PreprocessConfig,
)
from gpo_vae.preprocessing.deg import annotate_deg
from gpo_vae.preprocessing.derived import (
    counterfactual_indices,
    counterfactual_table,
    delta_x,
    normalisation_stats,
)
from gpo_vae.preprocessing.filtering import perturbation_filter_mask
from gpo_vae.preprocessing.nodes import dosage_matrix, treatment_nodes
from gpo_vae.preprocessing.normalize import library_size
from gpo_vae.preprocessing.pairing import pair_cells_ot, pairing_features
from gpo_vae.preprocessing.qc import run_qc
from gpo_vae.preprocessing.splits import split_heldout_perturbations, split_random, validate_splits

logger = logging.getLogger(__name__)


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    logger.info("preprocess: %s …", name)
    yield
    timings[name] = round(time.perf_counter() - start, 3)
    logger.info("preprocess: %s done in %.1f s", name, timings[name])


def strong_genes_from_summary(
    stats_path: str | Path, sheet: str | None, adata: ad.AnnData, filters: PerturbationFilterConfig
) -> tuple[pd.Index, pd.Index]:
    """(strong perturbations, all perturbations with statistics) as gene symbols (design §3)."""
    id_map = None
    if GENE_ID_KEY in adata.var.columns:
        id_map = pd.Series(adata.var_names.to_numpy(), index=adata.var[GENE_ID_KEY].astype(str).to_numpy())
    stats = read_summary_stats(stats_path, sheet, gene_ids_to_symbols=id_map)
    strong = strong_perturbations(stats, filters.min_degs, filters.max_knockdown, filters.min_filtered_cells)
    known = pd.Index(stats.loc[~stats["is_control"], "perturbation"].astype(str).unique())
    return strong, known


def _make_splits(
    labels: np.ndarray, config: PreprocessConfig, control_label: str
) -> tuple[np.ndarray, list[str]]:
    if config.split.mode == "random":
        return split_random(len(labels), config.seed, config.split.fractions), []
    heldout = split_heldout_perturbations(
        labels, config.split.heldout_fraction, control_label, config.seed, config.split.fractions
    )
    return heldout.labels, sorted(heldout.heldout)


def preprocess(
    adata: ad.AnnData,
    strong_genes: pd.Index,
    known_genes: pd.Index,
    config: PreprocessConfig,
    control_label: str = CONTROL_LABEL,
    progress: bool = True,
) -> ad.AnnData:
    """Run the whole stage on raw counts in the contract; return the artifact AnnData.

    The artifact's fields are listed in :mod:`gpo_vae.preprocessing.artifact`; its
    ``uns["record"]`` (JSON) holds the config, QC thresholds, filter counts, split sizes,
    timings and package versions.
    """
    timings: dict[str, float] = {}
    with _timed(timings, "filters"):
        mask, filter_records = perturbation_filter_mask(
            adata, strong_genes, known_genes, config.filters, control_label=control_label
        )
    inputs = {"cells": adata.n_obs, "genes": adata.n_vars}
    return preprocess_filtered(
        adata[mask].copy(), filter_records, inputs, config, control_label, progress, timings
    )


def preprocess_filtered(
    adata: ad.AnnData,
    filter_records: list[dict[str, Any]],
    inputs: dict[str, int],
    config: PreprocessConfig,
    control_label: str = CONTROL_LABEL,
    progress: bool = True,
    timings: dict[str, float] | None = None,
) -> ad.AnnData:
    """The stages after the perturbation filters, on the cells they kept (see :func:`preprocess`)."""
    timings = dict(timings or {})
    record: dict[str, Any] = {"input": inputs, "filters": filter_records}
    labels = adata.obs[PERTURBATION_KEY].astype(str).to_numpy()
    is_control = labels == control_label

    with _timed(timings, "splits"):
        split, heldout = _make_splits(labels, config, control_label)
        table = validate_splits(split, labels, control_label, heldout)
    record["splits"] = {"mode": config.split.mode, "heldout": heldout, "cells": table.sum().to_dict()}
    train = split == "train"

    with _timed(timings, "qc"):
        flags, thresholds, metrics = run_qc(
            adata,
            nmads=config.qc.nmads,
            fit_mask=train if config.qc.fit_on == "train" else None,
            doublets=config.qc.doublets,
            backend=config.qc.backend,
            seed=config.seed,
            default_nmads=config.qc.default_nmads,
            max_cells_per_chunk=config.qc.max_cells_per_chunk,
            show_progress=progress,
        )
    record["qc"] = {f"fail_t{t:g}": int(flags[f"qc_fail_t{t:g}"].sum()) for t in config.qc.nmads}

    with _timed(timings, "deg"):
        fc3, _ = annotate_deg(
            adata,
            train,
            control_label=control_label,
            target_sum=config.target_sum,
            lfc=config.deg.lfc,
            pval_adj=config.deg.pval_adj,
            restrict_to_hvg=config.deg.restrict_to_hvg,
            tie_correct=config.deg.tie_correct,
        )
        perturbed = sorted(set(labels[~is_control]))
        nodes, n_perturbed = treatment_nodes(perturbed, fc3.index[fc3.to_numpy()], control_label)
        dosage = dosage_matrix(labels, nodes, control_label, n_perturbed)
    record["nodes"] = {"perturbed": n_perturbed, "additional": len(nodes) - n_perturbed}

    with _timed(timings, "pairing"):
        features, measured = pairing_features(adata.X, adata.var_names, perturbed, config.target_sum)
        partner = pair_cells_ot(
            features,
            labels,
            split,
            control_label,
            method=config.pairing.method,
            reg=config.pairing.reg,
            cost_scale=config.pairing.cost_scale,
            progress=progress,
        )
    record["pairing"] = {"features": len(measured), "unmeasured_perturbed": len(perturbed) - len(measured)}

    with _timed(timings, "delta_x"):
        gene_pos = pd.Series(np.arange(adata.n_vars), index=adata.var_names)
        node_gene_index = gene_pos.reindex(nodes).fillna(-1).astype(np.int64).to_numpy()
        dx = delta_x(adata.X, partner, node_gene_index, config.target_sum)

    with _timed(timings, "counterfactual"):
        qc_fail = flags["total_qc"].to_numpy().astype(bool)
        cf_index = counterfactual_indices(labels, split, qc_fail, config.counterfactual_cells, config.seed)
        cf_medians, cf_row = counterfactual_table(adata.X, cf_index, progress=progress)
    record["counterfactual"] = {
        "cells_with_cf": int((cf_row >= 0).sum()),
        "distinct": int(cf_medians.shape[0]),
    }

    with _timed(timings, "normalisation"):
        stats = normalisation_stats(adata.X, train)

    obs = pd.DataFrame(index=adata.obs_names)
    obs[PERTURBATION_KEY] = pd.Categorical(labels)
    obs["split"] = pd.Categorical(split, categories=["train", "val", "test"])
    obs["partner"] = partner.astype(np.int64)
    obs["library_size"] = library_size(adata.X).astype(np.float32)
    obs["cf_row"] = cf_row.astype(np.int64)
    for column in flags.columns:
        obs[column] = flags[column].to_numpy()
    for column in ("total_counts", "n_genes_by_counts", "pct_counts_mt", "pct_counts_ribo", "pct_counts_hb"):
        obs[column] = metrics[column].to_numpy()

    var = adata.var.copy()
    var["FC3"] = fc3.to_numpy()
    var["node_index"] = (
        pd.Series(np.arange(len(nodes)), index=nodes)
        .reindex(adata.var_names)
        .fillna(-1)
        .astype(int)
        .to_numpy()
    )
    var["mean_x"], var["std_x"] = stats["x_mean"], stats["x_std"]
    var["mean_log"], var["std_log"] = stats["log_x_mean"], stats["log_x_std"]

    record.update(qc_thresholds=thresholds.to_dict(), timings=timings)
    record["output"] = {"cells": int(adata.n_obs), "genes": int(adata.n_vars), "nodes": len(nodes)}
    record.update(provenance(to_dict(config)))
    artifact = ad.AnnData(X=adata.X, obs=obs, var=var)
    artifact.obsm["D"] = dosage
    artifact.obsm["delta_x"] = dx
    artifact.obsm["cf_index"] = cf_index
    artifact.uns.update(
        nodes=list(nodes),
        n_perturbed=int(n_perturbed),
        control_label=control_label,
        qc_thresholds=thresholds.to_dict(),
        cf_medians=cf_medians,
        record=json.dumps(record, default=_json_default),
    )
    return artifact


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, pd.Index)):
        return value.tolist()
    return str(value)


def preprocess_files(
    counts_path: str | Path,
    stats_path: str | Path,
    sheet: str | None,
    config: PreprocessConfig,
    perturbation_key: str = PERTURBATION_KEY,
    control_label: str = CONTROL_LABEL,
    progress: bool = True,
) -> ad.AnnData:
    """Read a raw counts file and its summary statistics, then preprocess.

    The filters run on the whole file; then only the kept cells are read again from disk, so the
    full matrix and its filtered copy are never in memory together.
    """
    timings: dict[str, float] = {}
    adata = read_counts_h5ad(counts_path, perturbation_key, control_label)
    inputs = {
        "cells": adata.n_obs,
        "genes": adata.n_vars,
        "counts_sha256": sha256_of(Path(counts_path)),
        "summary_stats_sha256": sha256_of(Path(stats_path)),
    }
    strong, known = strong_genes_from_summary(stats_path, sheet, adata, config.filters)
    with _timed(timings, "filters"):
        mask, filter_records = perturbation_filter_mask(adata, strong, known, config.filters)
    del adata
    kept = read_counts_h5ad(counts_path, perturbation_key, control_label, rows=mask)
    return preprocess_filtered(kept, filter_records, inputs, config, CONTROL_LABEL, progress, timings)
