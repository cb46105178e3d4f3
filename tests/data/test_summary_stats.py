"""Summary statistics from cells: the vectorised tests against scipy, the Replogle table and workbook."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from gpo_vae.data.summary_stats import (
    REPLOGLE_COLUMNS,
    compute_summary_stats,
    count_significant,
    write_summary_stats_xlsx,
)
from gpo_vae.stats.anderson_darling import anderson_pvalue, sort_reference, two_sample_tests


def _scipy_tests(sample: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per gene: AD statistic, AD p-value, MW U, MW p-value from scipy (NaN where scipy refuses)."""
    out = np.full((sample.shape[1], 4), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns whenever it floors or caps the AD p-value
        for g in range(sample.shape[1]):
            x, y = sample[:, g].astype(np.float64), reference[:, g].astype(np.float64)
            if np.unique(np.r_[x, y]).size < 2:
                continue
            ad_res = stats.anderson_ksamp([x, y], variant="midrank")
            mw_res = stats.mannwhitneyu(x, y, method="asymptotic")
            out[g] = ad_res.statistic, ad_res.pvalue, mw_res.statistic, mw_res.pvalue
    return out


def _ours(sample, reference) -> np.ndarray:
    res = two_sample_tests(sample, sort_reference(reference))
    return np.column_stack([res.ad_statistic, res.ad_pvalue, res.mw_statistic, res.mw_pvalue])


def test_two_sample_tests_equal_scipy_on_tied_integer_data():
    rng = np.random.default_rng(0)
    n_genes = 400
    means = 0.3 + rng.gamma(0.7, 2.0, n_genes)
    reference = rng.poisson(means, size=(70, n_genes)).astype(np.float64)
    sample = rng.poisson(means * rng.choice([0.3, 1.0, 2.5], n_genes), size=(23, n_genes)).astype(np.float64)
    reference[:, :4] = 0  # all zero in both groups: not testable
    sample[:, :4] = 0
    reference[:, 4], sample[:, 4] = 3, 3  # one non-zero value shared by every cell
    sample[:, 5] = 0  # zero in the sample only
    reference[:, 6] = 0  # zero in the reference only
    expected = _scipy_tests(sample, reference)
    ours = _ours(sample, reference)
    assert np.array_equal(np.isnan(ours), np.isnan(expected))
    assert np.isnan(ours[:5]).all() and not np.isnan(ours[5:]).any()
    ok = ~np.isnan(expected)
    np.testing.assert_allclose(ours[ok], expected[ok], rtol=1e-9, atol=1e-10)
    assert (expected[5:, 1] == 0.001).any() and (expected[5:, 1] == 0.25).any()  # floor and cap exercised
    assert ((expected[5:, 1] > 0.001) & (expected[5:, 1] < 0.25)).any()  # interpolation exercised


def test_two_sample_tests_equal_scipy_on_normalised_sparse_data():
    rng = np.random.default_rng(1)
    n_genes = 150
    counts = rng.negative_binomial(2, 0.7, size=(260, n_genes)).astype(np.float32)
    normalised = (counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4).astype(np.float32)
    sample, reference = normalised[:60], normalised[60:]
    expected = _scipy_tests(sample, reference)
    ours = _ours(sp.csr_matrix(sample), sp.csr_matrix(reference))
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-10)
    np.testing.assert_array_equal(_ours(sample, reference), ours)  # dense and sparse agree


def test_two_sample_tests_reject_negative_values_and_gene_mismatch():
    with pytest.raises(ValueError, match="non-negative"):
        sort_reference(np.array([[1.0, -1.0], [0.0, 2.0]]))
    with pytest.raises(ValueError, match="genes"):
        two_sample_tests(np.ones((3, 2)), sort_reference(np.ones((3, 3))))


def test_anderson_pvalue_floor_cap_and_nan():
    p = anderson_pvalue(np.array([-5.0, 0.0, 2.0, 50.0, np.nan]))
    assert p[0] == 0.25 and p[3] == 0.001 and np.isnan(p[4])
    assert 0.001 < p[2] < p[1] <= 0.25


