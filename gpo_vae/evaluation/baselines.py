"""Trivial references that keep perturbation-prediction numbers honest (design §7).

- :func:`mean_baseline_ate`: predict each perturbation's effect as the ATE of its *training*
  cells (against training controls). A model that does not beat it has learnt nothing beyond
  the per-perturbation average.
- :func:`noncontrol_mean_ate`: predict every perturbation's effect as the ATE of *all*
  perturbed training cells pooled (Systema's "non-control mean", Viñas Torné et al., Nat
  Biotech 2025): one shared shift. Whatever a method scores beyond it is perturbation-specific;
  on standard metrics it rivals published deep models, so it is the bar a model must clear.
- :func:`control_baseline_ate`: predict no effect (ATE 0). Its Pearson r is undefined (NaN,
  constant prediction); its R² is ``1 − Σt²/Σ(t − t̄)² = −n·t̄²/Σ(t − t̄)² ≤ 0``.
- :func:`split_half_reliability`: the ceiling set by sampling noise. The test cells of every
  perturbation and the test controls are split into two random halves (seeded); the metrics of
  half A's ATE (as "true") against half B's ATE (as "predicted") say how well one noisy
  estimate predicts another.

Each reads only its own split: training baselines only training cells, test references only
test cells (rows are selected before anything is computed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from gpo_vae.data.contract import CONTROL_LABEL
from gpo_vae.evaluation.ate import Counts, ate_on_split, ate_perturbseq, split_rows
from gpo_vae.evaluation.metrics import DEFAULT_JACCARD_KS, DEFAULT_TOP_DE, prediction_metrics
from gpo_vae.preprocessing.normalize import DEFAULT_TARGET_SUM, take_rows


def mean_baseline_ate(
    X_counts: Counts,
    labels: Sequence | np.ndarray | pd.Series,
    split: Sequence | np.ndarray | pd.Series,
    control_label: str = CONTROL_LABEL,
    perturbations: Iterable[str] | None = None,
    target_sum: float = DEFAULT_TARGET_SUM,
    genes: Sequence[str] | pd.Index | None = None,
    train_split: str = "train",
    batches: Sequence | np.ndarray | pd.Series | None = None,
) -> pd.DataFrame:
    """Each perturbation's ATE on its training cells vs training controls (perturbations × genes;
    with ``batches``, against each batch's training controls)."""
    return ate_on_split(
        X_counts, labels, split, train_split, control_label, perturbations, target_sum, genes, batches
    )


#: The pooled label of :func:`noncontrol_mean_ate`.
PERTURBED_POOL = "__all_perturbed__"


def noncontrol_mean_ate(
    X_counts: Counts,
    labels: Sequence | np.ndarray | pd.Series,
    split: Sequence | np.ndarray | pd.Series,
    control_label: str = CONTROL_LABEL,
    perturbations: Iterable[str] | None = None,
    target_sum: float = DEFAULT_TARGET_SUM,
    genes: Sequence[str] | pd.Index | None = None,
    train_split: str = "train",
    batches: Sequence | np.ndarray | pd.Series | None = None,
) -> pd.DataFrame:
    """The ATE of every perturbed training cell pooled, the same row for each perturbation."""
    values = np.asarray(labels).astype(str)
    pooled = np.where(values == control_label, control_label, PERTURBED_POOL)
    shift = ate_on_split(
        X_counts, pooled, split, train_split, control_label, [PERTURBED_POOL], target_sum, genes, batches
    )
    if perturbations is None:
        perturbations = sorted(set(values.tolist()) - {control_label})
    index = pd.Index(list(perturbations), name="perturbation")
    return pd.DataFrame(np.repeat(shift.to_numpy(), len(index), axis=0), index=index, columns=shift.columns)


def control_baseline_ate(perturbations: Iterable[str], genes: Sequence[str] | pd.Index) -> pd.DataFrame:
    """The zero-effect prediction: an all-zero ATE table (perturbations × genes)."""
    index = pd.Index(list(perturbations), name="perturbation")
    columns = pd.Index(genes, name="gene")
    return pd.DataFrame(np.zeros((len(index), len(columns))), index=index, columns=columns)


