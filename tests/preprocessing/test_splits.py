"""Splits (design §5): the published random scheme, held-out perturbations, validation."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from gpo_vae.preprocessing.splits import (
    SplitError,
    split_heldout_combinations,
    split_heldout_perturbations,
    split_random,
    validate_splits,
)

CONTROL = "non-targeting"


@pytest.fixture
def split_labels_case() -> np.ndarray:
    """10 perturbations × 30 cells and 120 controls, shuffled."""
    rng = np.random.default_rng(7)
    labels = np.array([CONTROL] * 120 + [f"G{i}" for i in range(10) for _ in range(30)])
    return rng.permutation(labels)


def test_split_random_has_published_sizes() -> None:
    labels = split_random(1000)
    counts = {name: int((labels == name).sum()) for name in ("train", "val", "test")}
    assert counts == {"train": 640, "val": 160, "test": 200}


def test_split_random_equals_direct_sklearn_computation() -> None:
    n, seed = 537, 3
    rest, test = train_test_split(np.arange(n), train_size=0.8, random_state=seed)
    train, val = train_test_split(rest, train_size=0.8, random_state=seed)
    labels = split_random(n, seed=seed)
    assert set(np.flatnonzero(labels == "train")) == set(train)
    assert set(np.flatnonzero(labels == "val")) == set(val)
    assert set(np.flatnonzero(labels == "test")) == set(test)


def test_split_random_is_deterministic_per_seed() -> None:
    np.testing.assert_array_equal(split_random(300, seed=1), split_random(300, seed=1))
    assert np.any(split_random(300, seed=1) != split_random(300, seed=2))


def test_split_random_rejects_bad_fractions() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        split_random(100, fractions=(0.5, 0.2, 0.2))


def test_heldout_perturbations_only_in_test_and_controls_everywhere(split_labels_case: np.ndarray) -> None:
    labels, heldout = split_heldout_perturbations(split_labels_case, heldout_fraction=0.2, seed=0)
    assert len(heldout) == 2 and heldout == sorted(heldout) and CONTROL not in heldout
    in_heldout = np.isin(split_labels_case, heldout)
    assert np.all(labels[in_heldout] == "test")
    for name in ("train", "val", "test"):
        assert np.any((labels == name) & (split_labels_case == CONTROL)), name
    # every other perturbation keeps training cells
    seen = set(split_labels_case[(labels == "train") & ~in_heldout]) - {CONTROL}
    assert seen == set(np.unique(split_labels_case)) - {CONTROL, *heldout}
    validate_splits(labels, split_labels_case, CONTROL, heldout=heldout)


def test_heldout_split_is_deterministic_per_seed(split_labels_case: np.ndarray) -> None:
    first = split_heldout_perturbations(split_labels_case, seed=4)
    second = split_heldout_perturbations(split_labels_case, seed=4)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.heldout == second.heldout


def test_validate_splits_names_an_empty_split() -> None:
    perturbations = np.array([CONTROL, "A", CONTROL, "A"])
    with pytest.raises(ValueError, match=r"no cells in split\(s\) \['val'\]"):
        validate_splits(np.array(["train", "train", "test", "test"]), perturbations)


def test_validate_splits_names_splits_without_controls() -> None:
    perturbations = np.array([CONTROL, "A", "A", "A"])
    with pytest.raises(ValueError, match=r"control cells in split\(s\) \['val', 'test'\]"):
        validate_splits(np.array(["train", "train", "val", "test"]), perturbations)


def test_validate_splits_rejects_leaked_heldout_perturbation() -> None:
    perturbations = np.array([CONTROL, CONTROL, CONTROL, "A", "B"])
    splits = np.array(["train", "val", "test", "train", "test"])
    with pytest.raises(ValueError, match="held-out perturbations with cells in train/val"):
        validate_splits(splits, perturbations, heldout=["A"])


def test_validate_splits_counts_and_warns_on_perturbation_missing_from_train(
    caplog: pytest.LogCaptureFixture,
) -> None:
    perturbations = np.array([CONTROL, CONTROL, CONTROL, "A", "B", "B"])
    splits = np.array(["train", "val", "test", "train", "test", "test"])
    with caplog.at_level(logging.WARNING, logger="gpo_vae.preprocessing.splits"):
        counts = validate_splits(splits, perturbations)
    assert counts.loc["B"].tolist() == [0, 0, 2]
    assert counts.loc[CONTROL].tolist() == [1, 1, 1]
    assert "no training cells" in caplog.text and "['B']" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gpo_vae.preprocessing.splits"):
        validate_splits(splits, perturbations, heldout=["B"])
    assert "no training cells" not in caplog.text


def test_stratified_split_cuts_every_group_in_the_fractions() -> None:
    from gpo_vae.preprocessing.splits import split_stratified

    groups = np.array(["A"] * 100 + ["B"] * 10 + ["C"] * 3)
    labels = split_stratified(groups, seed=0)
    counts = pd.crosstab(groups, labels)
    assert counts.loc["A"].to_dict() == {"test": 20, "train": 64, "val": 16}
    assert counts.loc["B"].to_dict() == {"test": 2, "train": 6, "val": 2}
    assert (counts.loc["C"] == 1).all()  # a group of three has a cell in every split
    np.testing.assert_array_equal(labels, split_stratified(groups, seed=0))
    assert np.any(labels != split_stratified(groups, seed=1))


def test_too_few_test_controls_are_topped_up_from_train_or_refused() -> None:
    from gpo_vae.preprocessing.split_plan import SplitError, ensure_test_controls

    labels = np.array([CONTROL] * 200 + ["G"] * 100)
    split = np.array(["train"] * 190 + ["test"] * 10 + ["train"] * 80 + ["test"] * 20, dtype=object)
    moved_split, moved, scarce = ensure_test_controls(split, labels, 50, CONTROL)
    assert moved == {"all": 40} and scarce == {}
    assert ((labels == CONTROL) & (moved_split == "test")).sum() == 50
    assert (moved_split[labels != CONTROL] == split[labels != CONTROL]).all()  # only controls move
    with pytest.raises(SplitError, match=r"holds 10 control cells.*at least 120.*min_test_controls"):
        ensure_test_controls(split, labels, 120, CONTROL, scarce="stop")
    batches = np.array(["X", "Y"] * 150)
    _, moved, _ = ensure_test_controls(split, labels, 20, CONTROL, batches=batches)
    assert set(moved) == {"X", "Y"}


def test_scarce_controls_are_shared_equally_between_train_and_test_by_default() -> None:
    """100 controls cannot give train and test 50 each: the default balances them (42/42 of a
    64/16/20 split) and reports the batch, only train controls move, and val keeps its own."""
    from gpo_vae.preprocessing.split_plan import ensure_test_controls
    from gpo_vae.preprocessing.splits import split_stratified

    labels = np.array([CONTROL] * 100 + ["G"] * 100)
    split = split_stratified(labels, seed=0)
    before = pd.crosstab(labels, split).loc[CONTROL].to_dict()
    assert before == {"test": 20, "train": 64, "val": 16}
    new, moved, scarce = ensure_test_controls(split, labels, 50, CONTROL)
    after = pd.crosstab(labels, new).loc[CONTROL].to_dict()
    assert after == {"test": 42, "train": 42, "val": 16}
    assert moved == {"all": 22} and scarce == {"all": 42}
    was_test = split == "test"
    assert (new[was_test] == "test").all()  # nothing ever leaves test
    assert (new[labels != CONTROL] == split[labels != CONTROL]).all()
    # per batch: a batch with enough controls is topped up, a scarce one balanced
    batch = np.array(["big"] * 80 + ["small"] * 20 + ["big"] * 100)
    groups = np.char.add(np.char.add(labels, "|"), batch)
    split2 = split_stratified(groups, seed=0)
    new2, _, scarce2 = ensure_test_controls(split2, labels, 20, CONTROL, batches=batch)
    test_controls = pd.Series(batch[(labels == CONTROL) & (new2 == "test")]).value_counts().to_dict()
    train_small = int(((labels == CONTROL) & (batch == "small") & (new2 == "train")).sum())
    assert test_controls == {"big": 20, "small": scarce2["small"]}
    assert set(scarce2) == {"small"} and scarce2["small"] <= train_small <= scarce2["small"] + 1


def test_validate_splits_needs_controls_in_every_batch_of_every_split() -> None:
    labels = np.array([CONTROL] * 6 + ["G"] * 6)
    split = np.array(["train", "val", "test"] * 4)
    batches = np.array(["X"] * 3 + ["Y"] * 3 + ["X"] * 3 + ["Z"] * 3)
    with pytest.raises(ValueError, match="no control cells in batch 'Z' split 'test'"):
        validate_splits(split, labels, CONTROL, batches=batches)


@pytest.fixture
def pair_labels_case() -> np.ndarray:
    """8 singles and 6 pairs of them × 30 cells, 120 controls, and one pair whose single is absent."""
    rng = np.random.default_rng(3)
    singles = [f"G{i}" for i in range(8)]
    pairs = ["G0+G1", "G0+G2", "G2+G3", "G4+G5", "G5+G6", "G6+G7", "G1+X9"]
    labels = np.array([CONTROL] * 120 + [label for label in singles + pairs for _ in range(30)])
    return rng.permutation(labels)


def test_heldout_combinations_keep_their_singles_in_training(pair_labels_case: np.ndarray) -> None:
    result = split_heldout_combinations(pair_labels_case, heldout_fraction=0.5, seed=0)
    # G1+X9 is not eligible (X9 has no cells of its own): 3 of the 6 eligible pairs are held out
    assert len(result.heldout) == 3 and all("+" in p for p in result.heldout)
    assert "G1+X9" not in result.heldout and result.unseen_singles == []
    labels = result.labels
    assert np.all(labels[np.isin(pair_labels_case, result.heldout)] == "test")
    trained = set(pair_labels_case[labels == "train"])
    for pair in result.heldout:
        assert set(pair.split("+")) <= trained, pair
    validate_splits(labels, pair_labels_case, CONTROL, heldout=result.heldout)
    again = split_heldout_combinations(pair_labels_case, heldout_fraction=0.5, seed=0)
    np.testing.assert_array_equal(again.labels, labels)
    other = split_heldout_combinations(pair_labels_case, heldout_fraction=0.5, seed=5)
    assert other.heldout != result.heldout or np.any(other.labels != labels)


def test_heldout_combinations_with_an_unseen_single_hold_it_out_everywhere(
    pair_labels_case: np.ndarray,
) -> None:
    result = split_heldout_combinations(pair_labels_case, heldout_fraction=0.34, seed=1, unseen_single=True)
    pairs = [p for p in result.heldout if "+" in p]
    unseen = result.unseen_singles
    assert unseen and len(unseen) <= 2
    # every pair carrying an unseen gene is held out too, and no training cell carries the gene
    for label in np.unique(pair_labels_case):
        if set(label.split("+")) & set(unseen):
            assert label in result.heldout, label
    trained = set(pair_labels_case[result.labels == "train"])
    assert not {g for label in trained for g in label.split("+")} & set(unseen)
    for pair in pairs:
        assert set(pair.split("+")) & set(unseen) or set(pair.split("+")) <= trained


def test_heldout_combinations_refuse_a_screen_without_usable_pairs() -> None:
    labels = np.array([CONTROL] * 60 + ["A"] * 20 + ["A+B"] * 20)
    with pytest.raises(SplitError, match=r"A\+B \(no B cells\)"):
        split_heldout_combinations(labels, seed=0)
    with pytest.raises(SplitError, match="no combination labels"):
        split_heldout_combinations(np.array([CONTROL] * 60 + ["A"] * 20 + ["B"] * 20), seed=0)


def test_heldout_perturbations_hold_out_the_pairs_of_a_heldout_gene(pair_labels_case: np.ndarray) -> None:
    for seed in range(6):
        result = split_heldout_perturbations(pair_labels_case, heldout_fraction=0.2, seed=seed)
        trained = {g for label in set(pair_labels_case[result.labels != "test"]) for g in label.split("+")}
        assert not trained & set(result.unseen_singles), seed


def test_every_split_keeps_its_control_floor_and_fewer_controls_stop_with_the_batch_named():
    """The split-half replicate gives each half of the test set its own controls, validation needs
    one, training two: a batch of 4 controls ended in a traceback after training (issue 34)."""
    from gpo_vae.preprocessing.split_plan import (
        CONTROL_FLOORS,
        MIN_CONTROLS,
        SplitError,
        ensure_test_controls,
    )

    labels = np.array([CONTROL] * 5 + ["A"] * 20 + [CONTROL] * 9 + ["B"] * 20)
    batches = np.array(["x"] * 25 + ["y"] * 29)
    # every control of batch x drawn into validation, of y into training: the floors move them
    split = np.array(
        ["val"] * 5 + ["train"] * 10 + ["test"] * 10 + ["train"] * 9 + ["train"] * 10 + ["test"] * 10
    )
    new, _, _ = ensure_test_controls(split, labels, 50, CONTROL, batches=batches)
    for name in ("x", "y"):
        controls = (labels == CONTROL) & (batches == name)
        for part, floor in CONTROL_FLOORS.items():
            assert int((controls & (new == part)).sum()) >= floor, (name, part)
    assert not ((split == "test") & (new != "test")).any(), "no test cell ever leaves test"
    few = labels.copy()
    few[:2] = "A"  # batch x keeps 3 control cells
    with pytest.raises(
        SplitError, match=rf"too few control cells: 3 in batch 'x'; a run needs at least {MIN_CONTROLS}"
    ):
        ensure_test_controls(split, few, 50, CONTROL, batches=batches)