def test_count_significant_is_benjamini_hochberg_ignoring_nan():
    p = np.array([0.001, 0.002, 0.03, 0.04, 0.9, np.nan])
    # BH: sorted p_k <= k/m * q with m = 5 non-NaN: 0.001 <= 0.01, 0.002 <= 0.02, 0.03 <= 0.03, 0.04 > 0.04*...
    assert count_significant(p, 0.05) == 4  # 0.04 <= 4/5 * 0.05 = 0.04
    assert count_significant(p, 0.01) == 2
    assert count_significant(np.full(3, np.nan), 0.05) == 0


@pytest.fixture(scope="module")
def tiny_screen() -> ad.AnnData:
    """Controls, a full knockdown of GENEA (measured), a no-op perturbation and an unmeasured target."""
    rng = np.random.default_rng(2)
    genes = ["GENEA", "GENEB", "MT-CO1", *[f"G{i}" for i in range(37)]]
    rates = np.r_[5.0, 3.0, 8.0, rng.uniform(0.5, 4, 37)]
    groups = {"non-targeting": 300, "GENEA": 60, "NOOP": 50, "UNMEASURED": 40}
    labels = np.repeat(list(groups), list(groups.values()))
    lam = np.tile(rates, (labels.size, 1))
    lam[labels == "GENEA", 0] = 0.0  # complete knockdown
    lam[labels == "GENEA", 5:20] *= 4.0  # and 15 strongly induced genes
    counts = rng.poisson(lam).astype(np.float32)
    counts[:3] *= 0.05  # three low-UMI controls that QC must filter out
    counts = np.round(counts)
    obs = pd.DataFrame({"gene": labels}, index=[f"c{i}" for i in range(labels.size)])
    var = pd.DataFrame({"gene_id": [f"ID{i}" for i in range(len(genes))]}, index=genes)
    return ad.AnnData(sp.csr_matrix(counts), obs=obs, var=var)


def test_compute_summary_stats_from_cells(tiny_screen):
    table = compute_summary_stats(tiny_screen, max_control_cells=200, progress=False)
    assert list(table.columns) == list(REPLOGLE_COLUMNS)
    names = table["genetic perturbation"].str.split("_")
    assert names.str[1].tolist() == ["GENEA", "NOOP", "UNMEASURED", "non-targeting"]
    rows = table.set_index(names.str[1])
    assert rows.loc["GENEA", "genetic perturbation"] == "1_GENEA_P1P2_ID0"
    assert rows.loc["NOOP", "genetic perturbation"] == "2_NOOP_P1P2_NOOP"  # no id known: the symbol
    assert rows["number of cells (unfiltered)"].tolist() == [60, 50, 40, 300]
    totals = np.asarray(tiny_screen.X.sum(1)).ravel()
    mt = tiny_screen.X[:, 2].toarray().ravel() / np.maximum(totals, 1)
    low = totals < np.median(totals) - 3 * np.median(np.abs(totals - np.median(totals)))
    high = mt > np.median(mt) + 3 * np.median(np.abs(mt - np.median(mt)))
    assert low[:3].all()  # the low-UMI controls
    passed = ~low & ~high
    assert rows["number of cells (filtered)"].tolist() == [
        passed[a:b].sum() for a, b in [(300, 360), (360, 410), (410, 450), (0, 300)]
    ]
    assert rows.loc["GENEA", "percent knockdown"] == -1.0
    assert rows.loc["GENEA", "fold knockdown"] == 0.0
    control_mean = tiny_screen.X[:300][passed[:300]].toarray()
    normalised = control_mean / control_mean.sum(1, keepdims=True) * np.median(control_mean.sum(1))
    assert rows.loc["GENEA", "target expression"] == pytest.approx(normalised[:, 0].mean(), rel=1e-5)
    assert np.isnan(rows.loc["UNMEASURED", ["target expression", "percent knockdown"]].astype(float)).all()
    assert rows.loc["GENEA", "Number of DEGs (anderson-darling)"] >= 16  # target + 15 induced genes
    assert rows.loc["GENEA", "Number of DEGs (Mann-Whitney)"] >= 16
    assert rows.loc["NOOP", "Number of DEGs (anderson-darling)"] <= 1
    assert rows.loc["GENEA", "Fraction of mitochondrially encoded RNA"] == pytest.approx(
        mt[300:360][passed[300:360]].mean()
    )
    not_computed = [
        "mean leverage score",
        "energy test (p-value)",
        "Fraction of TE RNA",
        "Z-scored CIN score",
    ]
    assert rows[not_computed].isna().all().all()
    assert not rows["core_control"].any()


