"""GRN benchmarking of a run (design §8): the learned mask, CausalBench statistics, references.

Methods are T × T score matrices over the treatment nodes:

- ``model``: the mask probabilities; its graph is ``p > grn_threshold``.
- ``sams_vae``: a SAMS-VAE mask is T × L (node → latent dimension), not a graph. Its node
  scores are the absolute cosine similarity of two nodes' expected latent effects,
  ``p ⊙ E[E | M = 1[p > 0.5]]`` (mask probabilities times the guide's mean embedding): a
  similarity, symmetric, so it cannot orient an edge; nodes never dosed in training score 0.
- ``correlation``: ``|corr|`` of the ΔX columns over the TRAINING cells (symmetric).
- ``effect_z``: |standardised mean effect| of each perturbation on each node gene over the
  training cells (:func:`gpo_vae.grn.effects.effect_zscores`; directed, total effects, not
  direct ones). ``gpo_vae_plus`` starts its mask from it: the model must beat it to have
  learnt anything about the graph.
- ``deconvolution``: network deconvolution of |effect z| (Feizi et al. 2013), the direct part of
  the total effects (:func:`gpo_vae.grn.baselines.deconvolution_scores`).
- ``sparse_inverse``: an inspre-style sparse approximate inverse of the signed effect z-scores
  (Brown et al. 2025; :func:`gpo_vae.grn.baselines.sparse_inverse_scores`).
- ``network:<name>``: each known network given with ``--networks``, scored as a predicted graph
  (the prior-knowledge baseline; not scored against itself or a union that holds it).
- ``random``: seeded uniform scores (chance level).

A method without probabilities is turned into a graph by its top-K edges with K = the model's
number of ``p > threshold`` edges, so every method's "thresholded" graph has the model's size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm

from gpo_vae.data.networks import network_adjacency, read_network, union_networks
from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.evaluation.prediction import EvaluationData
from gpo_vae.grn.baselines import (
    correlation_scores,
    deconvolution_scores,
    network_scores,
    sparse_inverse_scores,
)
from gpo_vae.grn.curves import edges_from_probabilities, rank_edges
from gpo_vae.grn.effects import effect_prior_logits, effect_statistic, prior_logit
from gpo_vae.grn.ranking import MODEL, WIDE_K, top_k_precision
from gpo_vae.grn.ranking import SAMS_VAE as SAMS_VAE  # re-exported: grn.SAMS_VAE in the evaluation
from gpo_vae.grn.statistical import StatisticalEvaluator, causalbench_expression
from gpo_vae.module import GPOVAE
from gpo_vae.preprocessing.normalize import take_rows

#: The evaluated model's mask as it was before training (what training added is model − this).
MODEL_INIT = "model_init"
UNION, TRUE_NETWORK = "union", "true_network"
#: Prefix of a known network scored as a method (``network:<name>``).
KNOWN_PREFIX = "network:"
#: Points kept per precision-recall curve (the report draws at most ~2,000).
MAX_CURVE_POINTS = 2000
#: Value columns of :func:`reference_agreement`, in ``grn_reference.csv`` order.
REFERENCE_COLUMNS = (
    "precision",
    "recall",
    "auprc",
    "auroc",
    "n_positive",
    "positive_rate",
    "n_predicted",
    "true_positives",
    "n_pairs",
    f"precision_at_{WIDE_K}",
    "reason",
)


def sams_vae_node_scores(model: GPOVAE) -> np.ndarray:
    """``|cos|`` similarity of the SAMS-VAE nodes' expected latent effects (T × T, symmetric).

    Nodes without training cells (the DEG nodes, never dosed) and nodes whose expected effect is
    zero have similarity 0 with every node.
    """
    if not model.config.latent_mask:
        raise ValueError("sams_vae_node_scores needs a latent-sized (SAMS-VAE) mask")
    device = model.guide.mask_logits.device
    with torch.no_grad():
        mode = model.guide.plated_mode(torch.arange(model.n_nodes, device=device))
        effect = (model.mask_probabilities() * mode.embedding_loc[0]).double().cpu().numpy()
    # a node without training cells (a DEG node) has an untrained embedding, not an effect
    effect[model.node_weight.cpu().numpy() == 0] = 0.0
    norms = np.linalg.norm(effect, axis=1, keepdims=True)
    unit = np.divide(effect, norms, out=np.zeros_like(effect), where=norms > 0)
    return np.clip(np.abs(unit @ unit.T), 0.0, 1.0)


def mask_tables(
    probabilities: np.ndarray, nodes: Sequence[str], n_perturbed: int, threshold: float
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``grn_mask.csv`` (index = sources, the diagonal empty), ``grn_nodes.csv`` and
    ``grn_edges.csv`` (p > threshold, no self-loops)."""
    names = [str(node) for node in nodes]
    values = np.array(probabilities, dtype=np.float64)
    np.fill_diagonal(values, np.nan)  # a node's edge to itself is no regulation: never counted
    mask = pd.DataFrame(values, index=pd.Index(names, name="source"), columns=names)
    kinds = pd.DataFrame({"node": names, "kind": ["P"] * n_perturbed + ["A"] * (len(names) - n_perturbed)})
    return mask, kinds, edges_from_probabilities(probabilities, names, threshold)


