"""Vectorised two-sample tests of many perturbed groups against one sorted control sample.

For one gene, the control values are sorted once (:class:`ControlColumn`); every perturbed
value is then located among them with ``searchsorted``, which yields the Mann-Whitney U, its tie
correction and, through the integral of the control CDF, the exact 1-D Wasserstein distance of
every group at once (:func:`two_sample_tests`); the Mann-Whitney part is the shared core of
:mod:`gpo_vae.stats.rank_tests`. Results equal ``scipy.stats.mannwhitneyu``
(asymptotic, continuity- and tie-corrected) and ``scipy.stats.wasserstein_distance``.
"""

from __future__ import annotations

import numpy as np

from gpo_vae.stats.rank_tests import locate, mann_whitney_pvalue, rank_sum_terms, runs, tie_term


class ControlColumn:
    """The sorted control values of one gene, with what repeated tests need."""

    def __init__(self, values: np.ndarray) -> None:
        self.sorted = np.sort(values)
        self.n = values.size
        self.prefix = np.concatenate(([0.0], np.cumsum(self.sorted)))
        self.tie_sum = float(tie_term(runs(self.sorted)[1]).sum())

    def cdf_integral(self, x: np.ndarray) -> np.ndarray:
        """``∫_{-∞}^{x} F(t) dt`` of the control empirical CDF ``F``."""
        below = np.searchsorted(self.sorted, x, side="right")
        return (below * x - self.prefix[below]) / self.n

    def quantile_point(self, k: np.ndarray, n: np.ndarray) -> np.ndarray:
        """The smallest control value ``x`` with ``F(x) ≥ k/n`` (``1 ≤ k ≤ n``, integers)."""
        return self.sorted[(k * self.n + n - 1) // n - 1]


def two_sample_tests(
    control: ControlColumn, values: np.ndarray, segment: np.ndarray, n_segments: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """U (of the controls), two-sided p and W1 of each segment of ``values`` against ``control``.

    ``values``/``segment``: the perturbed values of every pair into this gene and their pair
    index, sorted by (segment, value).
    """
    n0 = control.n
    na = np.bincount(segment, minlength=n_segments).astype(np.float64)
    # each group's distinct values, located once among the controls: its U and added tie term
    starts, counts = runs(segment, values)
    below, equal = locate(control.sorted, values[starts])
    u_perturbed, added = rank_sum_terms(below, equal, counts, segment[starts], n_segments)
    u_control = n0 * na - u_perturbed
    p_value = mann_whitney_pvalue(u_control, n0, na, control.tie_sum + added)

    # W1 = ∫|F_control − F_perturbed|: F_perturbed is k/na between its k-th and (k+1)-th value,
    # and |F_control − c| changes sign once, at the control quantile point of c
    first = np.concatenate(([True], segment[1:] != segment[:-1]))
    rank = np.arange(values.size) - np.maximum.accumulate(np.where(first, np.arange(values.size), 0)) + 1
    last = np.concatenate((segment[1:] != segment[:-1], [True]))
    upper = np.empty_like(values)
    upper[:-1] = values[1:]
    upper[last] = np.maximum(values[last], control.sorted[-1])
    level = rank / na[segment]
    crossing = np.clip(control.quantile_point(rank, na[segment].astype(np.int64)), values, upper)
    integral_lo = control.cdf_integral(values)
    integral_mid = control.cdf_integral(crossing)
    integral_hi = control.cdf_integral(upper)
    pieces = (
        level * (crossing - values)
        - (integral_mid - integral_lo)
        + (integral_hi - integral_mid)
        - level * (upper - crossing)
    )
    wasserstein = np.bincount(segment, weights=pieces, minlength=n_segments)
    wasserstein += np.bincount(segment[first], weights=integral_lo[first], minlength=n_segments)
    return u_control, p_value, wasserstein
