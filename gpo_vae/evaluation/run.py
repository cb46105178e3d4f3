"""Evaluate a trained run into the evaluation directory the report is built from.

:func:`evaluate_run` writes exactly the files of the :mod:`gpo_vae.report` contract
(``prediction_metrics.csv``, ``ate_scatter.csv``, ``qc_ratio.csv``,
``summary_stats_agreement.csv`` and ``summary_stats_points.csv`` when summary statistics are
given, ``grn_mask.csv``, ``grn_nodes.csv``, ``grn_edges.csv``, ``grn_statistical.csv``,
``grn_reference.csv`` and ``grn_pr_curves.csv`` when a reference or true network is given,
``grn_ranking.csv`` (every GRN method at the model's edge count, :mod:`gpo_vae.grn.ranking`),
``unseen_metrics.csv``, ``unseen_interaction_scatter.csv``, ``unseen_neighbours.csv`` and
``unseen_cells.h5ad`` when the split holds labels no training cell carries, ``scaled_scores.csv``
(:mod:`gpo_vae.evaluation.scaled`), ``predictions.h5ad``
and ``real_test.h5ad`` for cell-eval (:mod:`gpo_vae.evaluation.cell_eval`), ``grn_network.tsv`` and
``grn.graphml`` (:mod:`gpo_vae.grn.export`), ``run.json``), then
``report.html``, then a ``.complete`` marker; all in a temporary sibling
directory renamed into place, so a reader never sees a half-written evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpo_vae.config import to_dict
from gpo_vae.data.gene_ids import TARGET_IDS_KEY, gene_id_lookup
from gpo_vae.data.summary_stats_io import read_summary_stats
from gpo_vae.evaluation import cell_eval, generation, scaled
from gpo_vae.evaluation import grn_benchmark as grn
from gpo_vae.evaluation import prediction as pred
from gpo_vae.evaluation.baselines import control_baseline_ate
from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.evaluation.observed import observed_tables
from gpo_vae.evaluation.unseen_run import write_unseen
from gpo_vae.grn.baselines import random_scores
from gpo_vae.grn.calibration import calibrated_threshold, mask_movement
from gpo_vae.grn.effects import training_effect_zscores
from gpo_vae.grn.export import write_network_files
from gpo_vae.grn.ranking import RANKING_FILE, matched_k_ranking, ranking_numbers
from gpo_vae.interrupt import check_stop
from gpo_vae.io import (
    disk_full_error,
    folder_swapped_in,
    provenance,
    recorded_path,
    write_json_atomic,
)
from gpo_vae.module import GPOVAE
from gpo_vae.preprocessing.artifact import (
    artifact_checksum,
    dataset_checksum,
    read_artifact,
    read_artifact_on_disk,
)
from gpo_vae.preprocessing.normalize import take_rows
from gpo_vae.report import REPORT_FILE, build_report
from gpo_vae.report.headline import headline_table
from gpo_vae.report.tables import SCREEN_FILE, screen_tables
from gpo_vae.runtime import cpu_threads, resolve_device
from gpo_vae.training.data import CountsPlace, counts_place
from gpo_vae.training.train import load_trained_model

logger = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete"
RUN_FILE = "run.json"


class _Stages:
    """Wall time of each named stage, logged as it ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        check_stop(f"evaluation (before {name})")
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)
        logger.info("evaluation: %s took %.1f s", name, self.seconds[name])


def _load_run(run_dir: str | Path, device: str, sha: str, data: pred.EvaluationData) -> tuple[GPOVAE, dict]:
    model, info = load_trained_model(run_dir, device)
    if info["artifact_sha256"] != sha:
        raise ValueError(
            f"{run_dir} was trained on another artifact (checksum {info['artifact_sha256'][:12]}…)"
        )
    if list(info["node_names"]) != data.cells.nodes or list(info["gene_names"]) != data.cells.genes:
        raise ValueError(f"{run_dir}: the model's nodes or genes differ from the artifact's")
    return model, info


def _write_csv(frame: pd.DataFrame, directory: Path, name: str, index: bool = False) -> None:
    frame.to_csv(directory / name, index=index)


