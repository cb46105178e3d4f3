"""Edges from scores, and their agreement with a reference network (design §8).

A GRN is a T × T score matrix over the treatment nodes (mask probabilities, a baseline's scores):
``scores[i, j]`` scores the edge ``nodes[i] → nodes[j]``. Self-loops are never edges and the
diagonal is excluded from every count and curve here. A reference is a bool T × T adjacency
(:func:`gpo_vae.data.networks.network_adjacency`, or the synthetic data's true GRN).

Pairs considered can be restricted to a subset of nodes (``restrict``: node indices or a bool
mask), e.g. the P perturbed genes for the biological networks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

Graph = np.ndarray | pd.DataFrame | Iterable[tuple[str, str]]
Restrict = Sequence[int] | np.ndarray | None


def _square(scores: np.ndarray, n_nodes: int | None = None) -> np.ndarray:
    matrix = np.asarray(scores)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"need a square T × T matrix, got shape {matrix.shape}")
    if n_nodes is not None and matrix.shape[0] != n_nodes:
        raise ValueError(f"matrix of shape {matrix.shape} for {n_nodes} nodes")
    return matrix


def rank_edges(scores: np.ndarray, n_nodes: int | None = None) -> np.ndarray:
    """Flat indices (``i · T + j``) of the off-diagonal, non-NaN scores, highest first.

    Equal scores keep row-major order (stable sort), so the ranking is deterministic.
    """
    matrix = _square(scores, n_nodes).astype(np.float64)
    n = matrix.shape[0]
    flat = matrix.ravel()
    candidates = np.flatnonzero(~np.eye(n, dtype=bool).ravel() & ~np.isnan(flat))
    return candidates[np.argsort(-flat[candidates], kind="stable")]


def tied_at_k(values: np.ndarray, k: int) -> int:
    """How many of the ``k`` highest ``values`` tie with the best value left out.

    Those edges were picked among equal scores by pair order, not by the method: 0 when the top
    ``k`` is set by the scores alone, ``k`` when it says nothing (e.g. a constant score).
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64).ravel())[::-1]
    if k <= 0 or k >= ordered.size:
        return 0
    return int(np.count_nonzero(ordered[:k] == ordered[k]))


def edges_from_probabilities(
    probabilities: np.ndarray, nodes: Sequence[str] | pd.Index, threshold: float | None = 0.5
) -> pd.DataFrame:
    """Edge table of ``p > threshold`` (all off-diagonal pairs when ``threshold`` is None).

    Returns
    -------
    Columns ``source``, ``target``, ``p``, sorted by ``p`` descending (ties in row-major order),
    without self-loops; a fresh RangeIndex.
    """
    names = pd.Index(nodes).astype(str)
    matrix = _square(probabilities, len(names)).astype(np.float64)
    ranked = rank_edges(matrix)
    values = matrix.ravel()[ranked]
    if threshold is not None:
        keep = values > threshold
        ranked, values = ranked[keep], values[keep]
    rows, cols = np.divmod(ranked, len(names))
    return pd.DataFrame({"source": names[rows].to_numpy(), "target": names[cols].to_numpy(), "p": values})


def graph_adjacency(graph: Graph, nodes: pd.Index) -> np.ndarray:
    """Bool T × T adjacency over ``nodes`` from an adjacency, an edge DataFrame (``source``,
    ``target``) or ``(source, target)`` name pairs; an end outside ``nodes`` is an error."""
    if isinstance(graph, np.ndarray):
        return _square(graph, len(nodes)).astype(bool)
    frame = (
        graph if isinstance(graph, pd.DataFrame) else pd.DataFrame(list(graph), columns=["source", "target"])
    )
    rows = nodes.get_indexer(frame["source"].astype(str))
    cols = nodes.get_indexer(frame["target"].astype(str))
    outside = (rows < 0) | (cols < 0)
    if outside.any():
        bad = frame.loc[outside, ["source", "target"]].head(5).to_numpy().tolist()
        raise ValueError(f"{int(outside.sum())} edges have an end outside nodes, e.g. {bad}")
    adjacency = np.zeros((len(nodes), len(nodes)), dtype=bool)
    adjacency[rows, cols] = True
    return adjacency


