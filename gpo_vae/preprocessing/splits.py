"""Train/val/test splits of cells (design §5).

Two modes:

- :func:`split_random` reproduces the published scheme: cells are split at random, *not*
  stratified by perturbation, with two calls of scikit-learn's ``train_test_split`` (0.8, then
  0.8 of the rest), which gives 64/16/20 %. :func:`split_stratified` cuts every group (a
  perturbation, or a perturbation within a batch) in the same fractions instead.
- :func:`split_heldout_perturbations` holds a fraction of the perturbations out of training: all
  of their cells go to test, the other cells (controls included) are split as above. A
  combination ``A+B`` holding a held-out gene is held out with it, so the gene is truly unseen.
- :func:`split_heldout_combinations` holds a fraction of the ``A+B`` combinations out instead,
  keeping their singles in training (or, with ``unseen_single``, one single of each held-out
  pair out of training too): the model must predict a pair from its parts.

:func:`gpo_vae.preprocessing.split_plan.ensure_test_controls` then makes sure the test split holds enough control cells for the
ATE (per batch), and :func:`validate_splits` checks the result before the later stages use it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from gpo_vae.data.contract import CONTROL_LABEL
from gpo_vae.data.labels import label_genes, labels_in
from gpo_vae.errors import UserError

logger = logging.getLogger(__name__)

SPLITS: tuple[str, str, str] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.64, 0.16, 0.20)


class SplitError(UserError, ValueError):
    """A split that cannot serve the ATE or pairing; the message says what is needed and which key to change."""


class HeldoutSplit(NamedTuple):
    """Split labels per cell and the perturbations whose cells are all in test."""

    labels: np.ndarray
    heldout: list[str]

    @property
    def unseen_singles(self) -> list[str]:
        """The held-out single genes: no training cell carries them, alone or in a pair."""
        return [p for p in self.heldout if len(label_genes(p)) == 1]


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


def split_stratified(
    groups: Sequence[str] | np.ndarray, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> np.ndarray:
    """Split labels that cut every group in ``fractions`` (train, val, test), cells drawn at random.

    A group of n cells (shuffled with ``numpy.random.default_rng(seed)``) gives
    ``round(n · f_val)`` cells to val and ``round(n · f_test)`` to test, at least one each when
    n ≥ 3, and the rest to train; so every group of 3 or more cells is in every split.
    """
    _two_stage_sizes(fractions)  # validates
    _, f_val, f_test = (float(f) for f in fractions)
    codes = pd.Categorical(np.asarray(groups).astype(str)).codes
    n = codes.size
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n)
    order = shuffled[np.argsort(codes[shuffled], kind="stable")]
    sorted_codes = codes[order]
    rank = np.arange(n) - np.searchsorted(sorted_codes, sorted_codes, side="left")
    sizes = np.bincount(codes, minlength=codes.max(initial=-1) + 1)
    floor = (sizes >= 3).astype(np.int64)
    n_val = np.maximum(np.round(sizes * f_val).astype(np.int64), floor)
    n_test = np.maximum(np.round(sizes * f_test).astype(np.int64), floor)
    n_train = sizes - n_val - n_test
    labels = np.empty(n, dtype=object)
    cut_train, cut_val = n_train[sorted_codes], (n_train + n_val)[sorted_codes]
    labels[order] = np.where(rank < cut_train, "train", np.where(rank < cut_val, "val", "test"))
    return labels


def _split_rest(
    labels: np.ndarray,
    is_heldout: np.ndarray,
    seed: int,
    fractions: Sequence[float],
    stratify_groups: Sequence[str] | np.ndarray | None,
) -> np.ndarray:
    """Held-out cells to test; the others split at random or stratified by ``stratify_groups``."""
    split = np.empty(labels.size, dtype=object)
    split[is_heldout] = "test"
    if stratify_groups is None:
        split[~is_heldout] = split_random(int((~is_heldout).sum()), seed=seed, fractions=fractions)
    else:
        groups = np.asarray(stratify_groups).astype(str)[~is_heldout]
        split[~is_heldout] = split_stratified(groups, seed=seed, fractions=fractions)
    return split


def _with_their_pairs(perturbations: np.ndarray, genes: Iterable[str]) -> list[str]:
    """The labels among ``perturbations`` that carry one of ``genes`` (singles and pairs)."""
    genes = set(genes)
    return sorted(p for p in perturbations.tolist() if genes & set(label_genes(p)))


def split_heldout_perturbations(
    perturbation_labels: Sequence[str] | np.ndarray | pd.Series,
    heldout_fraction: float = 0.2,
    control_label: str = CONTROL_LABEL,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    stratify_groups: Sequence[str] | np.ndarray | None = None,
) -> HeldoutSplit:
    """Split with a fraction of perturbations seen only in test (unseen-perturbation mode).

    ``round(heldout_fraction · n_perturbations)`` perturbations (at least one, at most all but
    one) are drawn with ``numpy.random.default_rng(seed)`` from the sorted perturbation names;
    all their cells go to test, and so do the cells of every combination ``A+B`` that holds a
    held-out single (otherwise the model would see the gene through the pair). The remaining
    cells, controls included, are split with :func:`split_random` (same ``seed`` and
    ``fractions``), or :func:`split_stratified` by ``stratify_groups`` (one group per cell) when
    given, so controls are in every split. The test split is therefore larger than
    ``fractions[2]``.

    Returns
    -------
    :class:`HeldoutSplit` with the labels per cell, the sorted held-out perturbation names and
    the held-out single genes.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    labels = np.asarray(perturbation_labels).astype(str)
    perturbations = np.unique(labels[labels != control_label])
    if perturbations.size < 2:
        raise SplitError(
            f"preprocess.split.mode heldout_perturbations needs at least two perturbations (one to hold "
            f"out, one to train on), and the screen keeps {perturbations.size}: use --split random, or "
            "keep more perturbations (inspect lists what the filters removed)"
        )
    n_heldout = int(np.clip(round(heldout_fraction * perturbations.size), 1, perturbations.size - 1))
    rng = np.random.default_rng(seed)
    drawn = np.sort(rng.choice(perturbations, size=n_heldout, replace=False))
    singles = [p for p in drawn.tolist() if len(label_genes(p)) == 1]
    heldout = sorted(set(drawn.tolist()) | set(_with_their_pairs(perturbations, singles)))
    is_heldout = labels_in(labels, heldout)
    split = _split_rest(labels, is_heldout, seed, fractions, stratify_groups)
    logger.info(
        "held out %d of %d perturbations (%d cells) for test",
        len(heldout),
        perturbations.size,
        is_heldout.sum(),
    )
    return HeldoutSplit(labels=split, heldout=heldout)