def split_half_ate(
    X_counts: Counts,
    labels: Sequence | np.ndarray | pd.Series,
    split: Sequence | np.ndarray | pd.Series,
    control_label: str = CONTROL_LABEL,
    perturbations: Iterable[str] | None = None,
    target_sum: float = DEFAULT_TARGET_SUM,
    genes: Sequence[str] | pd.Index | None = None,
    test_split: str = "test",
    seed: int = 0,
    batches: Sequence | np.ndarray | pd.Series | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ATE of two random halves of the test cells, each against its own half of the test controls.

    Every perturbation's test cells (and the test controls) are shuffled with
    ``numpy.random.default_rng(seed)`` and cut in two: half A gets ``⌊n/2⌋`` cells, half B the
    rest. A perturbation with fewer than 2 test cells has a NaN row in half A.
    """
    rows = split_rows(split, test_split, X_counts.shape[0])
    values = np.asarray(labels).astype(str)[rows]
    batch = None if batches is None else np.asarray(batches).astype(str)[rows]
    X_test = take_rows(X_counts, rows)
    if perturbations is None:
        perturbations = sorted(set(values.tolist()) - {control_label})
    perturbations = list(perturbations)

    rng = np.random.default_rng(seed)
    # halves are cut within each (label, batch) group, so both halves keep every batch
    codes = pd.Categorical(values if batch is None else np.char.add(np.char.add(values, "|"), batch)).codes
    shuffled = rng.permutation(len(values))
    grouped = shuffled[np.argsort(codes[shuffled], kind="stable")]  # by group, random within
    sorted_codes = codes[grouped]
    rank = np.arange(len(values)) - np.searchsorted(sorted_codes, sorted_codes, side="left")
    size = np.bincount(codes)[sorted_codes]
    in_a = np.zeros(len(values), dtype=bool)
    in_a[grouped] = rank < size // 2

    halves = []
    for mask in (in_a, ~in_a):
        halves.append(
            ate_perturbseq(
                take_rows(X_test, np.flatnonzero(mask)),
                values[mask],
                control_label,
                perturbations,
                target_sum,
                genes,
                None if batch is None else batch[mask],
            )
        )
    return halves[0], halves[1]


def spearman_brown(r: np.ndarray | pd.Series, factor: float = 2.0) -> np.ndarray | pd.Series:
    """Reliability of a ``factor`` times longer measure: ``f·r / (1 + (f − 1)·r)``."""
    return factor * r / (1.0 + (factor - 1.0) * r)


def split_half_reliability(
    X_counts: Counts,
    labels: Sequence | np.ndarray | pd.Series,
    split: Sequence | np.ndarray | pd.Series,
    control_label: str = CONTROL_LABEL,
    perturbations: Iterable[str] | None = None,
    target_sum: float = DEFAULT_TARGET_SUM,
    genes: Sequence[str] | pd.Index | None = None,
    test_split: str = "test",
    seed: int = 0,
    corrected: bool = False,
    top_de: int = DEFAULT_TOP_DE,
    jaccard_ks: Sequence[int] = DEFAULT_JACCARD_KS,
    batches: Sequence | np.ndarray | pd.Series | None = None,
    shared_shift: pd.Series | None = None,
) -> pd.DataFrame:
    """:func:`~gpo_vae.evaluation.metrics.prediction_metrics` of half A (true) vs half B (predicted).

    The top-DE genes are those of half A, so the table is not symmetric in the halves. Each half
    has half the cells of the test set, so these numbers understate the agreement of two
    full-size estimates; with ``corrected`` the Pearson columns are Spearman-Brown corrected to
    full size (``2r / (1 + r)``). R² and Jaccard are left uncorrected (no such formula holds).
    With ``shared_shift`` the halves' ``pearson_specific`` is scored too.
    """
    half_a, half_b = split_half_ate(
        X_counts, labels, split, control_label, perturbations, target_sum, genes, test_split, seed, batches
    )
    metrics = prediction_metrics(
        half_a, half_b, top_de=top_de, jaccard_ks=jaccard_ks, shared_shift=shared_shift, across=True
    )
    if corrected:
        for column in [c for c in metrics.columns if c.startswith("pearson")]:
            metrics[column] = spearman_brown(metrics[column])
    return metrics
