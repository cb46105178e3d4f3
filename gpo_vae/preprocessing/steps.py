"""The preprocessing stage composed (design §2–§5): raw counts in, one artifact out.

Order: modality → perturbation filters (with the perturbation table) → splits (stratified by
label and batch when asked, enough test controls) → QC (thresholds fitted on training cells,
per batch) → DE genes on training cells → treatment nodes and multi-hot dosage → OT pairing
within split, batch and perturbation, on targets or principal components → ΔX → counterfactual
cells → training-cell normalisation statistics. Every sub-stage is timed and its counts go into
the record stored with the artifact.
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
from gpo_vae.data.contract import BATCH_KEY, CONTROL_LABEL, PERTURBATION_KEY
from gpo_vae.data.gene_ids import TARGET_IDS_KEY, gene_id_lookup
from gpo_vae.data.labels import single_genes
from gpo_vae.data.layout import CANONICAL_SEPARATOR
from gpo_vae.data.summary_stats_io import read_summary_stats
from gpo_vae.errors import UserError
from gpo_vae.interrupt import check_stop
from gpo_vae.io import provenance, temp_sibling
from gpo_vae.preprocessing.config import PreprocessConfig
from gpo_vae.preprocessing.deg import annotate_deg
from gpo_vae.preprocessing.derived import (
    counterfactual_indices,
    counterfactual_table,
    delta_x,
    normalisation_stats,
)
from gpo_vae.preprocessing.filter_table import (
    KEPT,
    format_table,
    perturbation_table,
    resolve_modality,
    strong_decisions,
    table_record,
)
from gpo_vae.preprocessing.filtering import perturbation_filter_mask
from gpo_vae.preprocessing.nodes import dosage_matrix, treatment_nodes
from gpo_vae.preprocessing.normalize import library_size, on_disk
from gpo_vae.preprocessing.pairing import pair_cells_ot, pairing_feature_matrix, partner_rows
from gpo_vae.preprocessing.published import (
    ShippedProcessing,
    as_flags,
    resolve_mode,
    shipped_partners,
    shipped_processing,
)
from gpo_vae.preprocessing.qc import run_qc_by_batch
from gpo_vae.preprocessing.split_plan import screen_splits, test_controls_by_batch
from gpo_vae.preprocessing.splits import (
    validate_splits,
)
from gpo_vae.runtime import release_freed_memory

logger = logging.getLogger(__name__)


class MissingSummaryStatsError(UserError, ValueError):
    """Our own filters were asked for on a published dataset whose summary statistics are missing."""


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    check_stop(f"preprocessing (before {name})")
    start = time.perf_counter()
    logger.info("preprocess: %s …", name)
    yield
    release_freed_memory()  # the next stage's peak is its own, not this one's freed heap
    timings[name] = round(time.perf_counter() - start, 3)
    logger.info("preprocess: %s done in %.1f s", name, timings[name])


def read_screen_stats(
    stats_path: str | Path | None, sheet: str | None, adata: ad.AnnData
) -> pd.DataFrame | None:
    """The summary statistics with names mapped to the screen's symbols (Ensembl ids through the
    measured genes' ids and the targets' ids in obs, :func:`~gpo_vae.data.gene_ids.gene_id_lookup`)."""
    if stats_path is None:
        return None
    id_map = gene_id_lookup(adata.var, adata.var_names, adata.uns.get(TARGET_IDS_KEY))
    return read_summary_stats(stats_path, sheet, gene_ids_to_symbols=id_map)


def stats_from_cells(adata: ad.AnnData) -> pd.DataFrame:
    """Summary statistics computed from the screen's own cells, as the workflow makes them for a
    screen given without any: computed, written as the workflow's CSV and read back, so that
    :func:`gpo_vae.pp.prepare` and ``main`` judge the same file by the same numbers (the modality
    among them: a CRISPRa screen is not taken for CRISPRi)."""
    import tempfile

    from gpo_vae.data.summary_stats import compute_summary_stats, write_summary_stats_csv

    with tempfile.TemporaryDirectory(prefix="gpo_vae_stats_") as folder:
        path = write_summary_stats_csv(
            compute_summary_stats(adata, progress=False), Path(folder) / "stats.csv"
        )
        return read_screen_stats(path, None, adata)


def cell_batches(adata: ad.AnnData) -> np.ndarray | None:
    return adata.obs[BATCH_KEY].astype(str).to_numpy() if BATCH_KEY in adata.obs.columns else None


def filter_screen(
    adata: ad.AnnData,
    stats: pd.DataFrame | None,
    config: PreprocessConfig,
    source: str | Path | None = None,
    missing_stats: str | None = None,
    counts: Any = None,
) -> tuple[np.ndarray, dict[str, Any], pd.DataFrame, ShippedProcessing | None]:
    """Modality and perturbation filters on the raw screen: (cells kept, record, table, shipped).

    A file the GPO-VAE authors already processed keeps every cell and perturbation under
    ``preprocess.mode`` ``auto`` or ``published`` (:mod:`gpo_vae.preprocessing.published`);
    ``shipped`` then says what it ships, and is None when our filters ran. The record holds the
    modality (requested, resolved and why), each filter's counts, the table's rows and
    ``preprocessing`` (the mode, why, and the cells and perturbations each step kept).
    ``missing_stats`` says why a published dataset came without its summary statistics: our own
    filters need them, so they stop with it (a published processed file needs none).
    ``counts``: the count matrix when it is not ``adata.X`` (on disk: read a block at a time).
    """
    shipped = shipped_processing(adata.obs, adata.var, config.seed)
    mode, why = resolve_mode(config.mode, shipped, str(source) if source else None)
    if mode == "ours" and stats is None and missing_stats:
        raise MissingSummaryStatsError(
            f"our own preprocessing ({why}) filters perturbations by their summary statistics, and "
            f"there are none: {missing_stats}"
        )
    modality, basis = resolve_modality(config.modality, stats, adata.var_names)
    labels = adata.obs[PERTURBATION_KEY].astype(str).to_numpy()
    steps = [_step("input", labels, np.ones(adata.n_obs, dtype=bool))]
    if mode == "published":
        mask = np.ones(adata.n_obs, dtype=bool)
        table = perturbation_table(labels, stats, adata.var_names, CONTROL_LABEL)
        if stats is not None:  # the reported values, for reading: nothing is judged by them
            filters = config.filters
            table = strong_decisions(table, stats, filters, modality, filters.resolved_min_degs(adata.n_vars))
        table["status"] = KEPT
        table["reason"] = "as shipped (preprocess.mode: published)"
        records: list[dict[str, Any]] = []
        steps.append(_step("kept as shipped", labels, mask))
    else:
        shipped = None
        mask, records, table = perturbation_filter_mask(adata, stats, config.filters, modality, counts=counts)
        steps += [
            {"step": r["filter"], "cells": r["n_cells_after"], "perturbations": r["n_perturbations_after"]}
            for r in records
        ]
    record = {
        "modality": {"resolved": modality, **basis},
        "filters": records,
        "perturbation_table": table_record(table),
        "preprocessing": {
            "mode": mode,
            "basis": why,
            "shipped": shipped.to_dict() if shipped else None,
            "steps": steps,
        },
    }
    return mask, record, table, shipped


def _step(name: str, labels: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """Cells and perturbations a step kept (``mask``)."""
    kept = labels[mask]
    return {
        "step": name,
        "cells": int(mask.sum()),
        "perturbations": len(set(kept.tolist()) - {CONTROL_LABEL}),
    }


def preprocess(
    adata: ad.AnnData,
    stats: pd.DataFrame | None,
    config: PreprocessConfig,
    progress: bool = True,
    print_table: bool = False,
) -> ad.AnnData:
    """Run the whole stage on raw counts in the contract; return the artifact AnnData.

    ``stats`` are the screen's summary statistics (:func:`read_screen_stats`; None: perturbations
    are judged by their cells alone). The artifact's fields are listed in
    :mod:`gpo_vae.preprocessing.artifact`; its ``uns["record"]`` (JSON) holds the config,
    modality, perturbation table, QC thresholds, filter counts, split sizes, pairing features,
    timings and package versions.
    """
    timings: dict[str, float] = {}
    with _timed(timings, "filters"):
        mask, filter_record, table, shipped = filter_screen(adata, stats, config)
    if print_table:
        print("\n".join(format_table(table, modality=filter_record["modality"]["resolved"])), flush=True)
    inputs = {"cells": adata.n_obs, "genes": adata.n_vars}
    kept = adata if mask.all() else adata[mask].copy()
    return preprocess_filtered(kept, filter_record, inputs, config, progress, timings, shipped)


def preprocess_filtered(
    adata: ad.AnnData,
    filter_record: dict[str, Any],
    inputs: dict[str, Any],
    config: PreprocessConfig,
    progress: bool = True,
    timings: dict[str, float] | None = None,
    shipped: ShippedProcessing | None = None,
    counts: Any = None,
    scratch: Path | None = None,
    deg_picks: dict[str, str] | None = None,
    pairing: dict[str, Any] | None = None,
    doublets: list[str] | None = None,
) -> ad.AnnData:
    """The stages after the perturbation filters, on the cells they kept (see :func:`preprocess`).

    ``counts``: the kept cells' counts when they are not ``adata.X`` — on disk
    (:class:`~gpo_vae.data.on_disk.CountsOnDisk`) every stage reads them a block at a time and
    the artifact returned has no X (:func:`~gpo_vae.preprocessing.artifact.write_artifact` then
    copies it from ``counts``). ``scratch``: an ``.h5`` file ΔX and the counterfactual
    medians are written to as they are computed (``uns["cf_medians"]`` is then on disk too, and
    ΔX is left out of ``obsm``: it is element :data:`~gpo_vae.preprocessing.derived.DELTA_X_ELEMENT`
    of ``scratch``, for ``write_artifact``'s ``delta_x``). ``deg_picks``:
    each perturbation's FC3 gene computed beforehand, chunk by chunk
    (:mod:`gpo_vae.preprocessing.deg_chunks`); the DE test is then not run here. ``pairing``:
    the OT pairing computed beforehand, chunk by chunk (:mod:`gpo_vae.preprocessing.pair_chunks`):
    ``partners`` (perturbed cell name → control name) and the features' ``record``. ``doublets``:
    the names of the cells scrublet called doublets, chunk by chunk
    (:mod:`gpo_vae.preprocessing.doublet_chunks`); scrublet is then not run here.

    ``shipped`` (a file the GPO-VAE authors processed, kept as published) supplies the split
    (under ``split.mode: random``), the doublet calls, the DE genes and the pairing, each where the
    file holds it; the record says where every one came from.
    """
    control_label = CONTROL_LABEL
    timings = dict(timings or {})
    X = adata.X if counts is None else counts
    record: dict[str, Any] = {"input": inputs, **filter_record}
    if "layout" in adata.uns:
        record["layout"] = {**dict(adata.uns["layout"]), **dict(adata.uns.get("layout_record", {}))}
    labels = adata.obs[PERTURBATION_KEY].astype(str).to_numpy()
    is_control = labels == control_label
    batches = cell_batches(adata)
    record["batches"] = (
        {"key": record.get("layout", {}).get("batch_key"), "names": sorted(set(batches.tolist()))}
        if batches is not None
        else None
    )

    with _timed(timings, "splits"):
        split, heldout, unseen, controls, split_source = screen_splits(
            adata, labels, batches, config, shipped
        )
        table = validate_splits(split, labels, control_label, heldout, batches)
    record["splits"] = {
        "mode": config.split.mode,
        "source": split_source,
        "stratify": config.split.stratify,
        "heldout": heldout,
        "unseen_singles": unseen,
        "heldout_combinations": [p for p in heldout if CANONICAL_SEPARATOR in p],
        "cells": table.sum().to_dict(),
        "test_controls": int((is_control & (split == "test")).sum()),
        "test_controls_by_batch": test_controls_by_batch(is_control, split, batches),
        "controls_moved_to_test": controls["moved"],
        "min_test_controls": config.split.min_test_controls,
        "scarce_controls": controls["scarce"],
    }
    train = split == "train"

    doublet_calls, doublet_source = (
        None,
        "scrublet" if config.qc.doublets else "not called (qc.doublets: false)",
    )
    if shipped is not None and shipped.doublet_column is not None and config.qc.doublets:
        doublet_calls = as_flags(adata.obs[shipped.doublet_column])
        doublet_source = f"as shipped in obs[{shipped.doublet_column!r}]"
    elif doublets is not None and config.qc.doublets:
        # the source stays "scrublet": the artifact is the one QC's own run gives (same checksum)
        doublet_calls = adata.obs_names.isin(doublets)
        logger.info("doublets from scrublet run in chunks: %d cells", int(doublet_calls.sum()))
    with _timed(timings, "qc"):
        flags, thresholds, metrics, per_batch = run_qc_by_batch(
            adata,
            batches,
            fit_mask=train if config.qc.fit_on == "train" else None,
            nmads=config.qc.nmads,
            doublets=config.qc.doublets,
            backend=config.qc.backend,
            seed=config.seed,
            default_nmads=config.qc.default_nmads,
            max_cells_per_chunk=config.qc.max_cells_per_chunk,
            show_progress=progress,
            doublet_calls=doublet_calls,
            counts=counts,
        )
    record["qc"] = {f"fail_t{t:g}": int(flags[f"qc_fail_t{t:g}"].sum()) for t in config.qc.nmads}
    record["qc"]["doublets"] = doublet_source
    if per_batch:
        record["qc"]["thresholds_by_batch"] = {name: t.to_dict() for name, t in per_batch.items()}

    with _timed(timings, "deg"):
        if shipped is not None:
            fc3 = pd.Series(as_flags(adata.var[shipped.deg_column]), index=adata.var_names)
            deg_source = f"as shipped in var[{shipped.deg_column!r}]"
        elif deg_picks is not None:
            fc3 = pd.Series(adata.var_names.isin(sorted(set(deg_picks.values()))), index=adata.var_names)
            deg_source = "Wilcoxon against controls on training cells"
            # not in the record: the artifact is the one the unchunked test gives (same checksum)
            logger.info("FC3 from the DE test run in chunks: %d genes picked", int(fc3.sum()))
        else:
            # the picks come from the test's arrays: no table of groups × genes rows is built
            fc3 = annotate_deg(
                adata,
                train,
                control_label=control_label,
                target_sum=config.target_sum,
                lfc=config.deg.lfc,
                pval_adj=config.deg.pval_adj,
                restrict_to_hvg=config.deg.restrict_to_hvg,
                tie_correct=config.deg.tie_correct,
                counts=counts,
                keep_table=False,
            )[0]
            deg_source = "Wilcoxon against controls on training cells"
        perturbed_labels = sorted(set(labels[~is_control]))
        nodes, n_perturbed = treatment_nodes(perturbed_labels, fc3.index[fc3.to_numpy()], control_label)
        dosage = dosage_matrix(labels, nodes, control_label, n_perturbed)
    measured_nodes = pd.Index(nodes).isin(adata.var_names)
    record["nodes"] = {
        "perturbed": n_perturbed,
        "additional": len(nodes) - n_perturbed,
        "combinations": sum("+" in label for label in perturbed_labels),
        "perturbed_not_measured": int((~measured_nodes[:n_perturbed]).sum()),
        "deg_source": deg_source,
    }

    with _timed(timings, "pairing"):
        partner, why = (None, "")
        if shipped is not None:
            partner, why = shipped_partners(adata.obs, shipped, labels, split, control_label, batches)
        if partner is None and pairing is not None:
            partner = partner_rows(pairing["partners"], adata.obs_names, ~is_control)
            pairing_record = dict(pairing["record"])
            logger.info("OT partners from the pairing run in chunks: %d cells", int((~is_control).sum()))
        elif partner is not None:
            genes = single_genes(perturbed_labels)
            pairing_record = {
                "features": "shipped",
                "requested": config.pairing.features,
                "source": why,
                "perturbed_genes": len(genes),
                "measured_targets": int(adata.var_names.isin(genes).sum()),
            }
        else:
            # cells × measured targets, dense, growing with both: beside the scratch file when the
            # counts are on disk (read a group at a time), else held only while pairing runs
            features_file = None if scratch is None else temp_sibling(scratch, is_dir=False)
            try:
                features, pairing_record = pairing_feature_matrix(
                    X,
                    adata.var_names,
                    single_genes(perturbed_labels),
                    train,
                    features=config.pairing.features,
                    min_measured_targets=config.pairing.min_measured_targets,
                    n_hvgs=config.pairing.n_hvgs,
                    n_pcs=config.pairing.n_pcs,
                    target_sum=config.target_sum,
                    seed=config.seed,
                    out=features_file,
                )
                if shipped is not None:
                    pairing_record["shipped_not_used"] = why
                partner = pair_cells_ot(
                    features,
                    labels,
                    split,
                    control_label,
                    method=config.pairing.method,
                    reg=config.pairing.reg,
                    cost_scale=config.pairing.cost_scale,
                    progress=progress,
                    batches=batches,
                    max_controls=config.pairing.max_controls,
                    seed=config.seed,
                )
                del features
            finally:
                if features_file is not None:
                    features_file.unlink(missing_ok=True)
    record["pairing"] = {
        **pairing_record,
        "max_controls": config.pairing.max_controls,
        "within_batch": batches is not None,
        "unmeasured_perturbed": int((~measured_nodes[:n_perturbed]).sum()),
    }

    with _timed(timings, "delta_x"):
        gene_pos = pd.Series(np.arange(adata.n_vars), index=adata.var_names)
        node_gene_index = gene_pos.reindex(nodes).fillna(-1).astype(np.int64).to_numpy()
        dx = delta_x(X, partner, node_gene_index, config.target_sum, out=scratch)

    with _timed(timings, "counterfactual"):
        qc_fail = flags["total_qc"].to_numpy().astype(bool)
        cf_groups = labels if batches is None else np.char.add(np.char.add(labels.astype(str), "|"), batches)
        cf_index = counterfactual_indices(cf_groups, split, qc_fail, config.counterfactual_cells, config.seed)
        cf_medians, cf_row = counterfactual_table(X, cf_index, progress=progress, out=scratch)
    record["counterfactual"] = {
        "cells_with_cf": int((cf_row >= 0).sum()),
        "distinct": int(cf_medians.shape[0]),
    }

    with _timed(timings, "normalisation"):
        stats = normalisation_stats(X, train)

    obs = pd.DataFrame(index=adata.obs_names)
    obs[PERTURBATION_KEY] = pd.Categorical(labels)
    obs["split"] = pd.Categorical(split, categories=["train", "val", "test"])
    if batches is not None:
        obs[BATCH_KEY] = pd.Categorical(batches)
    obs["partner"] = partner.astype(np.int64)
    obs["library_size"] = library_size(X).astype(np.float32)
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
    artifact = ad.AnnData(X=None if on_disk(X) else X, obs=obs, var=var)
    artifact.obsm["D"] = dosage
    if isinstance(dx, np.ndarray):  # else written to the scratch file, for write_artifact's delta_x
        artifact.obsm["delta_x"] = dx
    artifact.obsm["cf_index"] = cf_index
    if adata.uns.get(TARGET_IDS_KEY):
        artifact.uns[TARGET_IDS_KEY] = dict(adata.uns[TARGET_IDS_KEY])
    artifact.uns.update(
        nodes=list(nodes),
        n_perturbed=int(n_perturbed),
        node_measured=measured_nodes.astype(bool),
        batches=sorted(set(batches.tolist())) if batches is not None else [],
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
