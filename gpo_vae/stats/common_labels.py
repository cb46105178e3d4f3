"""Methods compared on the same labels: the labels every method that scores a metric has a value for.

A method without a prediction for some labels (the training mean of a held-out gene, the additive
sum of a pair whose singles are not in the file) must not be averaged over fewer labels than the
model beside it: the two means would describe different perturbations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def common_label_mask(values: np.ndarray) -> np.ndarray:
    """Columns (labels) of ``values`` (methods × labels) where every method (row) that scores any
    label has a finite value; a row with no value anywhere leaves none out (and where no row scores
    any, every label stays)."""
    scoring = np.isfinite(values).any(axis=1)
    if not scoring.any():
        return np.ones(values.shape[1], dtype=bool)
    return np.isfinite(values[scoring]).all(axis=0)


def common_labels(
    table: pd.DataFrame, metric: str, method: str = "method", label: str = "perturbation"
) -> pd.Index:
    """Labels of a long ``table`` (one row per method and label) where every method that scores
    ``metric`` for any label has a finite value; a method with no value anywhere leaves none out
    (and where no method scores it, every label stays)."""
    wide = table.pivot_table(index=label, columns=method, values=metric, aggfunc="first", dropna=False)
    wide = wide.reindex(pd.Index(table[label].unique(), name=label))
    return wide.index[common_label_mask(wide.to_numpy(dtype=float).T)]


def on_common_labels(
    table: pd.DataFrame, metric: str, method: str = "method", label: str = "perturbation"
) -> pd.DataFrame:
    """The rows of ``table`` on its :func:`common_labels` for ``metric``."""
    if metric not in table.columns or table.empty:
        return table
    return table[table[label].isin(common_labels(table, metric, method, label))]


__all__ = ["common_label_mask", "common_labels", "on_common_labels"]