def test_compute_summary_stats_needs_controls(tiny_screen):
    with pytest.raises(ValueError, match="control"):
        compute_summary_stats(tiny_screen, control_label="missing", progress=False)


def test_summary_workbook_round_trips_atomically(tmp_path, tiny_screen):
    table = compute_summary_stats(tiny_screen, progress=False)
    path = write_summary_stats_xlsx(table, tmp_path / "summary_stats.xlsx", "TabS_synthetic_summary_stat")
    sheets = pd.read_excel(path, sheet_name=None)
    assert list(sheets) == ["description", "TabS_synthetic_summary_stat"]
    assert list(sheets["description"].columns) == ["column", "description"]
    assert sheets["description"]["column"].tolist() == list(REPLOGLE_COLUMNS)
    assert sheets["description"]["description"].notna().all()
    data = sheets["TabS_synthetic_summary_stat"]
    assert list(data.columns) == list(REPLOGLE_COLUMNS)
    pd.testing.assert_frame_equal(data, table, check_dtype=False)
    assert [p.name for p in tmp_path.iterdir()] == ["summary_stats.xlsx"]  # no temp file left

    with pytest.raises(ValueError, match="Replogle columns"):
        write_summary_stats_xlsx(table.drop(columns="fold knockdown"), path, "sheet")
    with pytest.raises(ValueError, match="sheet name"):
        write_summary_stats_xlsx(table, path, "x" * 32)


def test_summary_workbook_failure_keeps_previous_file(tmp_path, tiny_screen, monkeypatch):
    table = compute_summary_stats(tiny_screen, progress=False)
    path = write_summary_stats_xlsx(table, tmp_path / "stats.xlsx", "data")
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("gpo_vae.data.summary_stats.os.replace", fail)  # after the temp file is complete
    with pytest.raises(RuntimeError, match="disk full"):
        write_summary_stats_xlsx(table, path, "data")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["stats.xlsx"]


@pytest.mark.parametrize("preset", ["default", "counts_layer"])
def test_summary_stats_from_disk_are_the_in_memory_ones(preset, tmp_path):
    """Counts read a batch of perturbations at a time (here batches of at most 1,000 cells, in
    blocks of 200) give the same csv bytes as the whole matrix in memory."""
    from gpo_vae.data.contract import read_counts_h5ad
    from gpo_vae.data.contract_on_disk import open_counts_h5ad
    from gpo_vae.data.layout import ScreenLayout
    from gpo_vae.data.summary_stats import write_summary_stats_csv
    from gpo_vae.data.synthetic import SyntheticConfig, write_synthetic_dataset

    files = write_synthetic_dataset(tmp_path / "data", SyntheticConfig.preset(preset))
    memory = compute_summary_stats(read_counts_h5ad(files["counts"], ScreenLayout()), progress=False)
    adata, counts = open_counts_h5ad(files["counts"], ScreenLayout())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    disk = compute_summary_stats(
        adata, progress=False, counts=counts.with_fields(block_cells=200), scratch_dir=scratch
    )
    assert len(disk) > 20 and disk["Number of DEGs (anderson-darling)"].notna().sum() > 20
    one, two = (
        write_summary_stats_csv(memory, tmp_path / "m.csv"),
        write_summary_stats_csv(disk, tmp_path / "d.csv"),
    )
    assert one.read_bytes() == two.read_bytes()
    assert not list(scratch.iterdir())  # the grouped copy is removed
