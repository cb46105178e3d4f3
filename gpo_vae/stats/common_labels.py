"""Methods compared on the same labels: the labels every method that scores a metric has a value for.

A method without a prediction for some labels (the training mean of a held-out gene, the additive
sum of a pair whose singles are not in the file) must not be averaged over fewer labels than the
model beside it: the two means would describe different perturbations.
"""

from __future__ import annotations

import pandas as pd


def common_labels(
    table: pd.DataFrame, metric: str, method: str = "method", label: str = "perturbation"
) -> pd.Index:
    """Labels of a long ``table`` (one row per method and label) where every method that scores
    ``metric`` for any label has a finite value; a method with no value anywhere leaves none out
    (and where no method scores it, every label stays)."""
    wide = table.pivot_table(index=label, columns=method, values=metric, aggfunc="first", dropna=False)
    wide = wide.reindex(pd.Index(table[label].unique(), name=label))
    scoring = wide.columns[wide.notna().any()]
    if not len(scoring):
        return wide.index
    return wide.index[wide[scoring].notna().all(axis=1)]


def on_common_labels(
    table: pd.DataFrame, metric: str, method: str = "method", label: str = "perturbation"
) -> pd.DataFrame:
    """The rows of ``table`` on its :func:`common_labels` for ``metric``."""
    if metric not in table.columns or table.empty:
        return table
    return table[table[label].isin(common_labels(table, metric, method, label))]


__all__ = ["common_labels", "on_common_labels"]
