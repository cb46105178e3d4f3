"""Predictions of what training never saw: held-out ``A+B`` pairs and held-out single genes.

A label is *unseen* when no training or validation cell carries it: a pair of the
``heldout_combinations`` split, or a gene of the ``heldout_perturbations`` split (no cell of
the gene alone nor in a pair). Every method is scored on the held-out test cells' ATE.

Baselines (from training cells only):

- ``additive``: control + shift(A) + shift(B), each single's shift its training ATE (a gene
  unseen in training adds nothing). Its interaction is zero by construction.
- ``matching_mean``: the mean of the singles' training ATEs (Systema's "matching mean").
- ``noncontrol_mean``: the ATE of all perturbed training cells pooled (one shared shift).
- ``grn_neighbour_mean`` (unseen singles): the mean of the training ATEs of the gene's
  neighbours in the evaluated model's GRN (the ``k`` seen perturbed genes with the largest
  ``max(p(b→a), p(a→b))``, weighted by it); ``network_neighbour_mean``: the same over its
  neighbours in the reference networks (equal weights), when some are given.
- ``regulator_regression`` (unseen singles): the training ATEs combined with the regulator
  weights below, in expression space: the model-free version of the model's prediction.

The model predicts a pair from the multi-hot dosage of its genes' nodes. An unseen gene ``a``
has a node whose row no training cell informed, but its *column* is informed: every seen
perturbation ``b`` that moves ``a``'s own expression is a regulator of ``a`` in the effect GRN
(the data behind the GRN-alignment term and GPO-VAE+'s mask prior). With ``x_b`` the training
ATE of ``b`` on gene ``a`` and ``k`` the screen's typical on-target change (the median over seen
measured targets), ``regulators`` (default) doses ``a`` as ``w = k·x / (x·x)`` over the seen
nodes (no more than their own effects when they move ``a`` less than ``k``; optionally only
those beyond ``unseen_regulator_z`` noise deviations: :func:`regulator_weights`): the
least-squares coefficient of every gene on ``a``'s expression across the seen
perturbations, taken in the model's latent space (the latent offset is ``Σ w_b`` times the
offset of ``b``). A knockdown of ``a`` is then "what moves with ``a`` when its regulators move
it", scaled to a direct knockdown. ``neighbours`` doses ``a`` over its GRN neighbours instead
(weights of ``grn_neighbour_mean``). A gene whose expression is not measured has no column:
both fall back to the mean of every seen node's offset. ``<model>_own_node`` rows score the
untrained node itself, ``<model>_<other mode>`` the mode not configured.

Metrics per pair: Pearson and R² of the predicted ATE, and of the *genetic interaction*
(observed − additive, predicted − additive: the part additivity misses), on all genes and on
the pair's top-k DE genes (by ``|observed ATE|``); and whether the predicted interaction has
the observed direction (``interaction_sign_right``, on pairs whose observed interaction along
the additive profile is significant: ``|z| > interaction_z``, the standard error from the
cells' variances). Per unseen single: Pearson, the perturbation-specific Pearson (minus the
shared shift) and ``rank``: where its own prediction ranks among the predictions of every
unseen single by specific Pearson with its observed profile (1 = told apart from all others;
ties count half; ``rank_normalised`` 0 = first, 0.5 = chance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpo_vae.data.labels import label_genes
from gpo_vae.evaluation.ate import group_means
from gpo_vae.evaluation.metrics import (
    centroid_accuracy,
    discrimination_l1,
    row_pearson,
    row_r2,
    target_columns,
    top_k_indices,
)
from gpo_vae.preprocessing.normalize import take_rows
from gpo_vae.stats.common_labels import on_common_labels

COMBINATION, SINGLE = "combination", "single"
ADDITIVE, MATCHING_MEAN, NONCONTROL = "additive", "matching_mean", "noncontrol_mean"
GRN_NEIGHBOURS, NETWORK_NEIGHBOURS = "grn_neighbour_mean", "network_neighbour_mean"
REGULATOR_REGRESSION = "regulator_regression"
UNSEEN_MODES = ("regulators", "neighbours")
OWN_NODE_SUFFIX = "_own_node"
METRICS_FILE, SCATTER_FILE = "unseen_metrics.csv", "unseen_interaction_scatter.csv"
NEIGHBOURS_FILE, CELLS_FILE = "unseen_neighbours.csv", "unseen_cells.h5ad"


@dataclass(frozen=True)
class UnseenLabels:
    """The test labels that no training or validation cell carries.

    Attributes
    ----------
    combinations
        Unseen ``A+B`` labels (sorted).
    singles
        Unseen single genes (node order).
    unseen_genes
        Every gene no training/validation cell carries (singles and the unseen gene of a pair).
    """

    combinations: list[str]
    singles: list[str]
    unseen_genes: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.combinations or self.singles)


def unseen_labels(
    labels: np.ndarray, split: np.ndarray, perturbations: Sequence[str], control_label: str
) -> UnseenLabels:
    """Which of ``perturbations`` (the test labels) training never saw."""
    fitted = set(labels[np.isin(split, ("train", "val"))].tolist()) - {control_label}
    seen_genes = {gene for label in fitted for gene in label_genes(label)}
    genes = {gene for label in perturbations for gene in label_genes(label)}
    unseen_genes = frozenset(genes - seen_genes)
    combinations = sorted(p for p in perturbations if len(label_genes(p)) > 1 and p not in fitted)
    singles = [p for p in perturbations if len(label_genes(p)) == 1 and p in unseen_genes]
    return UnseenLabels(combinations, singles, unseen_genes)


def neighbour_weights(
    scores: np.ndarray, nodes: Sequence[str], gene: str, seen: Sequence[str], k: int
) -> pd.Series:
    """The ``k`` seen genes most linked to ``gene`` by ``max(score[b, a], score[a, b])``, each
    weighted by that score (summing to 1); empty when no seen gene has a positive score."""
    index = {str(node): i for i, node in enumerate(nodes)}
    a = index[gene]
    candidates = [b for b in seen if b != gene and b in index]
    rows = np.array([index[b] for b in candidates], dtype=np.int64)
    if rows.size == 0:
        return pd.Series(dtype=float)
    link = np.maximum(scores[rows, a], scores[a, rows])
    order = np.argsort(-link, kind="stable")[:k]
    order = order[link[order] > 0]
    if order.size == 0:
        return pd.Series(dtype=float)
    weights = link[order] / link[order].sum()
    return pd.Series(weights, index=[candidates[i] for i in order])


def typical_own_change(single_ate: pd.DataFrame) -> float:
    """Median training ATE of the seen targets on their own gene (measured targets only); 0 if none."""
    own = [float(single_ate.loc[g, g]) for g in single_ate.index if g in single_ate.columns]
    own = [v for v in own if np.isfinite(v)]
    return float(np.median(own)) if own else 0.0


#: Median of χ²(1): the median squared effect of a perturbation that does not move a gene, in units
#: of the effect's noise variance.
_CHI2_MEDIAN = 0.4549364231195724


def regulator_weights(single_ate: pd.DataFrame, gene: str, own_change: float, z: float = 0.0) -> pd.Series:
    """Least-squares weights over the seen perturbations that move ``gene`` (``single_ate``'s rows).

    With ``x`` their training ATEs on ``gene`` and ``k = own_change``, ``w = k·x / max(x·x,
    |k|·‖x‖)``: the coefficient of every gene on ``gene``'s expression across the seen
    perturbations, scaled to a direct knockdown ``k`` when they move ``gene`` at least that much
    (``‖x‖ ≥ |k|``), and to no more than their own effects when they move it less, so that a
    gene nothing moves (``x·x`` near 0) does not turn noise into effects many times the screen's.
    With ``z`` > 0 only perturbations with ``|x_b| > z·σ`` count (σ the effects' noise on this
    gene, ``σ² = median(x²) / 0.455``: most perturbations leave a gene alone). Empty when
    ``gene`` is not measured or nothing moves it.
    """
    if gene not in single_ate.columns or own_change == 0:
        return pd.Series(dtype=float)
    x = single_ate[gene].fillna(0.0).to_numpy(dtype=float)
    if z > 0:
        noise = np.sqrt(np.median(x**2) / _CHI2_MEDIAN)
        x = np.where(np.abs(x) > z * noise, x, 0.0)
    norm = float(x @ x)
    if norm == 0:
        return pd.Series(dtype=float)
    keep = x != 0
    scale = max(norm, abs(own_change) * np.sqrt(norm))
    return pd.Series(own_change * x[keep] / scale, index=single_ate.index[keep])


def network_neighbours(
    adjacency: np.ndarray, nodes: Sequence[str], gene: str, seen: Sequence[str]
) -> pd.Series:
    """Equal weights over the seen genes adjacent to ``gene`` (either direction) in ``adjacency``."""
    undirected = (np.asarray(adjacency) != 0) | (np.asarray(adjacency) != 0).T
    return neighbour_weights(undirected.astype(float), nodes, gene, seen, k=len(nodes))


def weighted_profile(weights: pd.Series, profiles: pd.DataFrame, fallback: pd.Series) -> pd.Series:
    """``Σ w_b · profile_b`` over the weights' genes; ``fallback`` when there are none."""
    if weights.empty:
        return fallback
    return (profiles.loc[weights.index].mul(weights.to_numpy(), axis=0)).sum(axis=0)


def neighbour_dosages(
    labels: Sequence[str],
    node_index: Mapping[str, int],
    n_nodes: int,
    neighbours: Mapping[str, pd.Series],
    seen: Sequence[str],
) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Dosage rows of ``labels`` where an unseen gene is replaced by weights over seen genes.

    A seen gene contributes a 1 on its node; an unseen gene (a key of ``neighbours``) adds its
    weights on their nodes (a dose of 1 spread uniformly over ``seen`` when it has none), so the
    latent offset D(M⊙E) is the weighted sum of their offsets.
    """
    out = {}
    for label in labels:
        row = np.zeros(n_nodes, dtype=np.float32)
        for gene in label_genes(label):
            if gene not in neighbours:
                row[node_index[gene]] += 1.0
                continue
            weights = neighbours[gene]
            if weights.empty:
                weights = pd.Series(1.0 / len(seen), index=list(seen))
            for name, w in weights.items():
                row[node_index[str(name)]] += float(w)
        out[label] = (row, np.flatnonzero(row).tolist())
    return out


def additive_prediction(pairs: Sequence[str], single_ate: pd.DataFrame) -> pd.DataFrame:
    """Each pair's predicted ATE as the sum of its seen singles' training ATEs (unseen add 0)."""
    rows = [
        single_ate.reindex([g for g in label_genes(p) if g in single_ate.index]).sum(axis=0) for p in pairs
    ]
    return pd.DataFrame(rows, index=pd.Index(list(pairs), name="perturbation"), columns=single_ate.columns)


def matching_mean_prediction(pairs: Sequence[str], single_ate: pd.DataFrame) -> pd.DataFrame:
    """Each pair's predicted ATE as the mean of its seen singles' training ATEs."""
    rows = [
        single_ate.reindex([g for g in label_genes(p) if g in single_ate.index]).mean(axis=0) for p in pairs
    ]
    return pd.DataFrame(rows, index=pd.Index(list(pairs), name="perturbation"), columns=single_ate.columns)


def group_moments(
    counts: sp.csr_matrix, labels: np.ndarray, groups: Sequence[str], target_sum: float = 1e4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, variance, cells) of ``log2(1 + x·target_sum/library)`` per group of ``groups``."""
    index = pd.Index(list(groups))
    codes = index.get_indexer(np.asarray(labels).astype(str))
    mean, n = group_means(counts, codes, len(index), target_sum)
    second, _ = group_means(counts, codes, len(index), target_sum, square=True)
    with np.errstate(invalid="ignore"):
        variance = np.maximum(second - mean**2, 0.0) * (n / np.maximum(n - 1, 1))[:, None]
    return mean, variance, n


def interaction_standard_errors(
    counts: sp.csr_matrix,
    labels: np.ndarray,
    split: np.ndarray,
    pairs: Sequence[str],
    control_label: str,
    single_ate_genes: Sequence[str],
    target_sum: float = 1e4,
) -> np.ndarray:
    """(pairs × G) standard error of the observed interaction ATE_AB(test) − Σ ATE_single(train).

    Groups are taken as independent samples: ``v_AB/n_AB + v_c/n_c`` (test) plus
    ``Σ v_s/n_s + k² v_c'/n_c'`` (training singles and controls, k = seen singles).
    """
    test, train = split == "test", split == "train"
    test_mean, test_var, test_n = group_moments(
        take_rows(counts, np.flatnonzero(test)), labels[test], [*pairs, control_label], target_sum
    )
    singles = sorted({g for p in pairs for g in label_genes(p) if g in set(single_ate_genes)})
    _, train_var, train_n = group_moments(
        take_rows(counts, np.flatnonzero(train)), labels[train], [*singles, control_label], target_sum
    )
    del test_mean
    with np.errstate(divide="ignore", invalid="ignore"):
        test_term = test_var[:-1] / test_n[:-1, None] + test_var[-1] / test_n[-1]
        per_single = train_var[:-1] / train_n[:-1, None]
        control_term = train_var[-1] / train_n[-1]
    position = {g: i for i, g in enumerate(singles)}
    out = np.empty_like(test_term)
    for i, pair in enumerate(pairs):
        members = [position[g] for g in label_genes(pair) if g in position]
        out[i] = test_term[i] + per_single[members].sum(axis=0) + len(members) ** 2 * control_term
    return np.sqrt(out)


def _pair_metrics(true: np.ndarray, pred: np.ndarray, top: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    true_top = np.take_along_axis(true, top, axis=1)
    pred_top = np.take_along_axis(pred, top, axis=1)
    k = top.shape[1]
    out = {
        f"{prefix}pearson": row_pearson(true, pred),
        f"{prefix}r2": row_r2(true, pred),
        f"{prefix}pearson_top{k}": row_pearson(true_top, pred_top),
        f"{prefix}r2_top{k}": row_r2(true_top, pred_top),
    }
    if prefix:
        # a prediction that carries no interaction at all (additivity) has r = 0, not NaN
        flat = np.all(pred == 0, axis=1)
        flat_top = np.all(pred_top == 0, axis=1)
        out[f"{prefix}pearson"][flat] = 0.0
        out[f"{prefix}pearson_top{k}"][flat_top] = 0.0
    return out


def combination_metrics(
    observed: pd.DataFrame,
    predicted: pd.DataFrame,
    additive: pd.DataFrame,
    standard_errors: np.ndarray,
    top_de: int,
    interaction_z: float,
) -> pd.DataFrame:
    """Per-pair metrics of one method (module docstring); rows are ``observed``'s pairs."""
    pairs = observed.index
    true = observed.to_numpy(dtype=float)
    pred = predicted.reindex(index=pairs, columns=observed.columns).to_numpy(dtype=float)
    base = additive.reindex(index=pairs, columns=observed.columns).to_numpy(dtype=float)
    top = top_k_indices(true, min(top_de, true.shape[1]))
    out = _pair_metrics(true, pred, top, "")
    true_i, pred_i = true - base, pred - base
    out.update(_pair_metrics(true_i, pred_i, top, "interaction_"))
    norm = np.linalg.norm(base, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        direction = base / norm[:, None]
        observed_along = (true_i * direction).sum(axis=1)
        se_along = np.sqrt(((direction * standard_errors) ** 2).sum(axis=1))
        z = observed_along / se_along
    predicted_along = (pred_i * direction).sum(axis=1)
    significant = np.abs(z) > interaction_z
    right = np.where(significant, (np.sign(predicted_along) == np.sign(observed_along)).astype(float), np.nan)
    out["interaction_observed"] = observed_along
    out["interaction_predicted"] = predicted_along
    out["interaction_z"] = z
    out["interaction_significant"] = significant
    out["interaction_sign_right"] = right
    frame = pd.DataFrame(out, index=pairs)
    incomplete = np.isnan(true).any(axis=1) | np.isnan(pred).any(axis=1)
    frame.loc[incomplete, [c for c in frame.columns if c != "interaction_significant"]] = np.nan
    return frame


def identity_metrics(
    observed: pd.DataFrame, predicted: pd.DataFrame, shared_shift: pd.Series
) -> pd.DataFrame:
    """Per label: the Pearson-delta against the perturbed centroid, discrimination and centroid
    accuracy among the labels of ``observed`` (:mod:`gpo_vae.evaluation.metrics`).

    ``pearson_specific`` is Pearson r of (pred − s) against (true − s), ``s`` the shared shift
    (Systema's perturbed centroid); a prediction that is the shift itself carries nothing
    specific and scores 0.
    """
    labels = observed.index
    true = observed.to_numpy(dtype=float)
    pred = predicted.reindex(index=labels, columns=observed.columns).to_numpy(dtype=float)
    shift = shared_shift.reindex(observed.columns).to_numpy(dtype=float)[None, :]
    specific = row_pearson(true - shift, pred - shift)
    flat = np.all(np.isclose(pred, shift), axis=1)
    specific[flat & np.isfinite(true).all(axis=1)] = 0.0
    targets = target_columns(list(labels), list(observed.columns))
    return pd.DataFrame(
        {
            "pearson_specific": specific,
            "discrimination_l1": discrimination_l1(true, pred, targets),
            "centroid_accuracy": centroid_accuracy(true, pred),
        },
        index=labels,
    )


def single_metrics(
    observed: pd.DataFrame, predicted: pd.DataFrame, shared_shift: pd.Series, top_de: int
) -> pd.DataFrame:
    """Per unseen single: Pearson, R², specific Pearson, top-k Pearson and the rank metric."""
    singles = observed.index
    shift = shared_shift.reindex(observed.columns).to_numpy(dtype=float)[None, :]
    true = observed.to_numpy(dtype=float)
    pred = predicted.reindex(index=singles, columns=observed.columns).to_numpy(dtype=float)
    top = top_k_indices(true, min(top_de, true.shape[1]))
    out = _pair_metrics(true, pred, top, "")
    out.update(identity_metrics(observed, predicted, shared_shift).to_dict("series"))
    rank = np.full(len(singles), np.nan)
    if len(singles) >= 2:
        similarity = _cross_pearson(true - shift, pred - shift)
        own = np.diag(similarity)
        others = ~np.eye(len(singles), dtype=bool)
        # NaN (a constant prediction) ties with everything: it tells nothing apart
        finite = np.isfinite(similarity) & np.isfinite(own)[:, None]
        above = ((similarity > own[:, None]) & others & finite).sum(axis=1)
        ties = ((~finite | (similarity == own[:, None])) & others).sum(axis=1)
        rank = 1.0 + above + 0.5 * ties
    out["rank"] = rank
    out["rank_normalised"] = (rank - 1.0) / max(len(singles) - 1, 1)
    return pd.DataFrame(out, index=singles)


def _cross_pearson(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``[i, j]`` = Pearson r of true row i with predicted row j (NaN for a constant row)."""
    t = true - true.mean(axis=1, keepdims=True)
    p = pred - pred.mean(axis=1, keepdims=True)
    tn, pn = np.linalg.norm(t, axis=1), np.linalg.norm(p, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (t @ p.T) / np.outer(tn, pn)


def unseen_table(frames: Mapping[tuple[str, str], pd.DataFrame]) -> pd.DataFrame:
    """Long ``unseen_metrics.csv``: (kind, method) → per-label metrics, one row per label."""
    out = []
    for (kind, method), frame in frames.items():
        block = frame.rename_axis("perturbation").reset_index()
        block.insert(0, "method", method)
        block.insert(0, "kind", kind)
        out.append(block)
    return (
        pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["kind", "method", "perturbation"])
    )


def unseen_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean of every metric per (kind, method) over the labels of the kind that every method
    scores (:func:`~gpo_vae.stats.common_labels.on_common_labels`, by Pearson r), with their number."""
    numeric = [c for c in table.columns if c not in ("kind", "method", "perturbation")]
    table = pd.concat(
        [on_common_labels(part, "pearson") for _, part in table.groupby("kind", sort=False)]
        or [table.iloc[0:0]]
    )
    values = table[["kind", "method", *numeric]].copy()
    values[numeric] = values[numeric].astype(float)
    grouped = values.groupby(["kind", "method"], sort=False)
    summary = grouped[numeric].mean()
    summary["n"] = grouped.size()
    return summary.reset_index()


def interaction_scatter(
    observed: pd.DataFrame, predicted: pd.DataFrame, additive: pd.DataFrame, top_de: int
) -> pd.DataFrame:
    """Observed and predicted interaction of every pair on its top-k DE genes (long table)."""
    rows = []
    for pair in observed.index:
        true = observed.loc[pair]
        genes = true.abs().sort_values(ascending=False, kind="stable").index[:top_de]
        base = additive.loc[pair, genes]
        rows.append(
            pd.DataFrame(
                {
                    "perturbation": pair,
                    "gene": genes,
                    "observed": (true[genes] - base).to_numpy(),
                    "predicted": (predicted.loc[pair, genes] - base).to_numpy(),
                }
            )
        )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["perturbation", "gene"])


__all__ = [
    "ADDITIVE",
    "COMBINATION",
    "GRN_NEIGHBOURS",
    "MATCHING_MEAN",
    "NETWORK_NEIGHBOURS",
    "OWN_NODE_SUFFIX",
    "REGULATOR_REGRESSION",
    "SINGLE",
    "UNSEEN_MODES",
    "UnseenLabels",
    "additive_prediction",
    "combination_metrics",
    "identity_metrics",
    "interaction_scatter",
    "interaction_standard_errors",
    "matching_mean_prediction",
    "neighbour_dosages",
    "neighbour_weights",
    "network_neighbours",
    "regulator_weights",
    "single_metrics",
    "typical_own_change",
    "unseen_labels",
    "unseen_summary",
    "unseen_table",
    "weighted_profile",
]