def pair_mask(n_nodes: int, restrict: Restrict = None) -> np.ndarray:
    """Bool T × T mask of the pairs considered: off-diagonal, both ends in ``restrict``."""
    keep = np.ones(n_nodes, dtype=bool)
    if restrict is not None:
        selector = np.asarray(restrict)
        keep = selector.astype(bool) if selector.dtype == bool else np.isin(np.arange(n_nodes), selector)
        if keep.shape != (n_nodes,):
            raise ValueError(f"restrict mask of shape {keep.shape} for {n_nodes} nodes")
    mask = keep[:, None] & keep[None, :]
    np.fill_diagonal(mask, False)
    return mask


def edge_precision_recall(
    predicted: np.ndarray, reference: np.ndarray, restrict: Restrict = None
) -> pd.Series:
    """Precision and recall of predicted edges against a reference adjacency.

    Returns
    -------
    ``n_pairs``, ``n_predicted``, ``n_reference``, ``true_positives``, ``precision``
    (TP / predicted), ``recall`` (TP / reference), and ``reason`` (why a value is NaN: no
    predicted edge, or no reference edge among the pairs considered; ``""`` otherwise).
    """
    pred = _square(predicted).astype(bool)
    ref = _square(reference, pred.shape[0]).astype(bool)
    mask = pair_mask(pred.shape[0], restrict)
    pred, ref = pred & mask, ref & mask
    tp, n_pred, n_ref = int((pred & ref).sum()), int(pred.sum()), int(ref.sum())
    reasons = []
    if n_pred == 0:
        reasons.append("no predicted edge")
    if n_ref == 0:
        reasons.append("no reference edge among the pairs considered")
    return pd.Series(
        {
            "n_pairs": int(mask.sum()),
            "n_predicted": n_pred,
            "n_reference": n_ref,
            "true_positives": tp,
            "precision": tp / n_pred if n_pred else np.nan,
            "recall": tp / n_ref if n_ref else np.nan,
            "reason": "; ".join(reasons),
        },
        dtype=object,
    )


def _scored_pairs(
    scores: np.ndarray, reference: np.ndarray, restrict: Restrict
) -> tuple[np.ndarray, np.ndarray]:
    matrix = _square(scores).astype(np.float64)
    ref = _square(reference, matrix.shape[0]).astype(bool)
    mask = pair_mask(matrix.shape[0], restrict)
    values = matrix[mask]
    if not np.isfinite(values).all():
        raise ValueError("scores hold NaN or infinite values among the pairs considered")
    return values, ref[mask]


def precision_recall_table(
    scores: np.ndarray, reference: np.ndarray, restrict: Restrict = None
) -> pd.DataFrame:
    """The precision-recall curve of ``scores`` vs ``reference`` (``sklearn`` convention).

    Returns
    -------
    Columns ``threshold``, ``precision``, ``recall``; one row per distinct score (the last row,
    precision 1 and recall 0, has threshold NaN). Empty when the reference has no edge.
    """
    values, truth = _scored_pairs(scores, reference, restrict)
    if not truth.any():
        return pd.DataFrame({"threshold": [], "precision": [], "recall": []})
    precision, recall, thresholds = skm.precision_recall_curve(truth, values)
    return pd.DataFrame(
        {"threshold": np.append(thresholds, np.nan), "precision": precision, "recall": recall}
    )


def ranking_metrics(scores: np.ndarray, reference: np.ndarray, restrict: Restrict = None) -> pd.Series:
    """AUPRC (average precision) and AUROC of ``scores`` against a reference adjacency.

    A random score has AUPRC ≈ ``positive_rate`` and AUROC ≈ 0.5.

    Returns
    -------
    ``auprc``, ``auroc``, ``n_pairs``, ``n_positive``, ``positive_rate``, ``reason`` (why a value
    is NaN: no reference edge, or every pair an edge; ``""`` otherwise).
    """
    values, truth = _scored_pairs(scores, reference, restrict)
    n_pos, n = int(truth.sum()), truth.size
    auprc = auroc = np.nan
    reason = ""
    if n_pos == 0:
        reason = "no reference edge among the pairs considered"
    else:
        auprc = float(skm.average_precision_score(truth, values))
        if n_pos == n:
            reason = "every pair considered is a reference edge: AUROC undefined"
        else:
            auroc = float(skm.roc_auc_score(truth, values))
    return pd.Series(
        {
            "auprc": auprc,
            "auroc": auroc,
            "n_pairs": n,
            "n_positive": n_pos,
            "positive_rate": n_pos / n if n else np.nan,
            "reason": reason,
        },
        dtype=object,
    )
