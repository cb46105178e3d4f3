"""Wilcoxon vs reference (against scanpy and scipy), FC3 selection, HVGs and training-only DEGs."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from scipy.stats import mannwhitneyu

from gpo_vae.preprocessing import deg, wilcoxon
from gpo_vae.preprocessing.normalize import normalize_log1p

CTRL = "non-targeting"


def _counts(seed: int = 0, n_groups: int = 4, per_group: int = 40, n_ref: int = 80, n_genes: int = 60):
    """Poisson counts; group i multiplies genes 3i..3i+2 by 6 and silences gene 59 − i."""
    rng = np.random.default_rng(seed)
    labels = np.array([CTRL] * n_ref + [f"P{i}" for i in range(n_groups) for _ in range(per_group)])
    rate = np.tile(rng.gamma(0.8, 1.5, size=n_genes), (labels.size, 1))
    for i in range(n_groups):
        rate[labels == f"P{i}", 3 * i : 3 * i + 3] *= 6.0
        rate[labels == f"P{i}", n_genes - 1 - i] = 0.0
    counts = rng.poisson(rate * rng.gamma(8, 0.125, size=(labels.size, 1))).astype(np.float32)
    genes = [f"G{j}" for j in range(n_genes)]
    return sp.csr_matrix(counts), labels, genes


@pytest.fixture(scope="module")
def deg_small():
    counts, labels, genes = _counts()
    return normalize_log1p(counts), labels, genes


@pytest.mark.parametrize("tie_correct", [True, False])
def test_matches_scanpy_rank_genes_groups(deg_small, tie_correct: bool) -> None:
    X, labels, genes = deg_small
    ours = deg.rank_genes_vs_reference(X, labels, CTRL, genes, tie_correct=tie_correct, block_genes=17)
    adata = ad.AnnData(
        X.copy(),
        obs=pd.DataFrame({"gene": pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=genes),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(adata, "gene", method="wilcoxon", reference=CTRL, tie_correct=tie_correct)
    theirs = sc.get.rank_genes_groups_df(adata, group=None)
    both = ours.merge(theirs, left_on=["group", "gene"], right_on=["group", "names"], validate="1:1")
    assert len(both) == len(ours) == 4 * len(genes)
    # scanpy stores scores and log fold changes as float32
    np.testing.assert_allclose(both["score"], both["scores"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(both["logfoldchange"], both["logfoldchanges"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(both["pval"], both["pvals"], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(both["pval_adj"], both["pvals_adj"], rtol=1e-6, atol=1e-12)
    first = ours.groupby("group", observed=True).first()["gene"]
    assert first.to_dict() == theirs.groupby("group", observed=True).first()["names"].to_dict()


def test_matches_scipy_mannwhitneyu_with_ties_zeros_and_negatives() -> None:
    rng = np.random.default_rng(1)
    ref = np.round(rng.normal(0.0, 1.0, size=(70, 5)), 1) * (rng.random((70, 5)) < 0.6)
    grp = np.round(rng.normal(0.4, 1.0, size=(30, 5)), 1) * (rng.random((30, 5)) < 0.5)
    grp[:, 4] = ref[:30, 4] = 0.0  # a gene that is zero in the group: ties with many reference zeros
    X = np.vstack([ref, grp])
    labels = np.array([CTRL] * 70 + ["P"] * 30)
    table = deg.rank_genes_vs_reference(sp.csr_matrix(X), labels, CTRL, [f"G{j}" for j in range(5)])
    table = table.set_index("gene")
    for j in range(5):
        expected = mannwhitneyu(grp[:, j], ref[:, j], method="asymptotic", use_continuity=False)
        assert table.loc[f"G{j}", "pval"] == pytest.approx(expected.pvalue, rel=1e-9), j
        u_from_z = table.loc[f"G{j}", "score"]
        assert np.sign(u_from_z) == np.sign(expected.statistic - 30 * 70 / 2), j


def test_only_fit_cells_count_and_blocks_do_not_matter(deg_small) -> None:
    X, labels, genes = deg_small
    fit = np.random.default_rng(2).random(len(labels)) < 0.7
    masked = deg.rank_genes_vs_reference(X, labels, CTRL, genes, fit_mask=fit, block_genes=7)
    subset = deg.rank_genes_vs_reference(X[np.flatnonzero(fit)], labels[fit], CTRL, genes, block_genes=1000)
    pd.testing.assert_frame_equal(masked, subset)
    mean = lambda rows, j: np.asarray(X[np.flatnonzero(rows), j].todense()).mean()  # noqa: E731
    row = masked[(masked["group"] == "P1") & (masked["gene"] == "G4")].iloc[0]
    in_group, in_ref = mean(fit & (labels == "P1"), 4), mean(fit & (labels == CTRL), 4)
    expected_lfc = np.log2((np.expm1(in_group) + 1e-9) / (np.expm1(in_ref) + 1e-9))
    assert row["logfoldchange"] == pytest.approx(expected_lfc, rel=1e-6)
    gene_mask = np.zeros(len(genes), dtype=bool)
    gene_mask[:10] = True
    restricted = deg.rank_genes_vs_reference(X, labels, CTRL, genes, gene_mask=gene_mask)
    assert set(restricted["gene"]) == set(genes[:10]) and len(restricted) == 4 * 10
    with pytest.raises(ValueError, match="reference"):
        deg.rank_genes_vs_reference(X, labels, "absent", genes)


def test_benjamini_hochberg_matches_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(3).random((3, 50)) ** 3
    expected = np.vstack([multipletests(row, method="fdr_bh")[1] for row in p])
    np.testing.assert_allclose(deg.benjamini_hochberg(p), expected, rtol=1e-12)


def test_fc3_applies_the_p_value_to_both_signs() -> None:
    table = pd.DataFrame(
        {
            "group": pd.Categorical(["P1", "P1", "P1", "P2", "P2", "P3", "P3"]),
            "gene": ["DOWN_NS", "UP", "DOWN", "X", "EDGE_LFC", "Y", "EDGE_P"],
            "rank": [0, 1, 2, 0, 1, 0, 1],
            "score": [5.0, 4.0, -9.0, 2.0, 1.0, 3.0, 2.0],
            "logfoldchange": [-4.0, 3.5, -6.0, -5.0, 3.0, 0.5, 4.0],
            "pval": [0.5, 1e-4, 1e-9, 0.5, 1e-9, 1e-9, 1e-3],
            "pval_adj": [0.5, 1e-3, 1e-8, 0.5, 1e-8, 1e-8, 0.01],
        }
    )
    buggy = table[(table["logfoldchange"] < -3) | (table["logfoldchange"] > 3) & (table["pval_adj"] < 0.01)]
    assert buggy.groupby("group", observed=True)["gene"].first()["P1"] == "DOWN_NS"  # the reference's pick
    union, picks = deg.fc3_genes(table)
    assert picks.to_dict() == {"P1": "UP"}  # P2: |lfc| = 3 is not > 3; P3: p_adj = 0.01 is not < 0.01
    assert union == ["UP"]
    union, picks = deg.fc3_genes(table, lfc=2.5, pval_adj=0.02)
    assert picks.to_dict() == {"P1": "UP", "P2": "EDGE_LFC", "P3": "EDGE_P"}
    assert union == ["EDGE_LFC", "EDGE_P", "UP"]


def _planted(seed: int = 4):
    """Group Pi moves gene Ui up 30× and silences gene Di: both are FC3 candidates."""
    rng = np.random.default_rng(seed)
    labels = np.array([CTRL] * 120 + [f"P{i}" for i in range(3) for _ in range(60)])
    genes = [f"U{i}" for i in range(3)] + [f"D{i}" for i in range(3)] + [f"N{j}" for j in range(40)]
    rate = np.full((labels.size, len(genes)), 2.0)
    rate[:, :3] = 0.3
    rate[:, 3:6] = 12.0
    for i in range(3):
        rate[labels == f"P{i}", i] = 9.0
        rate[labels == f"P{i}", 3 + i] = 0.0
    counts = rng.poisson(rate).astype(np.float32)
    obs = pd.DataFrame({"gene": pd.Categorical(labels)}, index=[f"c{i}" for i in range(labels.size)])
    return ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=genes))


def test_annotate_deg_uses_training_cells_only() -> None:
    adata = _planted()
    train = np.random.default_rng(5).random(adata.n_obs) < 0.6
    fc3, table = deg.annotate_deg(adata, train)
    assert fc3.name == "FC3" and fc3.index.equals(adata.var_names)
    _, picks = deg.fc3_genes(table)
    assert set(picks.index) == {"P0", "P1", "P2"}
    assert set(fc3.index[fc3]) == set(picks) and set(picks) <= {"U0", "U1", "U2", "D0", "D1", "D2"}

    changed = adata.copy()
    test_rows = np.flatnonzero(~train)
    rng = np.random.default_rng(6)
    dense = changed.X.toarray()
    dense[test_rows] = rng.poisson(50.0, size=(test_rows.size, adata.n_vars))  # test cells: noise
    changed.X = sp.csr_matrix(dense)
    fc3_changed, table_changed = deg.annotate_deg(changed, train)
    pd.testing.assert_series_equal(fc3_changed, fc3)
    pd.testing.assert_frame_equal(table_changed, table)

    _, hvg_table = deg.annotate_deg(adata, train, restrict_to_hvg=True, n_top_hvg=10)
    assert hvg_table["gene"].nunique() == 10 and len(hvg_table) == 3 * 10


def test_highly_variable_genes_on_fit_cells() -> None:
    adata = _planted()
    adata.X = normalize_log1p(adata.X)
    fit = np.arange(adata.n_obs) % 3 != 0
    hvg = deg.highly_variable_genes(adata, batch_key="gene", n_top=8, fit_mask=fit)
    assert hvg.dtype == bool and hvg.index.equals(adata.var_names) and hvg.name == "highly_variable"
    assert hvg.sum() == 8
    expected = sc.pp.highly_variable_genes(
        adata[fit].copy(), batch_key="gene", flavor="seurat", n_top_genes=8, inplace=False
    )
    assert hvg.to_dict() == expected["highly_variable"].astype(bool).to_dict()
    perturbed = adata.copy()
    dense = perturbed.X.toarray()
    dense[np.flatnonzero(~fit), 10:15] *= 3.0  # cells outside the fit mask: 5 genes become variable
    perturbed.X = sp.csr_matrix(dense)
    assert deg.highly_variable_genes(perturbed, n_top=8, fit_mask=fit).equals(hvg)
    assert not deg.highly_variable_genes(perturbed, n_top=8).equals(deg.highly_variable_genes(adata, n_top=8))
    assert "highly_variable" not in adata.var.columns


def test_the_on_disk_test_takes_more_gene_blocks_for_more_values_and_the_same_table(tmp_path) -> None:
    """The on-disk Wilcoxon test splits the genes into more blocks when the matrix stores more
    than ``passes × block_values`` values (memory set by the block, not the cells); the table
    is the in-memory test's whatever the blocks."""
    import h5py

    from gpo_vae.data.on_disk import CountsOnDisk, write_counts

    counts, labels, genes = _counts(seed=3)
    path = tmp_path / "counts.h5"
    with h5py.File(path, "w") as file:
        write_counts(file, "X", counts)
    on_disk = CountsOnDisk(path, "X", block_cells=50)
    blocks: list[int] = []
    real = wilcoxon._rank_gene_blocks

    def counting(column_block, bounds, genes, *args):
        blocks.append(-(-len(genes) // args[-2]))
        return real(column_block, bounds, genes, *args)

    expected = deg.rank_genes_vs_reference(normalize_log1p(counts), labels, CTRL, genes)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wilcoxon, "_rank_gene_blocks", counting)
        few = deg.rank_genes_on_disk(on_disk, labels, CTRL, genes)
        many = deg.rank_genes_on_disk(on_disk, labels, CTRL, genes, block_values=counts.nnz // 9)
    assert blocks == [4, 10]  # ⌈60 genes / ⌈60 / 10⌉ per block⌉ for 10 passes
    pd.testing.assert_frame_equal(few, expected)
    pd.testing.assert_frame_equal(many, expected)


@pytest.mark.parametrize("groups_at_once", [1, 3, 64])
def test_fc3_picks_from_the_arrays_equal_the_tables_picks(groups_at_once) -> None:
    """The lean picks (no long table, a few groups at a time) are fc3_genes' on the table: the
    best-scored hit per group, the first gene among equal scores (two identical genes), groups
    without a hit left out, at thresholds that pick in some groups only."""
    counts, labels, genes = _counts(seed=7, n_groups=6)
    dense = counts.toarray()
    dense[:, 1] = dense[:, 0]  # G0 and G1 tie in every group
    X_log = normalize_log1p(sp.csr_matrix(dense))
    scores = deg.rank_genes_vs_reference(X_log, labels, CTRL, genes, table=False)
    table = scores.table()
    pd.testing.assert_frame_equal(table, deg.rank_genes_vs_reference(X_log, labels, CTRL, genes))
    for lfc, p in [(3.0, 0.01), (1.0, 0.05), (0.5, 1e-6), (50.0, 0.01)]:
        expected = deg.fc3_genes(table, lfc=lfc, pval_adj=p)[1]
        picks = scores.fc3_picks(lfc, p, groups_at_once=groups_at_once)
        pd.testing.assert_series_equal(picks, expected, check_index_type=False, check_categorical=False)
    assert 0 < len(deg.fc3_genes(table, lfc=1.0, pval_adj=1e-6)[1]) < 6  # some groups pick, not all


def test_annotate_deg_without_the_table_flags_the_same_genes(tmp_path) -> None:
    import h5py

    from gpo_vae.data.on_disk import CountsOnDisk, write_counts

    adata = _planted()
    train = np.random.default_rng(5).random(adata.n_obs) < 0.6
    fc3, table = deg.annotate_deg(adata, train)
    lean, none = deg.annotate_deg(adata, train, keep_table=False)
    assert none is None and table is not None
    pd.testing.assert_series_equal(lean, fc3)
    path = tmp_path / "counts.h5"
    with h5py.File(path, "w") as file:
        write_counts(file, "X", adata.X)
    on_disk, _ = deg.annotate_deg(adata, train, counts=CountsOnDisk(path, "X"), keep_table=False)
    pd.testing.assert_series_equal(on_disk, fc3)


def test_the_on_disk_test_of_shuffled_cells_equals_the_in_memory_table(tmp_path) -> None:
    """Cells in file order unlike their groups (as screens store them): each block of cells is
    written straight to its rows' grouped places, across several gene blocks and cell blocks."""
    import h5py

    from gpo_vae.data.on_disk import CountsOnDisk, write_counts

    counts, labels, genes = _counts(seed=11, n_groups=5)
    shuffle = np.random.default_rng(2).permutation(counts.shape[0])
    counts, labels = counts[shuffle], labels[shuffle]
    path = tmp_path / "counts.h5"
    with h5py.File(path, "w") as file:
        write_counts(file, "X", counts)
    expected = deg.rank_genes_vs_reference(normalize_log1p(counts), labels, CTRL, genes)
    for block_cells in (1, 33, 1000):
        on_disk = CountsOnDisk(path, "X", block_cells=block_cells)
        table = deg.rank_genes_on_disk(on_disk, labels, CTRL, genes, block_values=counts.nnz // 7)
        pd.testing.assert_frame_equal(table, expected)