def split_heldout_combinations(
    perturbation_labels: Sequence[str] | np.ndarray | pd.Series,
    heldout_fraction: float = 0.2,
    control_label: str = CONTROL_LABEL,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    stratify_groups: Sequence[str] | np.ndarray | None = None,
    unseen_single: bool = False,
) -> HeldoutSplit:
    """Split with a fraction of the ``A+B`` combinations seen only in test.

    The eligible pairs are those whose every single has cells in the screen. ``round(heldout_fraction
    · n_eligible)`` of them (at least one) are drawn with ``numpy.random.default_rng(seed)``;
    all their cells go to test and their singles stay in the ordinary split, so the model sees
    ``A`` and ``B`` but never ``A+B``. With ``unseen_single``, one single of every held-out pair
    (drawn from the same generator) is held out too, with every other pair that holds it: the
    pair must then be predicted from one seen single and one unseen gene. Other cells are split
    as in :func:`split_heldout_perturbations`.

    Raises
    ------
    SplitError
        The screen has no eligible pair (naming pairs whose singles are missing).
    """
    if not 0.0 < heldout_fraction <= 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1], got {heldout_fraction}")
    labels = np.asarray(perturbation_labels).astype(str)
    perturbations = np.unique(labels[labels != control_label])
    present = set(perturbations.tolist())
    pairs = [p for p in perturbations.tolist() if len(label_genes(p)) > 1]
    eligible = [p for p in pairs if set(label_genes(p)) <= present]
    if not eligible:
        lacking = [p for p in pairs if not set(label_genes(p)) <= present]
        found = (
            f"its {len(pairs)} combinations lack singles: "
            + ", ".join(
                f"{p} (no {'/'.join(sorted(set(label_genes(p)) - present))} cells)" for p in lacking[:5]
            )
            if pairs
            else "it has no combination labels (A+B)"
        )
        raise SplitError(
            f"preprocess.split.mode heldout_combinations needs A+B combinations whose singles were "
            f"measured too, and {found}. Use mode heldout_perturbations or random for this screen."
        )
    if len(eligible) < len(pairs):
        logger.info(
            "%d combinations lack a single in the screen and stay in the ordinary split",
            len(pairs) - len(eligible),
        )
    n_heldout = int(np.clip(round(heldout_fraction * len(eligible)), 1, len(eligible)))
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(np.asarray(eligible, dtype=object), size=n_heldout, replace=False).tolist())
    unseen: list[str] = []
    if unseen_single:
        unseen = sorted({label_genes(p)[int(rng.integers(2))] for p in chosen})
    heldout = sorted(set(chosen) | set(unseen) | set(_with_their_pairs(perturbations, unseen)))
    is_heldout = labels_in(labels, heldout)
    split = _split_rest(labels, is_heldout, seed, fractions, stratify_groups)
    missing = sorted(
        {g for p in chosen for g in label_genes(p) if g not in unseen}
        - set(labels[split == "train"].tolist())
    )
    if missing:
        raise SplitError(
            f"held-out combinations need their singles in training, and {missing[:5]} got no training "
            "cells under this split; set preprocess.split.unseen_single: true to test them as unseen, "
            "or raise the singles' cell counts."
        )
    logger.info(
        "held out %d of %d combinations (%d cells; unseen singles %s) for test",
        len(chosen),
        len(pairs),
        is_heldout.sum(),
        unseen or "none",
    )
    return HeldoutSplit(labels=split, heldout=heldout)


