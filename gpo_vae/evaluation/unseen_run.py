"""Scoring a trained model on the unseen labels of its test split (:func:`evaluate_unseen`).

The labels, dosages, baselines and metrics are :mod:`gpo_vae.evaluation.unseen`; this module
generates the models' predictions for them and assembles the tables the evaluation writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from gpo_vae.data.labels import label_genes
from gpo_vae.evaluation.baselines import mean_baseline_ate, split_half_ate
from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.evaluation.generation import GeneratedSummary, generate_and_summarise
from gpo_vae.evaluation.linear_baseline import LINEAR_EMBEDDING, linear_embedding_prediction
from gpo_vae.evaluation.prediction import EvaluationData
from gpo_vae.evaluation.scaled import (
    NO_EFFECT,
    PAIRS,
    SINGLES,
    TRIVIAL_BASELINES,
    corrected_replicate,
    scaled_table,
)
from gpo_vae.evaluation.unseen import (
    ADDITIVE,
    CELLS_FILE,
    COMBINATION,
    GRN_NEIGHBOURS,
    MATCHING_MEAN,
    METRICS_FILE,
    NEIGHBOURS_FILE,
    NETWORK_NEIGHBOURS,
    NONCONTROL,
    OWN_NODE_SUFFIX,
    REGULATOR_REGRESSION,
    SCATTER_FILE,
    SINGLE,
    UNSEEN_MODES,
    additive_prediction,
    combination_metrics,
    identity_metrics,
    interaction_scatter,
    interaction_standard_errors,
    matching_mean_prediction,
    neighbour_dosages,
    neighbour_weights,
    network_neighbours,
    regulator_weights,
    single_metrics,
    typical_own_change,
    unseen_labels,
    unseen_summary,
    unseen_table,
    weighted_profile,
)
from gpo_vae.module import GPOVAE


@dataclass(frozen=True)
class UnseenResult:
    """What :func:`evaluate_unseen` computed (the files the evaluation writes).

    Attributes
    ----------
    metrics
        ``unseen_metrics.csv`` (:func:`unseen_table`).
    scatter
        ``unseen_interaction_scatter.csv``: the evaluated model's predicted vs observed
        interaction of every pair on its top DE genes; None without pairs.
    neighbours
        ``unseen_neighbours.csv``: ``method``, ``mode``, ``gene``, ``neighbour``, ``weight``: the
        seen genes each unseen gene is dosed through (the largest weights); None without unseen genes.
    cells
        The evaluated model's generated cells of every unseen label and of the controls
        (``obs["gene"]``), for ``unseen_cells.h5ad``; None when ``unseen_cells`` is 0.
    scaled
        The scaled scores of every method on each unseen task
        (:func:`gpo_vae.evaluation.scaled.scaled_table`).
    """

    metrics: pd.DataFrame
    scatter: pd.DataFrame | None
    neighbours: pd.DataFrame | None
    cells: ad.AnnData | None
    scaled: pd.DataFrame


def _grn_scores(model: GPOVAE) -> np.ndarray:
    """Node-to-node link strength: the mask probabilities, or SAMS-VAE's node similarity."""
    from gpo_vae.evaluation.grn_benchmark import sams_vae_node_scores

    if model.config.latent_mask:
        return sams_vae_node_scores(model)
    return model.mask_probabilities().double().cpu().numpy()


