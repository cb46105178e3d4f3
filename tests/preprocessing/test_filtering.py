"""Perturbation filters: strong perturbations, knockdown, minimum cells, and their composition."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gpo_vae.preprocessing import filtering
from gpo_vae.preprocessing.filtering import PerturbationFilterConfig, PerturbationFilterError

CTRL = "non-targeting"


def _cells(
    labels: list[str], a: list[float], b: list[float], lib: list[float], sparse: bool = True
) -> ad.AnnData:
    """Counts over genes A, B and FILL, where FILL tops each cell up to library size ``lib``."""
    a_, b_, lib_ = (np.asarray(v, dtype=np.float32) for v in (a, b, lib))
    X = np.column_stack([a_, b_, lib_ - a_ - b_])
    return ad.AnnData(
        sp.csr_matrix(X) if sparse else X,
        obs=pd.DataFrame({"gene": pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=["A", "B", "FILL"]),
    )


def _knockdown_case(sparse: bool = True) -> ad.AnnData:
    # controls, library 100: A ×100 → 100,100,200,…,900 (10th pct 100); B → 200,…,1100 (10th pct 290)
    labels = [CTRL] * 10
    a = [1, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    b = list(range(2, 12))
    lib = [100] * 10
    # A cells: normalised A = 0, 100 (= threshold: kept), 200, 100 (A=2 but library 200), 500
    labels += ["A"] * 5
    a += [0, 1, 2, 2, 5]
    b += [5] * 5
    lib += [100, 100, 100, 200, 100]
    # B cells: normalised B = 300, 500, 1000, all above 290
    labels += ["B"] * 3
    a += [5] * 3
    b += [3, 5, 10]
    lib += [100] * 3
    # U: target not measured
    labels += ["U"] * 4
    a += [5] * 4
    b += [5] * 4
    lib += [100] * 4
    return _cells(labels, a, b, lib, sparse=sparse)


@pytest.mark.parametrize("sparse", [True, False])
def test_knockdown_keeps_cells_below_control_percentile(sparse: bool) -> None:
    adata = _knockdown_case(sparse)
    mask, record = filtering.knockdown_filter(adata, percentile=10.0)
    expected = [True] * 10 + [True, True, False, True, False] + [False] * 3 + [True] * 4
    assert mask.tolist() == expected
    assert record["control_thresholds"] == pytest.approx({"A": 100.0, "B": 290.0})
    assert record["removed_perturbations"] == ["B"]
    assert record["n_unmeasured_targets"] == 1 and record["unmeasured_targets"] == ["U"]
    assert (record["n_cells_before"], record["n_cells_after"], record["n_cells_removed"]) == (22, 17, 5)
    assert (record["n_perturbations_before"], record["n_perturbations_after"]) == (3, 2)


def test_knockdown_respects_obs_mask_for_cells_and_thresholds() -> None:
    adata = _knockdown_case()
    considered = np.ones(adata.n_obs, dtype=bool)
    considered[[0, 1]] = False  # the two controls with A = 1 → A's 10th percentile is now 270
    considered[10] = False  # the first A cell is out before this filter
    mask, record = filtering.knockdown_filter(adata, obs_mask=considered)
    assert record["control_thresholds"]["A"] == pytest.approx(270.0)
    assert not mask[[0, 1, 10]].any()
    assert mask[10:15].tolist() == [False, True, True, True, False]  # 100, 200 and 100 ≤ 270
    assert record["n_cells_before"] == adata.n_obs - 3


def test_min_cells_boundary_drops_exactly_min_cells() -> None:
    labels = [CTRL] * 5 + ["P100"] * 100 + ["P101"] * 101
    adata = _cells(labels, [0] * len(labels), [0] * len(labels), [10] * len(labels))
    mask, record = filtering.min_cells_filter(adata, min_cells=100)
    kept = set(adata.obs["gene"][mask])
    assert kept == {CTRL, "P101"}  # controls kept whatever their number
    assert record["removed_perturbations"] == ["P100"]
    assert record["n_cells_removed"] == 100
    with pytest.raises(PerturbationFilterError, match=r"min_cells.*101.*2 perturbations"):
        filtering.min_cells_filter(adata, min_cells=101)


def test_strong_filter_counts_weak_and_missing_perturbations(caplog: pytest.LogCaptureFixture) -> None:
    labels = [CTRL] * 2 + ["S1"] * 2 + ["S2"] * 2 + ["W"] * 2 + ["M"] * 3
    adata = _cells(labels, [1] * len(labels), [1] * len(labels), [10] * len(labels))
    strong = ["S1", "S2", "S3"]
    known = ["S1", "S2", "W", "Z"]  # M has no summary-statistics row
    with caplog.at_level(logging.WARNING, logger=filtering.__name__):
        mask, record = filtering.filter_strong_perturbations(adata, strong, known)
    assert set(adata.obs["gene"][mask]) == {CTRL, "S1", "S2"}
    assert record["n_missing_from_summary"] == 1 and record["missing_from_summary"] == ["M"]
    assert record["not_strong"] == ["W"] and record["strong_not_in_data"] == ["S3"]
    assert record["removed_perturbations"] == ["M", "W"]
    assert (record["n_perturbations_before"], record["n_perturbations_after"]) == (4, 2)
    assert "1 perturbations have no summary-statistics row (dropped): M" in caplog.text

    mask, record = filtering.filter_strong_perturbations(adata, strong, known, keep_unknown=True)
    assert set(adata.obs["gene"][mask]) == {CTRL, "S1", "S2", "M"}
    assert record["n_missing_from_summary"] == 1
    with pytest.raises(PerturbationFilterError, match="strong_perturbations"):
        filtering.filter_strong_perturbations(adata, ["S3"], known)


def test_apply_filters_in_design_order() -> None:
    rng = np.random.default_rng(0)
    groups = {CTRL: 120, "A": 130, "B": 105, "U": 101, "W": 150, "M": 150}
    labels = np.concatenate([[g] * n for g, n in groups.items()])
    a = rng.integers(5, 15, size=labels.size).astype(float)
    b = rng.integers(5, 15, size=labels.size).astype(float)
    a[labels == "A"] = np.r_[np.zeros(110), np.full(20, 30.0)]  # 110 knocked down, 20 escaped
    b[labels == "B"] = np.r_[np.zeros(95), np.full(10, 30.0)]  # 95 left: not more than 100
    adata = _cells(labels.tolist(), a.tolist(), b.tolist(), [100] * labels.size)
    config = {"min_cells": 100, "knockdown_percentile": 10.0}
    filtered, records = filtering.apply_perturbation_filters(
        adata, ["A", "B", "U"], ["A", "B", "U", "W"], config
    )
    assert [r["filter"] for r in records] == ["strong_perturbations", "knockdown", "min_cells"]
    assert records[0]["removed_perturbations"] == ["M", "W"]
    assert records[1]["n_cells_removed"] == 30 and records[1]["unmeasured_targets"] == ["U"]
    assert records[2]["removed_perturbations"] == ["B"]
    assert filtered.obs["gene"].value_counts().to_dict() == {CTRL: 120, "A": 110, "U": 101}
    assert list(filtered.obs["gene"].cat.categories) == sorted([CTRL, "A", "U"])
    assert filtered.n_obs == 331 and adata.n_obs == 756  # a copy; the input is unchanged
    with pytest.raises(ValueError, match="unknown perturbation-filter settings"):
        PerturbationFilterConfig.from_dict({"min_cell": 3})
    assert PerturbationFilterConfig.from_dict(None).to_dict()["min_degs"] == 50
