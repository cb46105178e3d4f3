"""Every GRN method ranked at matched K (``grn_ranking.csv``), and the sentence that judges the model.

The model's graph has K edges (``p > threshold``); every other method is cut to its top K
(:func:`gpo_vae.evaluation.grn_benchmark.method_graphs`), so precision, CausalBench's mean
Wasserstein distance and its false omission rate compare graphs of one size. AUPRC ranks all of
a method's scores and needs no K. Methods are ranked by AUPRC against the reference network (the
simulator's truth first, else the union of the known networks, else the first one given) and,
without any reference, by mean Wasserstein distance on held-out cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from gpo_vae.grn.curves import tied_at_k

RANKING_FILE = "grn_ranking.csv"
#: The evaluated model's and SAMS-VAE's method keys in every GRN table.
MODEL, SAMS_VAE = "model", "sams_vae"
#: Methods that are models, not baselines (the verdict compares the model with the rest).
MODELS = (MODEL, SAMS_VAE)
#: The fixed wide edge count of the comparison (CausalBench's 2023 challenge scored ≥ 1,000 edges).
WIDE_K = 1000
#: Columns measured on the top K (left out where the scores do not choose it).
AT_K = ("precision_at_k", "mean_wasserstein", "false_omission_rate")
#: References in the order the ranking prefers them.
PREFERRED_REFERENCES = ("true_network", "union")
COLUMNS = (
    "rank",
    "method",
    "k",
    "auprc",
    "precision_at_k",
    f"precision_at_{WIDE_K}",
    "mean_wasserstein",
    "false_omission_rate",
    "tied_at_k",
    "reference",
    "ranked_by",
)


def top_k_precision(scores: np.ndarray, reference: np.ndarray, pairs: np.ndarray, k: int) -> float:
    """Share of reference edges among the ``k`` highest-scored pairs (NaN when fewer pairs than ``k``).

    Ties are broken by the pairs' row-major order, as :func:`~gpo_vae.grn.curves.rank_edges`;
    NaN when most of the ``k`` were picked that way (:func:`picked_by_order`).
    """
    values = np.asarray(scores, dtype=np.float64)[pairs]
    if k <= 0 or values.size < k or picked_by_order(tied_at_k(values, k), k):
        return float("nan")
    order = np.argsort(-values, kind="stable")[:k]
    return float(np.asarray(reference)[pairs][order].mean())


def picked_by_order(tied: int | np.ndarray, k: int) -> bool | np.ndarray:
    """Whether more than half of a top ``k`` was picked among equal scores by pair order: such a
    "graph" measures the pairs' order more than the method (a constant score picks all ``k``)."""
    return (np.asarray(tied) * 2 > k) & (k > 0)


def ranking_reference(reference: pd.DataFrame | None) -> str | None:
    """The network the ranking scores against (None without a reference table)."""
    if reference is None or reference.empty:
        return None
    names = list(dict.fromkeys(reference["network"].astype(str)))
    for name in PREFERRED_REFERENCES:
        if name in names:
            return name
    return names[0]


def reference_name(network: str) -> str:
    """How a sentence names a reference network (``true_network`` → ``the true network``)."""
    return "the true network" if network == "true_network" else f"the {network} network"