def evaluate_unseen(
    data: EvaluationData,
    models: Mapping[str, tuple[GPOVAE, dict]],
    main_method: str,
    generated: Mapping[str, GeneratedSummary],
    observed: pd.DataFrame,
    shared_shift: pd.Series,
    config: EvaluationConfig,
    network_adjacency: np.ndarray | None = None,
    progress: bool = False,
) -> UnseenResult | None:
    """Score every method on the unseen labels of the test split; None when there are none.

    ``generated`` are the models' summaries of every test label (multi-hot dosages);
    ``observed`` the held-out test ATE (all cells), ``shared_shift`` the non-control mean's
    ATE. Only the labels whose dosage the neighbours change (and, for ``main_method``, every
    unseen label, for its cells) are generated again.
    """
    cells = data.cells
    perturbations = list(observed.index)
    unseen = unseen_labels(data.labels, cells.split, perturbations, data.control_label)
    if not unseen:
        return None
    nodes = list(cells.nodes)
    node_index = {str(node): i for i, node in enumerate(nodes)}
    train_labels = set(data.labels[cells.rows("train")].tolist())
    seen = [n for n in nodes[: cells.n_perturbed] if n in train_labels and n not in unseen.unseen_genes]
    single_ate = mean_baseline_ate(
        cells.counts,
        data.labels,
        cells.split,
        data.control_label,
        seen,
        target_sum=data.target_sum,
        genes=data.genes,
        batches=data.batches,
    )
    own_change = typical_own_change(single_ate)
    regulators = {
        g: regulator_weights(single_ate, g, own_change, config.unseen_regulator_z)
        for g in sorted(unseen.unseen_genes)
    }
    pairs, singles = unseen.combinations, unseen.singles
    labels = [*pairs, *singles]
    changed = [p for p in labels if set(label_genes(p)) & unseen.unseen_genes]
    configured = config.unseen_single_prediction
    frames: dict[tuple[str, str], pd.DataFrame] = {}
    predictions: dict[str, pd.DataFrame] = {}
    weight_rows: list[dict] = []
    kept = None
    scores_of: dict[str, np.ndarray] = {}
    for method, (model, info) in models.items():
        scores = scores_of[method] = _grn_scores(model)
        replacements = {
            "regulators": regulators,
            "neighbours": {
                g: neighbour_weights(scores, nodes, g, seen, config.unseen_neighbours)
                for g in sorted(unseen.unseen_genes)
            },
        }
        for mode, weights in replacements.items():
            weight_rows += _weight_rows(method, mode, weights)
        for mode in sorted(UNSEEN_MODES, key=lambda m: m != configured):
            name = method if mode == configured else f"{method}_{mode}"
            keep = method == main_method and mode == configured and config.unseen_cells > 0
            wanted = labels if keep else changed
            ate = generated[method].ate()
            if wanted:
                summary = generate_and_summarise(
                    model,
                    info["node_names"],
                    wanted,
                    data.genes,
                    config,
                    data.control_label,
                    keep_cells=min(config.unseen_cells, config.n_generated_cells) if keep else 0,
                    progress=progress,
                    batch_weights=data.test_batch_shares(wanted),
                    control_counts=data.training_controls,
                    dosages=neighbour_dosages(wanted, node_index, model.n_nodes, replacements[mode], seen),
                    target_sum=data.target_sum,
                )
                ate = pd.concat([ate.drop(index=wanted, errors="ignore"), summary.ate()])
                if keep:
                    kept = summary.kept
            if mode == configured or changed:
                predictions[name] = ate
        if changed:
            predictions[f"{method}{OWN_NODE_SUFFIX}"] = generated[method].ate()
    main_scores = scores_of[main_method]
    fallback = shared_shift
    additive = additive_prediction(pairs, single_ate) if pairs else None
    halves = _replicate_halves(data, labels, config.seed)
    scaled: list[pd.DataFrame] = []
    if pairs:
        errors = interaction_standard_errors(
            cells.counts, data.labels, cells.split, pairs, data.control_label, seen, data.target_sum
        )
        baselines = {
            ADDITIVE: additive,
            MATCHING_MEAN: matching_mean_prediction(pairs, single_ate),
            NONCONTROL: _repeat(fallback, pairs),
            NO_EFFECT: _repeat(fallback * 0.0, pairs),
            LINEAR_EMBEDDING: linear_embedding_prediction(pairs, single_ate),
        }

        def score_pairs(truth: pd.DataFrame, prediction: pd.DataFrame) -> pd.DataFrame:
            metrics = combination_metrics(
                truth, prediction, additive, errors, config.top_de, config.interaction_z
            )
            return metrics.join(identity_metrics(truth, prediction, shared_shift))

        for method, prediction in {**predictions, **baselines}.items():
            frames[COMBINATION, method] = score_pairs(observed.loc[pairs], prediction)
        replicate = corrected_replicate(score_pairs(halves[0].loc[pairs], halves[1].loc[pairs]))
        scaled.append(_scaled(PAIRS, frames, COMBINATION, replicate, list(predictions), config.seed))
    if singles:
        baselines = {
            NONCONTROL: _repeat(fallback, singles),
            NO_EFFECT: _repeat(fallback * 0.0, singles),
            LINEAR_EMBEDDING: linear_embedding_prediction(singles, single_ate),
            REGULATOR_REGRESSION: _weighted_means(singles, single_ate, fallback, regulators.get),
            GRN_NEIGHBOURS: _weighted_means(
                singles,
                single_ate,
                fallback,
                lambda g: neighbour_weights(main_scores, nodes, g, seen, config.unseen_neighbours),
            ),
        }
        if network_adjacency is not None:
            baselines[NETWORK_NEIGHBOURS] = _weighted_means(
                singles, single_ate, fallback, lambda g: network_neighbours(network_adjacency, nodes, g, seen)
            )
        for method, prediction in {**predictions, **baselines}.items():
            frames[SINGLE, method] = single_metrics(
                observed.loc[singles], prediction, shared_shift, config.top_de
            )
        replicate = corrected_replicate(
            single_metrics(halves[0].loc[singles], halves[1].loc[singles], shared_shift, config.top_de)
        )
        scaled.append(_scaled(SINGLES, frames, SINGLE, replicate, list(predictions), config.seed))
    scatter = None
    if pairs:
        scatter = interaction_scatter(
            observed.loc[pairs],
            predictions[main_method],
            additive,
            config.top_de,
        )
    table = unseen_table(dict(sorted(frames.items(), key=lambda item: item[0][0] != COMBINATION)))
    return UnseenResult(
        metrics=table,
        scatter=scatter,
        neighbours=pd.DataFrame(weight_rows) if weight_rows else None,
        cells=kept,
        scaled=pd.concat(scaled, ignore_index=True),
    )


