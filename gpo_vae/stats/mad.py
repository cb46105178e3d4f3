"""Median-absolute-deviation outlier thresholds (design §2), shared by QC and summary statistics."""

from __future__ import annotations

from typing import Literal

import numpy as np

Side = Literal["low", "high"]


def mad_threshold(values: np.ndarray, nmads: float, side: Side) -> float:
    """Threshold ``median ∓ nmads · MAD`` of ``values`` (unscaled MAD, as the reference code).

    ``side="low"`` gives ``median − nmads·MAD`` (cells below are outliers), ``"high"`` gives
    ``median + nmads·MAD`` (cells above are outliers). NaNs are ignored.
    """
    values = np.asarray(values, dtype=np.float64)
    median = np.nanmedian(values)
    mad = np.nanmedian(np.abs(values - median))
    if side == "low":
        return float(median - nmads * mad)
    if side == "high":
        return float(median + nmads * mad)
    raise ValueError(f"side must be 'low' or 'high', got {side!r}")


def outside_threshold(values: np.ndarray, threshold: float, side: Side) -> np.ndarray:
    """Boolean mask of values strictly beyond ``threshold`` on ``side`` (the outliers)."""
    values = np.asarray(values)
    return values < threshold if side == "low" else values > threshold
