"""Train/val/test splits of cells (design §5).

Two modes:

- :func:`split_random` reproduces the published scheme: cells are split at random, *not*
  stratified by perturbation, with two calls of scikit-learn's ``train_test_split`` (0.8, then
  0.8 of the rest), which gives 64/16/20 %.
- :func:`split_heldout_perturbations` holds a fraction of the perturbations out of training: all
  of their cells go to test, the other cells (controls included) are split as above.

:func:`validate_splits` checks either result before the later stages use it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from gpo_vae.data.contract import CONTROL_LABEL

logger = logging.getLogger(__name__)

SPLITS: tuple[str, str, str] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.64, 0.16, 0.20)


class HeldoutSplit(NamedTuple):
    """Split labels per cell and the perturbations whose cells are all in test."""

    labels: np.ndarray
    heldout: list[str]


def _two_stage_sizes(fractions: Sequence[float]) -> tuple[float, float]:
    """``train_size`` of the two ``train_test_split`` calls for (train, val, test) fractions.

    Rounded so that the default fractions give exactly the published 0.8 and 0.8 (0.64 / 0.8 is
    0.7999999999999999 in floating point, which can move one cell across the boundary).
    """
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, val, test), got {tuple(fractions)}")
    f_train, f_val, f_test = (float(f) for f in fractions)
    if min(f_train, f_val, f_test) <= 0 or not np.isclose(f_train + f_val + f_test, 1.0):
        raise ValueError(f"fractions must be positive and sum to 1, got {tuple(fractions)}")
    return round(1.0 - f_test, 12), round(f_train / (f_train + f_val), 12)


def split_random(n_cells: int, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Random by-cell split labels, as published (not stratified by perturbation).

    ``train_test_split(arange(n_cells), train_size=0.8, random_state=seed)`` gives (rest, test);
    ``train_test_split(rest, train_size=0.8, random_state=seed)`` gives (train, val).

    Parameters
    ----------
    n_cells
        Number of cells (rows of the AnnData).
    seed
        ``random_state`` of both calls (the reference used 0).
    fractions
        (train, val, test) fractions; the defaults give the published 0.8/0.8 sizes.

    Returns
    -------
    Object array of ``"train"``, ``"val"``, ``"test"`` per cell.
    """
    if n_cells < 3:
        raise ValueError(f"need at least 3 cells to make three splits, got {n_cells}")
    first, second = _two_stage_sizes(fractions)
    idx = np.arange(n_cells)
    rest, test = train_test_split(idx, train_size=first, random_state=seed)
    train, val = train_test_split(rest, train_size=second, random_state=seed)
    labels = np.empty(n_cells, dtype=object)
    labels[train] = "train"
    labels[val] = "val"
    labels[test] = "test"
    return labels


def split_heldout_perturbations(
    perturbation_labels: Sequence[str] | np.ndarray | pd.Series,
    heldout_fraction: float = 0.2,
    control_label: str = CONTROL_LABEL,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> HeldoutSplit:
    """Split with a fraction of perturbations seen only in test (unseen-perturbation mode).

    ``round(heldout_fraction · n_perturbations)`` perturbations (at least one, at most all but
    one) are drawn with ``numpy.random.default_rng(seed)`` from the sorted perturbation names;
    all their cells go to test. The remaining cells, controls included, are split with
    :func:`split_random` (same ``seed`` and ``fractions``), so controls are in every split. The
    test split is therefore larger than ``fractions[2]``.

    Returns
    -------
    :class:`HeldoutSplit` with the labels per cell and the sorted held-out perturbation names.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    labels = np.asarray(perturbation_labels).astype(str)
    perturbations = np.unique(labels[labels != control_label])
    if perturbations.size < 2:
        raise ValueError(
            f"need at least two perturbations to hold some out, found {perturbations.size} "
            f"(besides {control_label!r})"
        )
    n_heldout = int(np.clip(round(heldout_fraction * perturbations.size), 1, perturbations.size - 1))
    rng = np.random.default_rng(seed)
    heldout = np.sort(rng.choice(perturbations, size=n_heldout, replace=False))
    is_heldout = np.isin(labels, heldout)
    split = np.empty(labels.size, dtype=object)
    split[is_heldout] = "test"
    split[~is_heldout] = split_random(int((~is_heldout).sum()), seed=seed, fractions=fractions)
    logger.info(
        "held out %d of %d perturbations (%d cells) for test", n_heldout, perturbations.size, is_heldout.sum()
    )
    return HeldoutSplit(labels=split, heldout=heldout.tolist())


def validate_splits(
    split_labels: Sequence[str] | np.ndarray | pd.Series,
    perturbation_labels: Sequence[str] | np.ndarray | pd.Series,
    control_label: str = CONTROL_LABEL,
    heldout: Iterable[str] = (),
) -> pd.DataFrame:
    """Check split labels before pairing and training; return cells per perturbation × split.

    Raises ``ValueError`` naming every problem at once: labels other than train/val/test, a
    split without cells, a split without control cells (OT pairing and ATEs need controls in
    each split), or a ``heldout`` perturbation found in train or val. Perturbations absent from
    train that are not in ``heldout`` (possible in random mode for small groups) are logged as
    a warning; their counts are in the returned table.
    """
    split = np.asarray(split_labels).astype(str)
    perturbation = np.asarray(perturbation_labels).astype(str)
    if split.shape != perturbation.shape:
        raise ValueError(
            f"split_labels has {split.size} entries but perturbation_labels has {perturbation.size}"
        )
    counts = pd.crosstab(pd.Series(perturbation, name="perturbation"), pd.Series(split, name="split"))
    counts = counts.reindex(columns=list(SPLITS), fill_value=0)

    problems = []
    unknown = sorted({str(name) for name in np.unique(split)} - set(SPLITS))
    if unknown:
        problems.append(f"unknown split labels {unknown} (expected {list(SPLITS)})")
    empty = [name for name in SPLITS if counts[name].sum() == 0]
    if empty:
        problems.append(f"no cells in split(s) {empty}")
    control_counts = (
        counts.loc[control_label] if control_label in counts.index else pd.Series(0, index=list(SPLITS))
    )
    no_controls = [name for name in SPLITS if name not in empty and control_counts[name] == 0]
    if no_controls:
        problems.append(f"no {control_label!r} control cells in split(s) {no_controls}")
    heldout = sorted({str(p) for p in heldout})
    leaked = [p for p in heldout if p in counts.index and counts.loc[p, ["train", "val"]].sum() > 0]
    if leaked:
        problems.append(f"held-out perturbations with cells in train/val: {leaked[:10]}")
    if problems:
        raise ValueError("invalid splits: " + "; ".join(problems))

    perturbed = counts.drop(index=[control_label, *heldout], errors="ignore")
    missing = [str(p) for p in perturbed.index[perturbed["train"] == 0]]
    if missing:
        logger.warning(
            "%d perturbation(s) have no training cells (the model cannot learn them): %s",
            len(missing),
            missing[:10],
        )
    return counts