def _json_number(value: Any) -> int | float | None:
    """An int stays an int; NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, int | np.integer):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


#: Entries of an artifact's record that describe the screen (copied to ``screen.json``).
def _prediction(
    data: pred.EvaluationData,
    models: dict[str, tuple[GPOVAE, dict]],
    config: EvaluationConfig,
    reported: pd.DataFrame | None,
    out: Path,
    stages: _Stages,
    progress: bool,
    networks: Sequence[str | Path],
    exported: dict[str, Any],
) -> dict[str, float]:
    """Write the prediction tables (and the unseen ones) and the cell-eval files; return the
    headline numbers (``exported`` gets what the cell-eval files hold)."""
    perturbations = data.perturbations()
    if not perturbations:
        raise ValueError("no perturbed node has test cells: nothing to evaluate")
    metrics: dict[str, float] = {}
    with stages("test_iwelbo"):
        for method, (model, _) in models.items():
            key = "test_iwelbo" if method == grn.MODEL else f"{method}_test_iwelbo"
            metrics[key] = pred.test_iwelbo(
                model, data.cells, config.iwelbo_particles, config.iwelbo_batch_size, config.seed
            )
    with stages("data_ate_and_baselines"):
        observed = observed_tables(data, perturbations, config)
        references, mean_baseline = observed.references, observed.mean_baselines
    predictions: dict[str, dict[str, pd.DataFrame]] = {}
    summaries: dict[str, generation.GeneratedSummary] = {}
    export = None
    if config.cell_eval_cells != 0:
        export = cell_eval.PredictionExport(
            data, perturbations, config.cell_eval_cells, config.n_generated_cells, out
        )
    try:
        for method, (model, info) in models.items():
            own = method == grn.MODEL  # QC ratio and summary statistics describe the evaluated model
            with stages(f"generation_{method}"):
                summaries[method] = generation.generate_and_summarise(
                    model,
                    info["node_names"],
                    perturbations,
                    data.genes,
                    config,
                    data.control_label,
                    qc_thresholds=data.qc_thresholds if own else None,
                    keep_cells=config.summary_stats_cells if own and reported is not None else 0,
                    progress=progress,
                    batch_weights=data.test_batch_shares(perturbations),
                    control_counts=data.training_controls,
                    target_sum=data.target_sum,
                    export=export.add_generated if own and export is not None else None,
                )
            ate = summaries[method].ate()
            predictions[method] = {subset: ate for subset in pred.SUBSETS}
    except BaseException:
        if export is not None:
            export.abort()
        raise
    generated = summaries[grn.MODEL]
    if export is not None:
        with stages("cell_eval_files"):
            exported["cell_eval"] = export.finish()
    predictions["mean_baseline"] = mean_baseline
    predictions["noncontrol_mean"] = observed.noncontrol_means
    zero = control_baseline_ate(perturbations, data.genes)
    predictions["control_baseline"] = {subset: zero for subset in pred.SUBSETS}
    with stages("prediction_metrics"):
        table = pred.prediction_table(
            references, predictions, observed.ceilings, config, observed.shared_shifts()
        )
        _write_csv(table, out, "prediction_metrics.csv")
        scatter = pred.ate_scatter_table(
            references[pred.HELDOUT, pred.ALL_CELLS],
            predictions[grn.MODEL][pred.ALL_CELLS],
            mean_baseline[pred.ALL_CELLS],
            config.n_scatter,
        )
        _write_csv(scatter, out, "ate_scatter.csv")
        held_out = references[pred.HELDOUT, pred.ALL_CELLS]
        on_target = pred.on_target_table(
            held_out, {method: frames[pred.ALL_CELLS] for method, frames in predictions.items()}
        )
        _write_csv(on_target, out, pred.ON_TARGET_FILE)
        for method in (grn.MODEL, "mean_baseline"):
            metrics.update(pred.on_target_summary(on_target, method))
        if generated.qc_pass_ratio is not None:
            _write_csv(pred.qc_ratio_table(generated.qc_pass_ratio, data), out, "qc_ratio.csv")
    if reported is not None and generated.kept is not None:
        with stages("summary_statistics"):
            agreement, points = pred.summary_stats_tables(
                generated.kept, reported, data.control_label, config.seed, progress
            )
            _write_csv(agreement, out, "summary_stats_agreement.csv")
            _write_csv(points, out, "summary_stats_points.csv")
    with stages("unseen"):
        adjacency = None
        if networks:
            found = grn.reference_networks(networks, data.cells.nodes, data.cells.n_perturbed)
            adjacency = np.any([matrix != 0 for matrix, _ in found.values()], axis=0)
        unseen_numbers, unseen_scaled = write_unseen(
            data,
            models,
            grn.MODEL,
            summaries,
            references[pred.HELDOUT, pred.ALL_CELLS],
            observed.shared_shifts()[pred.ALL_CELLS],
            config,
            adjacency,
            out,
            progress,
        )
        metrics.update(unseen_numbers)
    held = table[(table["reference"] == pred.HELDOUT) & (table["subset"] == pred.ALL_CELLS)]
    seen_scaled = scaled.heldout_cells_scaled(held, config.split_half_corrected, config.seed)
    scores = pd.concat([unseen_scaled, seen_scaled], ignore_index=True)
    _write_csv(scores, out, scaled.SCALED_FILE)
    metrics.update(scaled.headline_numbers(scores))
    headline = headline_table(table).set_index("method")
    for method in [*models, "mean_baseline", "noncontrol_mean"]:
        metrics[f"{method}_mean_pearson"] = float(headline.loc[method, "mean_pearson"])
        metrics[f"{method}_mean_pearson_specific"] = float(headline.loc[method, "mean_pearson_specific"])
    return metrics


def _grn(
    data: pred.EvaluationData,
    models: dict[str, tuple[GPOVAE, dict]],
    config: EvaluationConfig,
    networks: Sequence[str | Path],
    true_network: str | Path | None,
    out: Path,
    stages: _Stages,
) -> dict[str, float]:
    """Write the GRN tables; return the headline numbers."""
    cells = data.cells
    nodes = cells.nodes
    model = models[grn.MODEL][0]
    probabilities = model.mask_probabilities().double().cpu().numpy()
    signed_z = training_effect_zscores(cells)
    initial = grn.initial_mask_probabilities(model, signed_z)
    # a mask that started uniform at the threshold keeps its top share of pairs (grn_density)
    configured = config.grn_threshold
    config = config.replace(
        grn_threshold=calibrated_threshold(
            probabilities, initial, configured, config.grn_density, cells.n_perturbed
        )
    )
    mask, kinds, edges = grn.mask_tables(probabilities, nodes, cells.n_perturbed, config.grn_threshold)
    _write_csv(mask, out, "grn_mask.csv", index=True)
    _write_csv(kinds, out, "grn_nodes.csv")
    _write_csv(edges, out, "grn_edges.csv")
    write_network_files(edges, kinds, out, method=grn.network_method(models[grn.MODEL][1], config))
    references = grn.reference_networks(networks, nodes, cells.n_perturbed, true_network)
    scores = {grn.MODEL: probabilities}
    if grn.SAMS_VAE in models:
        scores[grn.SAMS_VAE] = grn.sams_vae_node_scores(models[grn.SAMS_VAE][0])
    scores.update(
        grn.baseline_scores(take_rows(cells.delta_x, cells.rows("train")), signed_z, cells.n_perturbed)
    )
    scores[grn.MODEL_INIT] = initial
    scores["random"] = random_scores(len(nodes), config.seed)
    scores.update(grn.known_network_scores(references))
    graphs = grn.method_graphs(scores, config.grn_threshold)
    with stages("grn_statistical"):
        evaluator = grn.held_out_evaluator(data, config.p_value)
        statistical = grn.statistical_table(evaluator, scores, graphs, nodes, config)
        _write_csv(statistical, out, "grn_statistical.csv")
    metrics: dict[str, float] = {
        "grn_edges": int(graphs[grn.MODEL].sum()),
        **mask_movement(probabilities, initial, config.grn_threshold),
        "grn_threshold_calibrated": int(config.grn_threshold != configured),
    }
    reference = None
    if references:
        with stages("grn_reference"):
            reference, curves = grn.reference_tables(scores, graphs, references)
            _write_csv(reference, out, "grn_reference.csv")
            _write_csv(curves, out, "grn_pr_curves.csv")
        truth = reference[(reference["network"] == grn.TRUE_NETWORK) & (reference["method"] == grn.MODEL)]
        if len(truth):
            metrics["true_network_auroc"] = float(truth["auroc"].iloc[0])
            metrics["true_network_auprc"] = float(truth["auprc"].iloc[0])
    metrics.update(grn.training_gain(statistical, reference, metrics["grn_edges"]))
    ranking = matched_k_ranking(statistical, reference, metrics["grn_edges"])
    _write_csv(ranking, out, RANKING_FILE)
    metrics.update(ranking_numbers(ranking))
    return metrics


def evaluate_run(
    artifact_dir: str | Path,
    run_dir: str | Path,
    config: EvaluationConfig,
    out_dir: str | Path,
    *,
    summary_stats: str | Path | None = None,
    summary_sheet: str | None = None,
    networks: Sequence[str | Path] = (),
    true_network: str | Path | None = None,
    sams_vae_run_dir: str | Path | None = None,
    dataset: str | None = None,
    progress: bool = True,
    counts: CountsPlace = "auto",
) -> Path:
    """Evaluate a finished training run and render its report (files: module docstring).

    Parameters
    ----------
    artifact_dir
        The preprocessed artifact the run was trained on (checked by checksum).
    run_dir
        A finished GPO-VAE run (:func:`gpo_vae.training.train.train_model`); a SAMS-VAE run
        evaluated on its own gets the prediction tables only (its mask is no graph).
    config
        Evaluation settings.
    out_dir
        The evaluation directory; an existing one is replaced.
    summary_stats, summary_sheet
        The dataset's reported summary statistics (file and sheet); without them no
        summary-statistics tables are written.
    networks
        Reference network files (:func:`gpo_vae.data.networks.read_network` formats).
    true_network
        The simulator's true GRN (an edge list), scored as ``true_network``.
    sams_vae_run_dir
        A SAMS-VAE run on the same artifact: compared in prediction and, by node similarity,
        in the GRN tables.
    dataset
        Name shown in the report.
    progress
        Progress bars over perturbations.
    counts
        Where the count matrix is read from: ``memory`` reads it whole; ``disk`` leaves it in
        the artifact and every stage reads the cells it needs a block at a time (memory no
        longer grows with the count matrix); ``auto`` keeps it in memory while it takes at most
        a quarter of the memory available. The tables are the same, number for number.

    Returns
    -------
    Path
        ``out_dir``, holding ``report.html`` and the ``.complete`` marker.
    """
    out_dir = Path(out_dir)
    stages = _Stages()
    started = time.perf_counter()
    with stages("load"):
        place = counts_place(artifact_dir) if counts == "auto" else counts
        if place == "disk":
            adata, on_disk = read_artifact_on_disk(artifact_dir)
        elif place == "memory":
            adata, on_disk = read_artifact(artifact_dir), None
        else:
            raise ValueError(f"counts must be 'auto', 'memory' or 'disk', got {counts!r}")
        sha = artifact_checksum(artifact_dir)
        data = pred.EvaluationData.from_anndata(adata, on_disk=on_disk)
        target_sum, target_sum_source = pred.resolve_library_setting(
            config.ate_target_sum, data, "ate_target_sum"
        )
        data = dataclasses.replace(data, target_sum=target_sum)
        library, library_source = pred.resolve_library_setting(
            config.generated_library_size, data, "generated_library_size"
        )
        asked = config  # run.json records the settings as given; generation reads the numbers
        n_genes = int(data.cells.n_genes)
        # a top-N beyond the screen's genes would label every table "top-5000" on 200 genes
        top_de = min(config.top_de, n_genes)
        jaccard_ks = tuple(dict.fromkeys(min(k, n_genes) for k in config.jaccard_ks))
        if top_de != config.top_de or jaccard_ks != tuple(config.jaccard_ks):
            logger.warning(
                "evaluation: top_de %s and jaccard_ks %s capped at the screen's %d genes",
                config.top_de,
                list(config.jaccard_ks),
                n_genes,
            )
        config = config.replace(generated_library_size=library, top_de=top_de, jaccard_ks=jaccard_ks)
        reported = None
        if summary_stats is not None:
            # names that are bare Ensembl ids (Adamson) are mapped to symbols, as preprocessing does
            id_map = gene_id_lookup(adata.var, adata.var_names, adata.uns.get(TARGET_IDS_KEY))
            reported = read_summary_stats(summary_stats, summary_sheet, gene_ids_to_symbols=id_map)
        screen, perturbation_table = screen_tables(json.loads(adata.uns["record"]))
        del adata
    device = resolve_device(config.device)
    try:
        with folder_swapped_in(out_dir) as tmp:
            write_json_atomic(screen, tmp / SCREEN_FILE)
            if perturbation_table is not None:
                _write_csv(perturbation_table, tmp, "perturbation_table.csv")
            with cpu_threads(config.cpu_threads):
                models = {grn.MODEL: _load_run(run_dir, device, sha, data)}
                if sams_vae_run_dir is not None:
                    models[grn.SAMS_VAE] = _load_run(sams_vae_run_dir, device, sha, data)
                    if not models[grn.SAMS_VAE][0].config.latent_mask:
                        raise ValueError(
                            f"{sams_vae_run_dir} is not a SAMS-VAE run (its mask is not latent-sized)"
                        )
                exported: dict[str, Any] = {}
                metrics = _prediction(
                    data, models, config, reported, tmp, stages, progress, networks, exported
                )
                if models[grn.MODEL][0].config.latent_mask:
                    # a SAMS-VAE evaluated on its own has no graph: its GRN sections say "not computed"
                    logger.info("evaluation: %s has a latent-sized mask; no GRN tables", run_dir)
                else:
                    metrics.update(_grn(data, models, config, networks, true_network, tmp, stages))
            info = models[grn.MODEL][1]
            metrics["best_val_loss"] = float(info["best_val_loss"])
            test = data.cells.rows("test")
            record = {
                **provenance(
                    {
                        "evaluation": to_dict(asked),
                        "model": info["model_config"],
                        "training": info["training_config"],
                    }
                ),
                "dataset": dataset or "unknown",
                "seed": config.seed,
                "device": device,
                "data": {
                    "n_cells": int(data.cells.counts.shape[0]),
                    "n_test_cells": int(test.size),
                    "n_genes": int(data.cells.n_genes),
                    "n_perturbations": len(data.perturbations()),
                    "n_nodes": int(data.cells.n_nodes),
                    "n_perturbed_nodes": int(data.cells.n_perturbed),
                    "ate_target_sum": target_sum,
                    "ate_target_sum_from": target_sum_source,
                    "generated_library_size": library,
                    "generated_library_size_from": library_source,
                    "median_training_library": data.median_training_library(),
                    "top_de": top_de,
                    "jaccard_ks": list(jaccard_ks),
                    **exported,
                },
                "metrics": {key: _json_number(value) for key, value in metrics.items()},
                "inputs": {
                    "artifact": recorded_path(artifact_dir, out_dir),
                    "artifact_sha256": sha,
                    "dataset_sha256": dataset_checksum(artifact_dir),
                    "run_dir": recorded_path(run_dir, out_dir),
                    "sams_vae_run_dir": recorded_path(sams_vae_run_dir, out_dir)
                    if sams_vae_run_dir
                    else None,
                    "summary_stats": str(summary_stats) if summary_stats else None,
                    "summary_sheet": summary_sheet,
                    "networks": [str(path) for path in networks],
                    "true_network": str(true_network) if true_network else None,
                },
                "timings": {**stages.seconds, "total": round(time.perf_counter() - started, 3)},
            }
            write_json_atomic(record, tmp / RUN_FILE)
            build_report(tmp)
            (tmp / COMPLETE_MARKER).write_text(sha + "\n")
    except OSError as err:
        full = disk_full_error(err, out_dir)
        if full is not None:
            raise full from None
        raise
    logger.info("evaluation written to %s (%s)", out_dir, out_dir / REPORT_FILE)
    return out_dir


__all__ = ["COMPLETE_MARKER", "RUN_FILE", "evaluate_run", "headline_table"]
