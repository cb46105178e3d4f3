"""Perturbation filters by modality: strong perturbations, on-target cells, minimum cells, the table."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gpo_vae.data.summary_stats_io import (
    CELLS_COLUMN,
    DEGS_COLUMN,
    IS_CONTROL_COLUMN,
    KNOCKDOWN_COLUMN,
    PERTURBATION_COLUMN,
)
from gpo_vae.preprocessing import filtering
from gpo_vae.preprocessing.filter_table import format_table, resolve_modality
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
def test_crispri_keeps_cells_below_control_percentile(sparse: bool) -> None:
    adata = _knockdown_case(sparse)
    mask, record = filtering.on_target_filter(adata, "crispri", percentile=10.0)
    expected = [True] * 10 + [True, True, False, True, False] + [False] * 3 + [True] * 4
    assert mask.tolist() == expected
    assert record["control_thresholds"] == pytest.approx({"A": 100.0, "B": 290.0})
    assert record["removed_perturbations"] == ["B"]
    assert record["n_unmeasured_targets"] == 1 and record["unmeasured_targets"] == ["U"]
    assert (record["n_cells_before"], record["n_cells_after"], record["n_cells_removed"]) == (22, 17, 5)
    assert (record["n_perturbations_before"], record["n_perturbations_after"]) == (3, 2)


def test_crispra_keeps_cells_above_the_mirrored_percentile_and_knockout_keeps_all() -> None:
    adata = _knockdown_case()
    mask, record = filtering.on_target_filter(adata, "crispra", percentile=10.0)
    # controls' 90th percentiles: A 810, B 1010; only B's cell at 1000 … none above → B removed,
    # A's cells (≤ 500) all below → A removed too
    thresholds = record["control_thresholds"]
    assert thresholds["A"] == pytest.approx(
        np.percentile([100, 100, 200, 300, 400, 500, 600, 700, 800, 900], 90)
    )
    assert not mask[10:18].any() and mask[18:].all() and mask[:10].all()
    mask, record = filtering.on_target_filter(adata, "knockout")
    assert mask.all() and record["control_thresholds"] == {}


def test_a_combination_needs_every_measured_target_on_target() -> None:
    labels = [CTRL] * 10 + ["A+B"] * 3 + ["A+U"] * 2
    a = [1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 5, 0, 5]
    b = [*list(range(2, 12)), 1, 9, 1, 5, 5]
    adata = _cells(labels, a, b, [100] * len(labels))
    mask, record = filtering.on_target_filter(adata, "crispri")
    # A+B: both down / B up / A up; A+U: U is not measured, A decides
    assert mask[10:].tolist() == [True, False, False, True, False]
    assert record["unmeasured_targets"] == ["U"]


def test_min_cells_keeps_exactly_min_cells() -> None:
    labels = [CTRL] * 5 + ["P99"] * 99 + ["P100"] * 100
    adata = _cells(labels, [0] * len(labels), [0] * len(labels), [10] * len(labels))
    mask, record = filtering.min_cells_filter(adata, min_cells=100)
    assert set(adata.obs["gene"][mask]) == {CTRL, "P100"}  # controls kept whatever their number
    assert record["removed_perturbations"] == ["P99"] and record["n_cells_removed"] == 99


def _stats(rows: list[tuple[str, float, float, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[PERTURBATION_COLUMN, DEGS_COLUMN, KNOCKDOWN_COLUMN, CELLS_COLUMN])
    frame[IS_CONTROL_COLUMN] = frame[PERTURBATION_COLUMN] == CTRL
    return frame


def _strong_case() -> tuple[ad.AnnData, pd.DataFrame]:
    groups = {CTRL: 40, "A": 30, "B": 30, "U": 30, "W": 30, "M": 30}
    labels = [g for g, n in groups.items() for _ in range(n)]
    rng = np.random.default_rng(0)
    adata = _cells(
        labels, rng.integers(5, 9, len(labels)), rng.integers(5, 9, len(labels)), [100] * len(labels)
    )
    stats = _stats(
        [
            ("A", 200, -0.9, 30),
            ("B", 200, 0.8, 30),  # up: a CRISPRa-like change
            ("U", 120, np.nan, 30),  # target not measured
            ("W", 10, -0.95, 30),  # few DEGs
            (CTRL, np.nan, np.nan, 40),
        ]
    )  # M has no row
    return adata, stats


def test_strong_filter_judges_each_label_by_modality_and_says_why() -> None:
    adata, stats = _strong_case()
    config = PerturbationFilterConfig(min_cells=1, min_perturbations=1)
    _mask, records, table = filtering.perturbation_filter_mask(adata, stats, config, "crispri")
    assert list(table.index[table["status"] == "kept"]) == ["A", "U"]
    assert table.loc["B", "reason"] == "on-target change +0.80 > -0.30 (filters.max_knockdown)"
    assert table.loc["W", "reason"] == "DEGs 10 < 51 (filters.min_degs)"
    assert table.loc["M", "reason"] == "no summary-statistics row (filters.keep_unknown_perturbations)"
    assert table.loc["U", "reason"] == "target not measured (filters.unmeasured_targets: keep)"
    assert [r["filter"] for r in records] == ["strong_perturbations", "on_target", "min_cells"]
    _, _, crispra = filtering.perturbation_filter_mask(adata, stats, config, "crispra")
    # B passes the strong rule now; its cells, not activated, then fail the on-target filter
    assert crispra.loc["A", "status"] == "strong_perturbations" and crispra.loc["B", "status"] == "on_target"
    _, _, knockout = filtering.perturbation_filter_mask(adata, stats, config, "knockout")
    assert list(knockout.index[knockout["status"] == "kept"]) == ["A", "B", "U"]
    drop = PerturbationFilterConfig(
        min_cells=1, unmeasured_targets="drop", keep_unknown_perturbations=True, min_perturbations=1
    )
    _, _, dropped = filtering.perturbation_filter_mask(adata, stats, drop, "crispri")
    assert dropped.loc["U", "status"] == "strong_perturbations" and dropped.loc["M", "status"] == "kept"
    lines = format_table(table, modality="crispri")
    assert lines[0] == "perturbations: 2 of 5 kept (modality crispri)"
    assert any(line.startswith("W ") and "no: strong_perturbations: DEGs 10 < 51" in line for line in lines)


def test_every_count_threshold_keeps_what_has_at_least_that_many() -> None:
    """min_degs 0 keeps a perturbation with no DEG; min_degs N and min_filtered_cells N keep
    exactly N (the threshold read as "at least", as min_cells)."""
    adata, stats = _strong_case()
    stats.loc[stats[PERTURBATION_COLUMN] == "W", DEGS_COLUMN] = 0.0
    stats.loc[stats[PERTURBATION_COLUMN] == "A", CELLS_COLUMN] = 26.0
    keep_all = PerturbationFilterConfig(
        min_degs=0, min_cells=1, min_perturbations=1, keep_unknown_perturbations=True
    )
    _, _, table = filtering.perturbation_filter_mask(adata, stats, keep_all, "knockout")
    assert (table["status"] == "kept").all()  # W's 0 DEGs pass min_degs 0
    at_limit = PerturbationFilterConfig(
        min_degs=120, min_filtered_cells=26, min_cells=30, min_perturbations=1
    )
    _, _, table = filtering.perturbation_filter_mask(adata, stats, at_limit, "knockout")
    assert table.loc["U", "status"] == "kept"  # 120 DEGs, min_degs 120
    assert table.loc["A", "status"] == "kept"  # 26 QC-passing cells, min_filtered_cells 26
    assert table.loc["W", "reason"] == "DEGs 0 < 120 (filters.min_degs)"
    stricter = PerturbationFilterConfig(
        min_degs=121, min_filtered_cells=27, min_cells=30, min_perturbations=1
    )
    _, _, table = filtering.perturbation_filter_mask(adata, stats, stricter, "knockout")
    assert table.loc["U", "reason"] == "DEGs 120 < 121 (filters.min_degs)"
    assert "QC-passing cells 26 < 27 (filters.min_filtered_cells)" in table.loc["A", "reason"]


def test_singles_of_a_kept_pair_are_kept_whatever_their_strength() -> None:
    labels = [CTRL] * 40 + ["A"] * 30 + ["B"] * 30 + ["A+B"] * 30 + ["C"] * 30 + ["D"] * 5
    rng = np.random.default_rng(1)
    adata = _cells(
        labels, rng.integers(5, 9, len(labels)), rng.integers(5, 9, len(labels)), [100] * len(labels)
    )
    stats = _stats(
        [
            ("A", 200, -0.9, 30),
            ("B", 0, -0.9, 30),
            ("A+B", 150, -0.9, 30),
            ("C", 0, -0.9, 30),
            ("D", 90, -0.9, 30),
        ]
    )
    config = PerturbationFilterConfig(min_degs=4, min_cells=20, min_perturbations=1)
    mask, records, table = filtering.perturbation_filter_mask(adata, stats, config, "knockout")
    assert table.loc["B", "status"] == "kept"  # 0 DEGs, but the input of the kept pair A+B
    assert table.loc["B", "reason"] == (
        "single of kept pair A+B, kept whatever its strength (DEGs 0 < 4 (filters.min_degs))"
    )
    assert table.loc["C", "status"] == "strong_perturbations"  # a weak single of no pair is judged
    assert table.loc["D", "status"] == "min_cells"
    assert records[0]["singles_of_kept_pairs"] == ["B"]
    assert set(adata.obs["gene"][mask]) == {CTRL, "A", "B", "A+B"}


def test_fewer_kept_perturbations_than_min_perturbations_stop_with_the_keys() -> None:
    adata, stats = _strong_case()
    with pytest.raises(PerturbationFilterError) as err:
        filtering.perturbation_filter_mask(adata, stats, PerturbationFilterConfig(min_cells=1), "crispri")
    message = str(err.value)
    assert message.startswith("only 2 of 5 perturbations pass the filters, fewer than the 3")
    assert "preprocess.filters.min_degs" in message.splitlines()[-1]
    assert "--min-perturbations 1" in message.splitlines()[-1]
    assert err.value.table is not None and len(err.value.table) == 5


def test_min_degs_auto_scales_with_the_measured_genes() -> None:
    config = PerturbationFilterConfig(min_degs="auto")
    # at least one more than CausalBench's "more than 50", scaled
    assert config.resolved_min_degs(8749) == 51
    assert config.resolved_min_degs(500) == 4
    assert config.resolved_min_degs(1200) == 8
    assert PerturbationFilterConfig(min_degs=20).resolved_min_degs(500) == 20


def test_a_filter_that_leaves_nothing_stops_with_the_table_and_the_key() -> None:
    adata, stats = _strong_case()
    with pytest.raises(PerturbationFilterError) as err:
        filtering.perturbation_filter_mask(adata, stats, PerturbationFilterConfig(min_degs=500), "crispri")
    message = str(err.value)
    assert message.startswith("filter 'strong_perturbations' left no perturbation: it removed 5 of 5")
    assert message.splitlines()[-1].startswith("Relax preprocess.filters.min_degs")
    assert len(message.splitlines()) <= 12
    with pytest.raises(
        PerturbationFilterError, match=r"(?s)filter 'min_cells'.*Relax preprocess.filters.min_cells"
    ):
        filtering.perturbation_filter_mask(adata, stats, PerturbationFilterConfig(min_cells=1000), "knockout")


def test_modality_auto_reads_the_sign_of_the_measured_targets() -> None:
    genes = pd.Index(["A", "B", "C"])
    down = _stats([("A", 100, -0.9, 30), ("B", 100, -0.8, 30), ("C", 100, 0.1, 30), ("U", 100, np.nan, 30)])
    assert resolve_modality("auto", down, genes)[0] == "crispri"
    up = _stats([("A", 100, 3.0, 30), ("B", 100, 1.5, 30), ("A+B", 100, -0.5, 30)])
    modality, basis = resolve_modality("auto", up, genes)
    assert modality == "crispra" and basis["n_measured_targets"] == 2
    assert resolve_modality("auto", _stats([("U", 100, np.nan, 30)]), genes)[1]["n_measured_targets"] == 0
    assert resolve_modality("knockout", up, genes)[0] == "knockout"


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown perturbation-filter settings"):
        PerturbationFilterConfig.from_dict({"min_cell": 3})
    with pytest.raises(ValueError, match="unmeasured_targets"):
        PerturbationFilterConfig(unmeasured_targets="maybe")
    assert PerturbationFilterConfig.from_dict(None).to_dict()["min_cells"] == 101


def test_on_disk_lookups_of_cell_gene_pairs_equal_the_matrix_values(tmp_path) -> None:
    """The on-target filter's (cell, target) lookups read an on-disk matrix a block of cells at
    a time: the same values as indexing the matrix, for pairs in any order, repeated cells, cells
    in several blocks and zeros that are not stored."""
    from gpo_vae.data.on_disk import CountsOnDisk

    rng = np.random.default_rng(0)
    dense = rng.poisson(0.7, size=(230, 40)).astype(np.float32)
    ad.AnnData(X=sp.csr_matrix(dense)).write_h5ad(tmp_path / "x.h5ad")
    rows = rng.integers(0, 230, size=500)
    cols = rng.integers(0, 40, size=500)
    for block_cells in (7, 64, 1000):
        counts = CountsOnDisk(tmp_path / "x.h5ad", block_cells=block_cells)
        np.testing.assert_array_equal(
            filtering._gather(counts, rows, cols), dense[rows, cols].astype(np.float64)
        )
    assert filtering._gather(counts, rows[:0], cols[:0]).shape == (0,)
