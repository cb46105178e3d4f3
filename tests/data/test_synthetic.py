"""The synthetic screen: determinism, the raw contract, and agreement with its own truth."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from gpo_vae.data.contract import read_counts_h5ad, validate_counts_adata
from gpo_vae.data.summary_stats import REPLOGLE_COLUMNS, compute_summary_stats, normalise_rows
from gpo_vae.data.synthetic import (
    SyntheticConfig,
    SyntheticScreen,
    existing_synthetic_dataset,
    read_gene_symbols,
    simulate_perturbseq,
    true_interactions,
    write_synthetic_dataset,
)
from gpo_vae.data.synthetic_design import draw_design
from gpo_vae.stats.anderson_darling import sort_reference, two_sample_tests
from gpo_vae.stats.mad import mad_threshold

FDR = 0.05
TINY = SyntheticConfig(n_perturbations=8, n_genes=300, cells_per_perturbation=40.0)


@pytest.fixture(scope="module")
def screen() -> SyntheticScreen:
    return simulate_perturbseq(SyntheticConfig.preset("default"))


@pytest.fixture(scope="module")
def summary(screen) -> pd.DataFrame:
    table = compute_summary_stats(screen.adata, fdr=FDR, progress=False)
    table = table[table["genetic perturbation"].str.split("_").str[1] != "non-targeting"]
    return table.set_index(table["genetic perturbation"].str.split("_").str[1])


@pytest.fixture(scope="module")
def truth(screen, summary) -> pd.DataFrame:
    return screen.perturbations.set_index("gene").loc[summary.index]


@pytest.fixture(scope="module")
def clean_cells(screen) -> dict[str, np.ndarray]:
    """Cells by label, without the simulated QC failures (doublets carry a second cell's profile)."""
    obs = screen.adata.obs
    ok = np.flatnonzero(~obs["sim_qc_fail"].to_numpy())
    return pd.Series(ok).groupby(obs["gene"].astype(str).to_numpy()[ok]).apply(np.asarray).to_dict()


def test_same_seed_same_screen_other_seed_differs():
    first, again = simulate_perturbseq(TINY), simulate_perturbseq(TINY, n_threads=1)
    assert (first.adata.X != again.adata.X).nnz == 0
    pd.testing.assert_frame_equal(first.adata.obs, again.adata.obs)
    pd.testing.assert_frame_equal(first.adata.var, again.adata.var)
    pd.testing.assert_frame_equal(first.network, again.network)
    pd.testing.assert_frame_equal(first.perturbations, again.perturbations)
    other = simulate_perturbseq(dataclasses.replace(TINY, seed=1))
    assert set(other.perturbations.gene) != set(first.perturbations.gene)
    assert not first.network.equals(other.network)
    assert first.adata.shape != other.adata.shape or (first.adata.X != other.adata.X).nnz > 0


def test_screen_is_built_on_its_design():
    design = draw_design(TINY)
    pd.testing.assert_frame_equal(design.genes, draw_design(TINY).genes)
    screen = simulate_perturbseq(TINY)
    pd.testing.assert_frame_equal(screen.adata.var, design.genes)
    pd.testing.assert_frame_equal(screen.network, design.network)
    assert design.effect.shape == (len(design.targets) + 1, len(design.genes)) and not design.effect[-1].any()
    measured = design.target_col >= 0
    assert np.array_equal(design.genes.index[design.target_col[measured]], design.targets.gene[measured])
    assert np.array_equal(measured, design.targets.measured.to_numpy())


def test_screen_meets_the_raw_contract(screen):
    adata = screen.adata
    validate_counts_adata(adata)
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    assert np.array_equal(adata.X.data, np.round(adata.X.data)) and adata.X.data.min() > 0
    assert adata.shape[1] == 1200 and adata.var_names.is_unique
    assert adata.var["gene_id"].str.fullmatch(r"SYNTH\d{5}").all() and adata.var["gene_id"].is_unique
    # Ids are stable per symbol, whatever the seed or preset.
    ids = read_gene_symbols().set_index("symbol").gene_id
    assert (ids.reindex(adata.var_names).to_numpy() == adata.var["gene_id"].to_numpy()).all()


def test_gene_families_are_present(screen):
    names = screen.adata.var_names
    mt = ["MT-ND1", "MT-ND2", "MT-ND3", "MT-ND4", "MT-ND4L", "MT-ND5", "MT-ND6", "MT-CO1", "MT-CO2"]
    assert sorted(names[names.str.startswith("MT-")]) == sorted(
        [*mt, "MT-CO3", "MT-ATP6", "MT-ATP8", "MT-CYB"]
    )
    assert 75 <= names.str.match(r"^RP[SL]").sum() <= 85
    hb = names[names.str.match(r"^HB[^P]")]
    assert {"HBA1", "HBA2", "HBB"} <= set(hb) and "HBP1" in names and "HBP1" not in hb


def test_controls_and_cells_per_perturbation(screen):
    adata, config = screen.adata, screen.config
    labels = adata.obs["gene"].astype(str)
    assert (labels == "non-targeting").mean() == pytest.approx(config.control_fraction, abs=0.01)
    counts = labels[labels != "non-targeting"].value_counts()
    assert 40 <= counts.size <= 60 and 150 <= counts.median() <= 250
    truth = screen.perturbations.set_index("gene")
    assert (truth.n_cells.reindex(counts.index) == counts).all()
    assert not truth.measured.all() and truth.measured.mean() > 0.8
    assert not set(truth.index[~truth.measured]) & set(adata.var_names)
    assert 0.2 <= (~truth.strong).mean() <= 0.5  # weak perturbations for the filters to drop


def test_qc_failures_look_like_qc_failures(screen):
    obs, x = screen.adata.obs, screen.adata.X
    totals = np.asarray(x.sum(axis=1)).ravel()
    mt_share = np.asarray(x[:, screen.adata.var_names.str.startswith("MT-")].sum(axis=1)).ravel() / totals
    healthy = ~obs["sim_qc_fail"].to_numpy()
    low, high, doublet = (obs[c].to_numpy() for c in ["sim_low_umi", "sim_high_mt", "sim_doublet"])
    assert np.median(totals[low]) < 0.35 * np.median(totals[healthy])
    assert np.median(totals[doublet]) > 1.6 * np.median(totals[healthy])
    assert np.median(mt_share[healthy]) == pytest.approx(0.064, abs=0.01)
    assert np.median(mt_share[high]) > 2.5 * np.median(mt_share[healthy])
    # The design §2 MAD flags (t = 3) find most low-UMI and high-MT cells and spare most healthy ones
    # (some healthy cells of perturbations that raise the MT- share are flagged too, as in real screens).
    flagged = (totals < mad_threshold(totals, 3, "low")) | (mt_share > mad_threshold(mt_share, 3, "high"))
    assert flagged[low | high].mean() > 0.8
    assert flagged[healthy].mean() < 0.08
    assert flagged[low | high].mean() > 10 * flagged[healthy].mean()


def test_network_is_a_dag_with_unreached_genes(screen):
    net, var = screen.network, screen.adata.var
    assert list(net.columns) == ["source", "target", "weight"]
    assert (net.weight > 0).any() and (net.weight < 0).any()
    nodes = pd.Index(pd.unique(pd.concat([net.source, net.target])))
    adjacency = sp.csr_matrix(
        (np.ones(len(net)), (nodes.get_indexer(net.source), nodes.get_indexer(net.target))),
        shape=(nodes.size, nodes.size),
    )
    power = adjacency.copy()
    for _ in range(nodes.size):  # nilpotent iff acyclic
        if power.nnz == 0:
            break
        assert power.diagonal().sum() == 0
        power = power @ adjacency
    assert power.nnz == 0
    unreached = var.index[var.sim_role == "unreached"]
    assert len(unreached) > 0.2 * len(var) and not set(net.target) & set(unreached)
    truth = screen.perturbations
    inert = truth.gene[truth.knockdown_class == "inert"]
    assert len(inert) > 0 and not set(net.source) & set(inert)
    assert set(truth.gene[truth.strong]) <= set(net.source)


def test_summary_statistics_agree_with_the_cells(screen, summary, truth):
    labels = screen.adata.obs["gene"].astype(str)
    assert (summary["number of cells (unfiltered)"] == labels.value_counts().reindex(summary.index)).all()
    assert (summary["number of cells (filtered)"] <= summary["number of cells (unfiltered)"]).all()
    measured = truth.measured.to_numpy()
    knockdown = summary["percent knockdown"].astype(float)
    assert knockdown[~measured].isna().all() and knockdown[measured].notna().all()
    assert stats.pearsonr(knockdown[measured], -truth.mean_efficiency[measured]).statistic > 0.9
    strong_measured = truth.strong.to_numpy() & measured
    assert (knockdown[strong_measured] <= -0.3).mean() >= 0.9
    degs = summary["Number of DEGs (anderson-darling)"].astype(float)
    strong = truth.strong.to_numpy()
    assert stats.mannwhitneyu(degs[strong], degs[~strong], alternative="greater").pvalue < 0.01
    assert np.median(degs[strong]) > 50 >= np.median(degs[~strong])
    assert set(REPLOGLE_COLUMNS) <= set(summary.columns)


def test_knocked_down_targets_are_lower_than_in_controls(screen, truth, clean_cells):
    adata = screen.adata
    normalised = normalise_rows(adata.X, np.asarray(adata.X.sum(axis=1)).ravel(), 1e4).tocsc()
    controls = clean_cells["non-targeting"]
    tested = truth.index[truth.strong & truth.measured]
    assert len(tested) >= 20
    for gene in tested:
        column = normalised[:, adata.var_names.get_loc(gene)].toarray().ravel()
        p = stats.mannwhitneyu(column[clean_cells[gene]], column[controls], alternative="less").pvalue
        assert p < 0.01, gene


def _total_effects(network: pd.DataFrame, sources: list[str], genes: pd.Index) -> pd.DataFrame:
    """Sum over all paths of the product of edge weights, from each source to each measured gene."""
    nodes = pd.Index(pd.unique(pd.concat([network.source, network.target, pd.Series(sources)])))
    w = sp.csr_matrix(
        (network.weight, (nodes.get_indexer(network.source), nodes.get_indexer(network.target))),
        shape=(nodes.size, nodes.size),
    )
    step = w[nodes.get_indexer(sources)]
    total = step.copy()
    while step.nnz:
        step = step @ w
        total = total + step
    return pd.DataFrame(total.toarray(), index=sources, columns=nodes).reindex(columns=genes, fill_value=0.0)


def test_children_and_grandchildren_move_and_unreached_genes_do_not(screen, truth, clean_cells):
    """BH-significant shifts vs controls: most true descendants, about none of the unreached genes.

    Expression is normalised by each cell's UMIs in the unreached genes (a reference set, like
    spike-ins): normalising by all UMIs would let a perturbation that changes hundreds of genes
    shift every other gene's share, a real but indirect (compositional) effect.
    """
    adata, net = screen.adata, screen.network
    unreached = np.asarray(adata.var.sim_role == "unreached")
    reference_umis = np.asarray(adata.X[:, unreached].sum(axis=1)).ravel()
    normalised = normalise_rows(adata.X, reference_umis, 1e3)
    control_ref = sort_reference(normalised[clean_cells["non-targeting"]])
    strong = list(truth.index[truth.strong])
    effects = _total_effects(net, strong, adata.var_names)
    hits = {"child": [], "grandchild": [], "unreached": [], "grandchild sign": [], "unreached p < 0.05": []}
    for gene in strong:
        cells = clean_cells[gene]
        tests = two_sample_tests(normalised[cells], control_ref)
        children = adata.var_names.isin(net.target[net.source == gene]) & (adata.var_names != gene)
        # Descendants only through longer paths, with a sizeable expected log shift.
        signal = max(np.log(1 - truth.efficiency[gene]), np.log(0.02))  # the simulator's floor
        expected = effects.loc[gene].to_numpy() * signal
        grandchildren = ~children & (np.abs(expected) > 0.5) & (adata.var_names != gene)
        considered = children | grandchildren | unreached
        padj = np.ones(adata.n_vars)
        padj[considered] = stats.false_discovery_control(np.nan_to_num(tests.mw_pvalue[considered], nan=1.0))
        significant = padj <= FDR
        hits["child"].append(significant[children])
        hits["grandchild"].append(significant[grandchildren])
        hits["unreached"].append(significant[unreached])
        hits["unreached p < 0.05"].append(tests.mw_pvalue[unreached] < 0.05)
        shift = normalised[cells].mean(axis=0).A1 - normalised[clean_cells["non-targeting"]].mean(axis=0).A1
        moved = grandchildren & significant
        hits["grandchild sign"].append(np.sign(shift[moved]) == np.sign(expected[moved]))
    rate = {k: np.concatenate(v).mean() for k, v in hits.items()}
    assert sum(map(len, hits["grandchild"])) > 100
    assert rate["child"] > 0.6
    assert rate["grandchild"] > 0.6
    assert rate["grandchild sign"] > 0.95
    assert rate["unreached"] <= FDR  # BH keeps false discoveries among true nulls below the FDR
    assert 0.025 < rate["unreached p < 0.05"] < 0.075  # unreached genes' p-values are uniform


def test_write_synthetic_dataset_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "synthetic"
    paths = write_synthetic_dataset(out, TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]  # no temp folder left
    assert {p.name for p in out.iterdir()} == {p.name for p in paths.values()}
    adata = read_counts_h5ad(paths["counts"])
    assert adata.shape == simulate_perturbseq(TINY).adata.shape
    sheets = pd.read_excel(paths["summary_stats"], sheet_name=None)
    assert list(sheets) == ["description", "TabS_synthetic_summary_stat"]
    assert list(sheets["TabS_synthetic_summary_stat"].columns) == list(REPLOGLE_COLUMNS)
    assert list(pd.read_csv(paths["network"]).columns) == ["source", "target", "weight"]
    assert pd.read_csv(paths["perturbations"]).gene.tolist() == sorted(
        simulate_perturbseq(TINY).perturbations.gene
    )
    meta = json.loads(paths["metadata"].read_text())
    assert meta["config"] == dataclasses.asdict(TINY) and meta["n_cells"] == adata.n_obs
    assert {"gpo_vae", "numpy", "scipy", "anndata"} <= set(meta["versions"])
    with pytest.raises(FileExistsError):
        write_synthetic_dataset(out, TINY)

    def fail(*args, **kwargs):
        raise RuntimeError("killed mid-way")

    monkeypatch.setattr("gpo_vae.data.synthetic.write_summary_stats_xlsx", fail)
    other = tmp_path / "other"
    with pytest.raises(RuntimeError, match="killed"):
        write_synthetic_dataset(other, TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]
    with pytest.raises(RuntimeError, match="killed"):
        write_synthetic_dataset(out, TINY, overwrite=True)
    assert {p.name for p in out.iterdir()} == {p.name for p in paths.values()}  # the old one survives


def test_an_existing_dataset_of_the_same_config_is_found_and_others_are_not(tmp_path):
    out = tmp_path / "synthetic"
    assert existing_synthetic_dataset(out, TINY) is None
    paths = write_synthetic_dataset(out, TINY)
    assert existing_synthetic_dataset(out, TINY) == paths
    assert existing_synthetic_dataset(out, dataclasses.replace(TINY, seed=TINY.seed + 1)) is None
    meta = json.loads(paths["metadata"].read_text())
    meta["versions"]["gpo_vae"] = "0.0.0-older"
    paths["metadata"].write_text(json.dumps(meta))
    assert existing_synthetic_dataset(out, TINY) is None, "another simulator version"
    paths["metadata"].write_text("{")
    assert existing_synthetic_dataset(out, TINY) is None
    write_synthetic_dataset(out, TINY, overwrite=True)
    paths["network"].unlink()
    assert existing_synthetic_dataset(out, TINY) is None


def test_presets():
    default, rpe1 = SyntheticConfig.preset("default"), SyntheticConfig.preset("rpe1", seed=3)
    assert rpe1.seed == 3 and rpe1.n_genes == 8700 and rpe1.n_perturbations == 2500
    expected_cells = rpe1.n_perturbations * rpe1.cells_per_perturbation * np.exp(rpe1.cells_sigma**2 / 2)
    assert 230_000 < expected_cells / (1 - rpe1.control_fraction) < 270_000
    expected_cells = default.n_perturbations * default.cells_per_perturbation / (1 - default.control_fraction)
    assert 8_000 < expected_cells < 12_000
    with pytest.raises(ValueError, match="unknown preset"):
        SyntheticConfig.preset("k562")
    with pytest.raises(ValueError, match="n_genes"):
        simulate_perturbseq(dataclasses.replace(TINY, n_genes=50))


@pytest.mark.slow
def test_rpe1_preset_is_calibrated_to_the_real_screen():
    """A fifth of the rpe1 preset (500 perturbations, all 8.7k genes) against design §9's figures."""
    config = SyntheticConfig.preset("rpe1", n_perturbations=500)
    screen = simulate_perturbseq(config)
    table = compute_summary_stats(screen.adata, progress=False)
    table = table[table["genetic perturbation"].str.split("_").str[1] != "non-targeting"]
    assert screen.adata.n_vars == 8700
    assert 0.04 < (screen.adata.obs["gene"] == "non-targeting").mean() < 0.10
    umi = np.percentile(table["mean UMI count"], [5, 50, 95])
    assert (
        9_000 < umi[0] < 10_800 and 11_600 < umi[1] < 13_600 and 15_000 < umi[2] < 18_000
    )  # 9.9k/12.6k/16.5k
    knockdown = np.nanpercentile(table["percent knockdown"].astype(float), [25, 50, 95])
    assert -0.99 < knockdown[0] < -0.93 and -0.94 < knockdown[1] < -0.86 and -0.5 < knockdown[2] < -0.2
    mt = np.median(table["Fraction of mitochondrially encoded RNA"])
    assert 0.055 < mt < 0.07  # ~6 %
    cells = np.percentile(table["number of cells (unfiltered)"], [25, 50, 75])
    assert 30 < cells[0] < 55 and 55 < cells[1] < 85 and 90 < cells[2] < 140  # 41/70/112
    degs = table["Number of DEGs (anderson-darling)"].astype(float)
    assert 200 < degs.median() < 800 and degs.quantile(0.95) > 3 * degs.median()  # 404, long tail
    strong = (degs > 50) & (table["percent knockdown"] <= -0.3) & (table["number of cells (filtered)"] > 25)
    assert 0.45 < strong.mean() < 0.75  # RPE1: 1,564 of 2,550 (61 %) pass


def test_nonadditive_pairs_interact_by_a_known_amount_and_additive_pairs_do_not():
    small = {"cells_per_perturbation": 40.0}
    saturating = simulate_perturbseq(SyntheticConfig.preset("nonadditive", **small))
    pairs = saturating.combinations
    assert len(pairs) == 20 and (pairs["n_cells"] > 0).all()
    # both singles move shared genes the same way and those saturate: the pair is buffered
    assert (pairs["true_interaction_norm"] > 0).mean() > 0.8
    assert (pairs["true_interaction_kind"] == "buffering").mean() > 0.8
    assert (pairs["true_interaction_norm"] < pairs["true_additive_norm"]).all()
    additive = simulate_perturbseq(SyntheticConfig.preset("combinatorial", **small))
    # an additive screen interacts only on the few genes where the ±4 clip bites
    clipped = additive.combinations["true_interacting_genes"]
    assert (clipped == 0).mean() > 0.5
    assert clipped.sum() < 0.1 * pairs["true_interacting_genes"].sum()
    design = draw_design(saturating.config)
    np.testing.assert_allclose(
        np.linalg.norm(true_interactions(design), axis=1), pairs["true_interaction_norm"], rtol=1e-6
    )


def test_the_interaction_knobs_leave_other_presets_unchanged():
    plain = SyntheticConfig.preset(
        "combinatorial", n_perturbations=12, n_genes=300, cells_per_perturbation=20.0
    )
    # a saturation scale matters only on a saturating screen
    scaled = dataclasses.replace(plain, saturation=0.3)
    a, b = simulate_perturbseq(plain).adata, simulate_perturbseq(scaled).adata
    assert (a.X != b.X).nnz == 0
    with pytest.raises(ValueError, match="interaction"):
        SyntheticConfig(interaction="multiplicative")


def _regulator_edges(network: pd.DataFrame, targets: pd.Series) -> pd.DataFrame:
    regulators = set(targets)
    return network[network.source.isin(regulators) & network.target.isin(regulators)]


def test_feedback_loops_close_cycles_and_the_total_effects_sum_every_path_around_them():
    """``feedback``: child → parent edges of the opposite sign; the design's total effects are
    the direct edges' path sums step·(I − W)⁻¹ (an independent dense computation), finite because
    the spectral radius is below 1; the cascade preset has more regulator → regulator edges."""
    config = dataclasses.replace(TINY, feedback_fraction=0.5, regulator_children=1.5)
    design = draw_design(config)
    net = design.network
    between = _regulator_edges(net, design.targets.gene)
    pairs = set(zip(between.source, between.target, strict=True))
    loops = [(a, b) for a, b in pairs if (b, a) in pairs]
    assert loops
    signs = net.set_index(["source", "target"]).weight
    assert all(np.sign(signs[(a, b)]) == -np.sign(signs[(b, a)]) for a, b in loops)
    nodes = pd.Index(pd.unique(pd.concat([design.genes.index.to_series(), net.source, net.target])))
    w = np.zeros((nodes.size, nodes.size))
    w[nodes.get_indexer(net.source), nodes.get_indexer(net.target)] = net.weight
    assert np.abs(np.linalg.eigvals(w)).max() < 1
    total = np.linalg.inv(np.eye(nodes.size) - w) - np.eye(nodes.size)
    expected = total[nodes.get_indexer(design.targets.gene)][:, nodes.get_indexer(design.genes.index)]
    np.testing.assert_allclose(design.effect[:-1], expected * config.effect_scale, atol=1e-5)
    cascade = draw_design(SyntheticConfig.preset("cascade", seed=3))
    plain = draw_design(SyntheticConfig.preset("default", seed=3))
    assert len(_regulator_edges(cascade.network, cascade.targets.gene)) > len(
        _regulator_edges(plain.network, plain.targets.gene)
    )


@pytest.mark.parametrize("preset", ["default", "combinatorial"])
def test_a_screen_written_chunk_by_chunk_is_the_one_simulated_in_memory(preset, tmp_path):
    """``on_disk`` never holds the counts whole: each chunk is appended to the file as drawn and
    the statistics are read back from it; the files hold what the in-memory path writes."""
    import anndata as ad

    from gpo_vae.data.summary_stats_io import read_summary_stats
    from gpo_vae.data.synthetic import SUMMARY_SHEET, SyntheticConfig, write_synthetic_dataset

    config = SyntheticConfig.preset(preset)
    memory = write_synthetic_dataset(tmp_path / "memory", config)
    disk = write_synthetic_dataset(tmp_path / "disk", config, on_disk=True)
    one, two = ad.read_h5ad(memory["counts"]), ad.read_h5ad(disk["counts"])
    assert one.shape == two.shape and one.n_obs > 2048  # several chunks of cells
    assert (one.X != two.X).nnz == 0 and one.X.dtype == two.X.dtype
    pd.testing.assert_frame_equal(one.obs, two.obs)
    pd.testing.assert_frame_equal(one.var, two.var)
    pd.testing.assert_frame_equal(
        read_summary_stats(memory["summary_stats"], SUMMARY_SHEET),
        read_summary_stats(disk["summary_stats"], SUMMARY_SHEET),
    )
    for role in ("network", "perturbations"):
        assert memory[role].read_bytes() == disk[role].read_bytes()
    assert [p.name for p in disk["counts"].parent.iterdir()] == [
        p.name for p in memory["counts"].parent.iterdir()
    ]
    with pytest.raises(ValueError, match="plain layout"):
        write_synthetic_dataset(tmp_path / "x", SyntheticConfig.preset("counts_layer"), on_disk=True)