def baseline_scores(delta_x_train: Any, effect_z: np.ndarray, n_perturbed: int) -> dict[str, np.ndarray]:
    """The cheap GRN baselines of every evaluation from the training cells' |ΔX| and signed
    effect z-scores: ``correlation``, ``effect_z``, ``deconvolution`` and ``sparse_inverse``."""
    magnitude = np.abs(effect_z)
    return {
        "correlation": correlation_scores(delta_x_train),
        "effect_z": magnitude,
        "deconvolution": deconvolution_scores(magnitude),
        "sparse_inverse": sparse_inverse_scores(effect_z, n_perturbed),
    }


def known_network_scores(references: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """``network:<name>`` → the known network's adjacency as scores (not the simulator's truth,
    nor the union, which is only the known networks together)."""
    return {
        f"{KNOWN_PREFIX}{name}": network_scores(adjacency)
        for name, (adjacency, _) in references.items()
        if name not in (TRUE_NETWORK, UNION)
    }


def scored_against_itself(method: str, network: str, networks: Sequence[str]) -> bool:
    """Whether ``method`` is a known network that ``network`` is (or, the union, holds)."""
    if not method.startswith(KNOWN_PREFIX):
        return False
    name = method[len(KNOWN_PREFIX) :]
    return network == name or (network == UNION and name in networks)


def network_method(info: Mapping[str, object], config: EvaluationConfig) -> str:
    """What ``grn_network.tsv`` holds: the trained model's mask, with its GRN settings."""
    model = info.get("model_config") or {}
    settings = ", ".join(
        f"{key} {model[key]}"
        for key in ("mask_init", "effect_statistic", "grn_target", "hop")
        if key in model
    )
    return f"trained GRN mask, probability > {config.grn_threshold:.3g}" + (
        f" ({settings})" if settings else ""
    )


def initial_mask_probabilities(model: GPOVAE, effect_z: np.ndarray | None) -> np.ndarray:
    """The mask probabilities the model started from (``mask_init``), rebuilt from the training
    cells' effect z-scores as :func:`gpo_vae.training.train.build_model` does (``effect_z`` may be
    None for a constant start, which needs none)."""
    config = model.config
    shape = tuple(model.guide.mask_logits.shape)
    if config.mask_init == "effects":
        if effect_z is None:
            raise ValueError("a mask started from effect statistics needs effect_z to be rebuilt")
        logits = effect_prior_logits(
            effect_statistic(effect_z, config.effect_statistic),
            model.n_perturbed,
            config.mask_init_density,
            prior_logit(config.mask_prior),
        )
    else:
        logits = np.full(shape, float(config.mask_init_logit))
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def training_gain(
    statistical: pd.DataFrame, reference: pd.DataFrame | None, n_edges: int
) -> dict[str, float]:
    """What training added to the graph: the model minus its initial mask, on the true network's
    AUPRC and on CausalBench's mean Wasserstein distance at the model's edge count."""
    out: dict[str, float] = {}
    at_k = statistical[statistical["k"].astype(str) == str(n_edges)].set_index("method")
    if {MODEL, MODEL_INIT} <= set(at_k.index):
        trained, start = at_k.loc[MODEL, "mean_wasserstein"], at_k.loc[MODEL_INIT, "mean_wasserstein"]
        out["model_init_mean_wasserstein"] = float(start)
        out["grn_gain_mean_wasserstein"] = float(trained - start)
    if reference is not None:
        truth = reference[reference["network"] == TRUE_NETWORK].set_index("method")
        if {MODEL, MODEL_INIT} <= set(truth.index):
            out["model_init_true_network_auprc"] = float(truth.loc[MODEL_INIT, "auprc"])
            out["grn_gain_true_network_auprc"] = float(
                truth.loc[MODEL, "auprc"] - truth.loc[MODEL_INIT, "auprc"]
            )
    return out


def top_k_graph(scores: np.ndarray, k: int) -> np.ndarray:
    """Bool adjacency of the ``k`` highest off-diagonal scores (ties in row-major order)."""
    n = scores.shape[0]
    graph = np.zeros((n, n), dtype=bool)
    graph.flat[rank_edges(scores, n)[:k]] = True
    return graph


def method_graphs(scores: Mapping[str, np.ndarray], threshold: float) -> dict[str, np.ndarray]:
    """The model's ``p > threshold`` graph, and every other method's top-K at the model's size."""
    model = np.asarray(scores[MODEL]) > threshold
    np.fill_diagonal(model, False)
    k = int(model.sum())
    return {method: model if method == MODEL else top_k_graph(s, k) for method, s in scores.items()}


def statistical_table(
    evaluator: StatisticalEvaluator,
    scores: Mapping[str, np.ndarray],
    graphs: Mapping[str, np.ndarray],
    nodes: Sequence[str],
    config: EvaluationConfig,
) -> pd.DataFrame:
    """``grn_statistical.csv``: CausalBench numbers of each method's graph and of its top-K.

    Rows per method: ``k = p>{threshold}`` (the graph of :func:`method_graphs`) and one per K of
    ``config.grn_ks`` plus the model's edge count (matched K).
    """
    label = f"p>{config.grn_threshold:.3g}"
    n_model = int(graphs[MODEL].sum())
    ks = sorted(set(config.grn_ks) | {n_model})
    options = {
        "max_path_length": config.max_path_length,
        "n_negatives": config.n_negatives,
        "seed": config.seed,
    }
    rows = []
    for method, matrix in scores.items():
        summary = evaluator.evaluate(graphs[method], nodes, **options).summary
        rows.append({"method": method, "k": label, **summary.to_dict()})
        at_k = evaluator.statistics_at_k(matrix, nodes, ks, **options).reset_index()
        at_k["k"] = at_k["k"].astype(str)
        rows.extend({"method": method, **row} for row in at_k.to_dict("records"))
    table = pd.DataFrame(rows)
    return table[["method", "k", *(c for c in table.columns if c not in ("method", "k"))]]


def held_out_evaluator(data: EvaluationData, p_value: float) -> StatisticalEvaluator:
    """CausalBench's statistical evaluator on the test cells of ``data``.

    Its pairs end on node genes, so only the measured node genes' columns are kept (the
    library sizes still count every gene): memory holds test cells × nodes, not × genes.
    """
    test = data.cells.rows("test")
    columns = np.sort(data.genes.get_indexer(pd.Index(data.cells.nodes)))
    columns = columns[columns >= 0]
    return StatisticalEvaluator(
        causalbench_expression(take_rows(data.cells.counts, test), columns),
        data.labels[test],
        data.genes[columns],
        data.control_label,
        p_value,
    )


def pair_masks(n_nodes: int, n_perturbed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs considered: both ends perturbed (biological networks), or a perturbed source
    (the true network: any node can be a target); never the diagonal."""
    perturbed = np.arange(n_nodes) < n_perturbed
    both = perturbed[:, None] & perturbed[None, :]
    source = np.repeat(perturbed[:, None], n_nodes, axis=1)
    for mask in (both, source):
        np.fill_diagonal(mask, False)
    return both, source


def reference_networks(
    paths: Sequence[str | Path],
    nodes: Sequence[str],
    n_perturbed: int,
    true_network: str | Path | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name → (adjacency among ``nodes``, pairs considered).

    Each reference file is named by its stem and restricted to pairs of perturbed nodes
    (design §8); with two or more files their ``union`` is added. The ``true_network`` (a
    simulator's edge list) is scored on every pair with a perturbed source.
    """
    names = [str(node) for node in nodes]
    both, source = pair_masks(len(names), n_perturbed)
    frames: dict[str, pd.DataFrame] = {}
    for path in paths:
        stem = Path(path).name.split(".")[0]
        name, suffix = stem, 2
        while name in frames or name in (UNION, TRUE_NETWORK):
            name, suffix = f"{stem}_{suffix}", suffix + 1
        frames[name] = read_network(path)
    out = {name: (network_adjacency(frame, names), both) for name, frame in frames.items()}
    if len(frames) > 1:
        out[UNION] = (network_adjacency(union_networks(frames.values()), names), both)
    if true_network is not None:
        out[TRUE_NETWORK] = (network_adjacency(read_network(true_network), names), source)
    return out


def _thinned(curve: pd.DataFrame, max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
    if len(curve) <= max_points:
        return curve
    keep = np.unique(np.linspace(0, len(curve) - 1, max_points).round().astype(int))
    return curve.iloc[keep]


def reference_agreement(
    scores: np.ndarray, predicted: np.ndarray, reference: np.ndarray, pairs: np.ndarray
) -> tuple[dict[str, object], pd.DataFrame]:
    """Precision/recall of ``predicted`` and AUPRC/AUROC/PR curve of ``scores`` on ``pairs``.

    As :func:`gpo_vae.grn.curves.edge_precision_recall` and
    :func:`~gpo_vae.grn.curves.ranking_metrics`, over an arbitrary bool mask of pairs (those
    restrict both ends of an edge to one node set, which cannot express "perturbed source").
    """
    truth, values, chosen = reference[pairs], np.asarray(scores, dtype=np.float64)[pairs], predicted[pairs]
    if not np.isfinite(values).all():
        raise ValueError("scores hold NaN or infinite values among the pairs considered")
    n_pos, n_pred, tp = int(truth.sum()), int(chosen.sum()), int((truth & chosen).sum())
    reasons = []
    if n_pred == 0:
        reasons.append("no predicted edge")
    auprc = auroc = np.nan
    curve = pd.DataFrame({"recall": [], "precision": []})
    if n_pos == 0:
        reasons.append("no reference edge among the pairs considered")
    else:
        auprc = float(skm.average_precision_score(truth, values))
        precision, recall, _ = skm.precision_recall_curve(truth, values)
        curve = _thinned(pd.DataFrame({"recall": recall, "precision": precision}))
        if n_pos == truth.size:
            reasons.append("every pair considered is a reference edge: AUROC undefined")
        else:
            auroc = float(skm.roc_auc_score(truth, values))
    row = {
        "precision": tp / n_pred if n_pred else np.nan,
        "recall": tp / n_pos if n_pos else np.nan,
        "auprc": auprc,
        "auroc": auroc,
        "n_positive": n_pos,
        "positive_rate": n_pos / truth.size if truth.size else np.nan,
        "n_predicted": n_pred,
        "true_positives": tp,
        "n_pairs": int(truth.size),
        f"precision_at_{WIDE_K}": top_k_precision(scores, reference, pairs, WIDE_K) if n_pos else np.nan,
        "reason": "; ".join(reasons),
    }
    return row, curve


def reference_tables(
    scores: Mapping[str, np.ndarray],
    graphs: Mapping[str, np.ndarray],
    networks: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``grn_reference.csv`` (one row per method and network) and ``grn_pr_curves.csv``."""
    rows, curves = [], []
    for network, (reference, pairs) in networks.items():
        for method, matrix in scores.items():
            if scored_against_itself(method, network, list(networks)):
                continue
            row, curve = reference_agreement(matrix, graphs[method], reference, pairs)
            rows.append({"method": method, "network": network, **row})
            curves.append(curve.assign(method=method, network=network))
    columns = ["method", "network", "recall", "precision"]
    reference = pd.DataFrame(rows, columns=["method", "network", *REFERENCE_COLUMNS])
    pr = pd.concat(curves, ignore_index=True)[columns] if curves else pd.DataFrame(columns=columns)
    return reference, pr
