"""The split a screen gets (design §5): its mode, the control cells every split needs, and the
split a published file ships.

:func:`make_splits` draws the split of ``preprocess.split`` (:mod:`gpo_vae.preprocessing.splits`)
and then :func:`ensure_test_controls` gives the test split enough control cells for the ATE and
every split its :data:`CONTROL_FLOORS`; :func:`screen_splits` takes a published file's own split
instead (:mod:`gpo_vae.preprocessing.published`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import anndata as ad
import numpy as np

from gpo_vae.data.contract import CONTROL_LABEL, control_cells_by_batch
from gpo_vae.preprocessing.config import PreprocessConfig
from gpo_vae.preprocessing.published import ShippedProcessing, shipped_split
from gpo_vae.preprocessing.splits import (
    SplitError,
    split_heldout_combinations,
    split_heldout_perturbations,
    split_random,
    split_stratified,
)

logger = logging.getLogger(__name__)


class TestControls(NamedTuple):
    """What :func:`ensure_test_controls` did: the new split, controls moved to test per batch,
    and the batches whose test split holds fewer than the minimum (batch → test controls)."""

    split: np.ndarray
    moved: dict[str, int]
    scarce: dict[str, int]


#: Control cells every run needs per batch, per split: two in test (the split-half replicate
#: gives each half its own controls), one in validation, two in training (pairing and the basal
#: state need some); :data:`MIN_CONTROLS` in all.
CONTROL_FLOORS = {"test": 2, "val": 1, "train": 2}
MIN_CONTROLS = sum(CONTROL_FLOORS.values())
#: Where a split short of its floor takes control cells from (never from test: no test cell is
#: ever seen in training or validation).
_DONORS = {"test": ("train", "val"), "val": ("train",), "train": ("val",)}


def too_few_controls(counts: dict[str, int], batched: bool) -> SplitError | None:
    """The error for batches (``all`` without batches) holding fewer than :data:`MIN_CONTROLS`
    control cells (batch → control cells), or None."""
    short = {name: n for name, n in sorted(counts.items()) if n < MIN_CONTROLS}
    if not short:
        return None
    where = (
        ", ".join(f"{n} in batch {name!r}" for name, n in short.items())
        if batched
        else f"{short['all']} in all"
    )
    fix = (
        "add control cells to those batches, remove their cells from the file, or leave --batch-key out "
        "(pairing and ATEs use a batch's own controls)"
        if batched
        else "add control cells, or check --control-label (inspect shows the labels read)"
    )
    return SplitError(
        f"too few control cells: {where}; a run needs at least {MIN_CONTROLS} per batch (2 in test: "
        f"the split-half replicate gives each half its own; 1 in validation; 2 in training): {fix}"
    )


def _control_floors(split: np.ndarray, controls: np.ndarray, rng: np.random.Generator) -> None:
    """Move control cells (in place) until every split holds its :data:`CONTROL_FLOORS`, taking
    them from the splits :data:`_DONORS` allows, each kept at its own floor."""
    for part, floor in CONTROL_FLOORS.items():
        for donor in _DONORS[part]:
            short = floor - int((controls & (split == part)).sum())
            spare = np.flatnonzero(controls & (split == donor))
            take = min(max(short, 0), spare.size - CONTROL_FLOORS[donor])
            if take > 0:
                split[rng.choice(spare, take, replace=False)] = part


def ensure_test_controls(
    split: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    minimum: int,
    control_label: str = CONTROL_LABEL,
    batches: Sequence[str] | np.ndarray | None = None,
    seed: int = 0,
    scarce: str = "balance",
) -> TestControls:
    """At least ``minimum`` control cells in test, per batch, where the screen allows it.

    The ATE of every test perturbation is measured against the test controls of its batch; with
    a few of them it is mostly noise. A batch whose test split holds fewer gets control cells
    moved from train (drawn with ``seed``) while train keeps at least as many as test. A batch
    with too few controls for ``minimum`` in both (a screen with ~100 controls) gets, with
    ``scarce="balance"``, as many moved as keep train and test equal, and is reported in
    ``scarce``; with ``scarce="stop"`` it raises :class:`SplitError` saying how many controls it
    has and what to change. Cells only ever move from train to test, so no test cell is seen in
    training. Every batch also keeps the :data:`CONTROL_FLOORS` of each split (controls move from
    train or validation, never out of test); a batch with fewer than :data:`MIN_CONTROLS` control
    cells raises :class:`SplitError` naming it and the fix.
    """
    if scarce not in ("balance", "stop"):
        raise ValueError(f"scarce must be balance or stop, got {scarce!r}")
    split = np.asarray(split, dtype=object).copy()
    labels = np.asarray(labels).astype(str)
    batch = (
        np.full(labels.size, "all", dtype=object) if batches is None else np.asarray(batches, dtype=object)
    )
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    names = sorted(set(batch.tolist()))
    error = too_few_controls(control_cells_by_batch(labels, batches, control_label), batches is not None)
    if error is not None:
        raise error
    moved: dict[str, int] = {}
    short: dict[str, int] = {}
    for name in names:
        controls = (labels == control_label) & (batch == name)
        in_test = int((controls & (split == "test")).sum())
        if in_test >= minimum:
            _control_floors(split, controls, rng)
            continue
        train = np.flatnonzero(controls & (split == "train"))
        need = minimum - in_test
        where = "" if batches is None else f" of batch {name!r}"
        if train.size - need < minimum:
            if scarce == "stop":
                raise SplitError(
                    f"the test split holds {in_test} control cells{where}; the ATE needs at least {minimum} "
                    f"(preprocess.split.min_test_controls), and the screen has {int(controls.sum())} control "
                    f"cells{where} in all, too few to give train and test {minimum} each. Set "
                    "preprocess.split.scarce_controls: balance to share them equally, or lower "
                    "preprocess.split.min_test_controls."
                )
            need = max(0, (train.size - in_test) // 2)
            short[str(name)] = in_test + need
            logger.warning(
                "only %d control cells%s in all: test gets %d of them (train keeps %d); fewer than "
                "min_test_controls %d, so the ATEs of this batch are noisy",
                int(controls.sum()),
                where,
                in_test + need,
                train.size - need,
                minimum,
            )
        if need:
            split[rng.choice(train, need, replace=False)] = "test"
            moved[str(name)] = int(need)
            logger.info(
                "moved %d control cells%s from train to test (min_test_controls %d)", need, where, minimum
            )
        _control_floors(split, controls, rng)
    return TestControls(split, moved, short)


def scarce_controls_note(scarce: dict[str, int], minimum: int) -> str:
    """One sentence on the batches whose test split holds fewer than ``minimum`` controls."""
    where = (
        f"{scarce['all']} control cells"
        if list(scarce) == ["all"]
        else "control cells " + ", ".join(f"{n} in {name!r}" for name, n in sorted(scarce.items()))
    )
    return (
        f"the test split holds {where}, fewer than the {minimum} "
        "preprocess.split.min_test_controls asks for: the screen has too few to give train and test "
        "that many each, so they were shared equally; every held-out ATE is measured against these "
        "controls (none seen in training), and its control mean is noisy"
    )


def make_splits(
    labels: np.ndarray, batches: np.ndarray | None, config: PreprocessConfig, control_label: str
) -> tuple[np.ndarray, list[str], list[str], dict[str, dict[str, int]]]:
    """(split per cell, held-out labels, unseen single genes, test controls: ``moved`` to test
    and ``scarce`` batches with fewer than ``min_test_controls``, each per batch)."""
    split_config = config.split
    groups = (
        labels if batches is None else np.char.add(np.char.add(labels.astype(str), "|"), batches.astype(str))
    )
    if split_config.mode == "random":
        if split_config.stratify:
            split = split_stratified(groups, config.seed, split_config.fractions)
        else:
            split = split_random(len(labels), config.seed, split_config.fractions)
        heldout: list[str] = []
        unseen: list[str] = []
    else:
        stratify = groups if split_config.stratify else None
        args = (labels, split_config.heldout_fraction, control_label, config.seed, split_config.fractions)
        if split_config.mode == "heldout_combinations":
            result = split_heldout_combinations(
                *args, stratify_groups=stratify, unseen_single=split_config.unseen_single
            )
        else:
            result = split_heldout_perturbations(*args, stratify_groups=stratify)
        split, heldout, unseen = result.labels, sorted(result.heldout), list(result.unseen_singles)
    controls = ensure_test_controls(
        split,
        labels,
        split_config.min_test_controls,
        control_label,
        batches,
        config.seed,
        split_config.scarce_controls,
    )
    return controls.split, heldout, unseen, {"moved": controls.moved, "scarce": controls.scarce}


def screen_splits(
    adata: ad.AnnData,
    labels: np.ndarray,
    batches: np.ndarray | None,
    config: PreprocessConfig,
    shipped: ShippedProcessing | None,
) -> tuple[np.ndarray, list[str], list[str], dict[str, dict[str, int]], str]:
    """:func:`make_splits`, or for a file kept as published under ``split.mode: random`` the
    split its authors trained on: the file's own split column, else their rule (two
    ``train_test_split`` calls, seed ``config.seed``), with no control moved. The last item says which."""
    if shipped is None or config.split.mode != "random":
        split, heldout, unseen, controls = make_splits(labels, batches, config, CONTROL_LABEL)
        return split, heldout, unseen, controls, "drawn (preprocess.split)"
    none: dict[str, dict[str, int]] = {"moved": {}, "scarce": {}}
    split = shipped_split(adata.obs, shipped)
    if split is not None:
        return split, [], [], none, f"as shipped in obs[{shipped.split_column!r}]"
    split = split_random(adata.n_obs, config.seed, config.split.fractions)
    return (
        split,
        [],
        [],
        none,
        f"the authors' rule: random by cell, seed {config.seed} (the file has no split)",
    )


def test_controls_by_batch(
    is_control: np.ndarray, split: np.ndarray, batches: np.ndarray | None
) -> dict[str, int]:
    """Control cells in test per batch (``all`` for a screen of one batch)."""
    test = is_control & (split == "test")
    if batches is None:
        return {"all": int(test.sum())}
    names, counts = np.unique(batches[test], return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts, strict=True)}