def validate_splits(
    split_labels: Sequence[str] | np.ndarray | pd.Series,
    perturbation_labels: Sequence[str] | np.ndarray | pd.Series,
    control_label: str = CONTROL_LABEL,
    heldout: Iterable[str] = (),
    batches: Sequence[str] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Check split labels before pairing and training; return cells per perturbation × split.

    With ``batches``, every batch must have control cells in every split where it has
    perturbed cells (pairing and ATEs stay within a batch).

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
    if batches is not None:
        batch = np.asarray(batches).astype(str)
        frame = pd.DataFrame({"batch": batch, "split": split, "control": perturbation == control_label})
        has = frame.groupby(["batch", "split"])["control"].agg(["any", "all"])
        lacking = has.index[~has["any"]].tolist()
        if lacking:
            problems.append(
                "no control cells in "
                + ", ".join(f"batch {b!r} split {s!r}" for b, s in lacking[:5])
                + " (pairing and ATEs use the controls of the cell's own batch: every batch needs controls)"
            )
    if problems:
        raise SplitError(
            "invalid splits: " + "; ".join(problems) + ". Check preprocess.split (mode, fractions, "
            "heldout_fraction) and the screen's control cells (inspect shows them per split)"
        )

    perturbed = counts.drop(index=[control_label, *heldout], errors="ignore")
    missing = [str(p) for p in perturbed.index[perturbed["train"] == 0]]
    if missing:
        logger.warning(
            "%d perturbation(s) have no training cells (the model cannot learn them): %s",
            len(missing),
            missing[:10],
        )
    return counts