def _replicate_halves(
    data: EvaluationData, labels: Sequence[str], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two random halves of the labels' held-out test cells (each against half the test controls)."""
    return split_half_ate(
        data.cells.counts,
        data.labels,
        data.cells.split,
        data.control_label,
        list(labels),
        target_sum=data.target_sum,
        genes=data.genes,
        seed=seed,
        batches=data.batches,
    )


def _scaled(
    task: str,
    frames: Mapping[tuple[str, str], pd.DataFrame],
    kind: str,
    replicate: pd.DataFrame,
    models: Sequence[str],
    seed: int,
) -> pd.DataFrame:
    per_label = {method: frame for (k, method), frame in frames.items() if k == kind}
    return scaled_table(task, per_label, replicate, TRIVIAL_BASELINES[task], models, seed=seed)


#: Weights per unseen gene and mode kept in ``unseen_neighbours.csv`` (largest ``|weight|`` first).
LISTED_WEIGHTS = 10


def _weight_rows(method: str, mode: str, weights: Mapping[str, pd.Series]) -> list[dict]:
    rows = []
    for gene, series in weights.items():
        if series.empty:
            rows.append(
                {
                    "method": method,
                    "mode": mode,
                    "gene": gene,
                    "neighbour": "(every seen gene)",
                    "weight": np.nan,
                }
            )
            continue
        top = series.reindex(series.abs().sort_values(ascending=False, kind="stable").index[:LISTED_WEIGHTS])
        rows += [
            {"method": method, "mode": mode, "gene": gene, "neighbour": b, "weight": float(w)}
            for b, w in top.items()
        ]
    return rows


def _repeat(row: pd.Series, labels: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(
        np.repeat(row.to_numpy()[None, :], len(labels), axis=0),
        index=pd.Index(list(labels), name="perturbation"),
        columns=row.index,
    )


def _weighted_means(
    singles: Sequence[str], single_ate: pd.DataFrame, fallback: pd.Series, weights_of
) -> pd.DataFrame:
    rows = [weighted_profile(weights_of(g), single_ate, fallback) for g in singles]
    return pd.DataFrame(rows, index=pd.Index(list(singles), name="perturbation"), columns=single_ate.columns)


#: Headline numbers of the unseen section: (kind, metric) → run.json key stem.
UNSEEN_HEADLINES = {
    (COMBINATION, "interaction_pearson"): "unseen_pairs_interaction_pearson",
    (COMBINATION, "pearson"): "unseen_pairs_pearson",
    (COMBINATION, "interaction_sign_right"): "unseen_pairs_sign_right",
    (SINGLE, "pearson_specific"): "unseen_singles_pearson_specific",
    (SINGLE, "rank_normalised"): "unseen_singles_rank_normalised",
}


def write_unseen(
    data: EvaluationData,
    models: Mapping[str, tuple[GPOVAE, dict]],
    main: str,
    summaries: Mapping[str, GeneratedSummary],
    observed_ate: pd.DataFrame,
    shared_shift: pd.Series,
    config: EvaluationConfig,
    adjacency: np.ndarray | None,
    out: Path,
    progress: bool,
) -> tuple[dict[str, float], pd.DataFrame | None]:
    """Write the unseen-label tables and cells into ``out`` when the test split has unseen labels
    (:func:`evaluate_unseen`); return their headline numbers (``run.json``) and scaled scores."""
    result = evaluate_unseen(
        data, models, main, summaries, observed_ate, shared_shift, config, adjacency, progress
    )
    if result is None:
        return {}, None
    result.metrics.to_csv(out / METRICS_FILE, index=False)
    if result.scatter is not None:
        result.scatter.to_csv(out / SCATTER_FILE, index=False)
    if result.neighbours is not None:
        result.neighbours.to_csv(out / NEIGHBOURS_FILE, index=False)
    if result.cells is not None:
        result.cells.write_h5ad(out / CELLS_FILE)
    summary = unseen_summary(result.metrics).set_index(["kind", "method"])
    headline: dict[str, float] = {}
    for (kind, method), row in summary.iterrows():
        for (wanted, metric), stem in UNSEEN_HEADLINES.items():
            if kind == wanted and metric in row.index:
                headline[f"{method}_{stem}"] = float(row[metric])
    return headline, result.scaled


__all__ = ["UNSEEN_HEADLINES", "UnseenResult", "evaluate_unseen", "write_unseen"]