def matched_k_ranking(statistical: pd.DataFrame, reference: pd.DataFrame | None, k: int) -> pd.DataFrame:
    """``grn_ranking.csv``: one row per method at the model's edge count ``k`` (:data:`COLUMNS`).

    ``statistical`` is ``grn_statistical.csv`` (rows ``k`` = ``str(k)`` are each method's top K);
    ``reference`` is ``grn_reference.csv`` or None. ``tied_at_k`` counts the top-K edges picked
    among equal scores by pair order; where that is more than half of K (:func:`picked_by_order`)
    the method's :data:`AT_K` columns are NaN.
    """
    at_k = statistical[statistical["k"].astype(str) == str(k)].drop_duplicates("method").set_index("method")
    methods = list(at_k.index)
    table = pd.DataFrame({"method": methods, "k": k})
    table["mean_wasserstein"] = pd.to_numeric(at_k["mean_wasserstein"], errors="coerce").to_numpy()
    table["false_omission_rate"] = pd.to_numeric(at_k["false_omission_rate"], errors="coerce").to_numpy()
    tied = at_k["tied"] if "tied" in at_k else pd.Series(0, index=at_k.index)
    table["tied_at_k"] = pd.to_numeric(tied, errors="coerce").fillna(0).astype(int).to_numpy()
    network = ranking_reference(reference)
    for column in ("auprc", "precision_at_k", f"precision_at_{WIDE_K}"):
        table[column] = np.nan
    if network is not None:
        rows = reference[reference["network"] == network].drop_duplicates("method").set_index("method")
        rows = rows.reindex(methods)
        table["auprc"] = pd.to_numeric(rows["auprc"], errors="coerce").to_numpy()
        table["precision_at_k"] = pd.to_numeric(rows["precision"], errors="coerce").to_numpy()
        wide = rows.get(f"precision_at_{WIDE_K}", pd.Series(np.nan, index=rows.index))
        table[f"precision_at_{WIDE_K}"] = pd.to_numeric(wide, errors="coerce").to_numpy()
        # without a reference edge among the pairs, a precision of 0 says nothing about a method
        table.loc[table["auprc"].isna(), "precision_at_k"] = np.nan
    # a top K picked mostly by pair order among equal scores (a constant score: all of it) is no
    # graph of the method's: its matched-K numbers would measure the pairs' order
    table.loc[picked_by_order(table["tied_at_k"].to_numpy(), k), list(AT_K)] = np.nan
    by = "auprc" if network is not None and table["auprc"].notna().any() else "mean_wasserstein"
    table["reference"] = network if by == "auprc" else ""
    table["ranked_by"] = by
    table = table.sort_values(by, ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    table.loc[table[by].isna(), "rank"] = np.nan
    return table[list(COLUMNS)]


def best_baseline(ranking: pd.DataFrame, models: Sequence[str] = MODELS) -> pd.Series | None:
    """The highest-ranked method that is not a model (None when there is none with a value)."""
    by = str(ranking["ranked_by"].iloc[0]) if len(ranking) else "auprc"
    baselines = ranking[~ranking["method"].isin(models) & ranking[by].notna()]
    return None if baselines.empty else baselines.iloc[0]


def ranking_sentence(ranking: pd.DataFrame, label: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(sentence, tone ``good``/``bad``/``neutral``): the model beats, ties or loses to the best
    baseline at matched K, and by how much; None without a model row or a baseline."""
    if ranking is None or ranking.empty or MODEL not in set(ranking["method"]):
        return None
    by = str(ranking["ranked_by"].iloc[0])
    model = ranking[ranking["method"] == MODEL].iloc[0]
    best = best_baseline(ranking)
    if best is None or not np.isfinite(model[by]):
        return None
    name = (label or {}).get(str(best["method"]), str(best["method"]))
    metric = "AUPRC" if by == "auprc" else "mean Wasserstein distance (held-out cells)"
    against = f" against {reference_name(str(model['reference']))}" if by == "auprc" else ""
    gap = float(model[by]) - float(best[by])
    n = int(ranking[by].notna().sum())
    if round(gap, 3) == 0:
        verb, tone = "ties with", "neutral"
    elif gap > 0:
        verb, tone = "beats", "good"
    else:
        verb, tone = "loses to", "bad"
    text = (
        f"At matched K = {int(model['k'])} edges the model ranks {int(model['rank'])} of {n} GRN methods by "
        f"{metric}{against}: it {verb} the best baseline, {name} ({float(best[by]):.3f}), "
        f"with {float(model[by]):.3f} ({gap:+.3f}). One run: whether a gap exceeds the spread over "
        "seeds is measured by benchmarks/grn.py."
    )
    return text, tone


def ranking_numbers(ranking: pd.DataFrame) -> dict[str, float]:
    """run.json's numbers from the ranking: every method's matched-K values
    (``grn_<method>_<column>``), the model's rank and its gap to the best baseline."""
    out: dict[str, float] = {}
    if ranking.empty:
        return out
    by = str(ranking["ranked_by"].iloc[0])
    for row in ranking.itertuples(index=False):
        key = str(row.method).replace(":", "_")
        for column in ("auprc", "precision_at_k", "mean_wasserstein", "false_omission_rate"):
            value = getattr(row, column)
            if pd.notna(value):
                out[f"grn_{key}_{column}"] = float(value)
    model = ranking[ranking["method"] == MODEL]
    best = best_baseline(ranking)
    if len(model) and pd.notna(model[by].iloc[0]):
        out["grn_model_rank"] = float(model["rank"].iloc[0])
        if best is not None:
            out["grn_model_minus_best_baseline"] = float(model[by].iloc[0]) - float(best[by])
    return out
