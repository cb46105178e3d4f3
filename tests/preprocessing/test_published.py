"""The GPO-VAE authors' processed files are kept as published: the cells, perturbations, GRN
nodes, split and pairing their own data module trains on (issue 37)."""

from __future__ import annotations

import dataclasses
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from gpo_vae import pp
from gpo_vae.data.registry import DATASETS
from gpo_vae.preprocessing.from_file import preprocess_files
from gpo_vae.preprocessing.inspect import inspect_screen
from gpo_vae.preprocessing.pipeline import MissingSummaryStatsError
from gpo_vae.preprocessing.published import ShippedProcessingError
from gpo_vae.presets import load_preset
from tests.published_files import CONTROL, DEG_COLUMN, write_authors_files


@pytest.fixture(scope="module", params=["rpe1", "k562", "adamson"])
def authors(request, tmp_path_factory):
    dataset = request.param
    paths = write_authors_files(tmp_path_factory.mktemp(dataset), dataset)
    config = load_preset("gpo_vae_plus", dataset).preprocess
    return dataset, paths, config


def _reference_training_data(path) -> dict:
    """What the authors' data module trains on for a file with ``qc`` in its name, from its
    documented rules (not our code): every cell; label T (any label holding ``non-targeting`` is
    a control); nodes = sorted perturbations, then the sorted DE-flag genes that are not
    perturbed; the split of two ``train_test_split`` calls with seed 0 (what obs['split'] holds);
    the control each perturbed cell was matched to in ``matched_ctrl_idx_0_ot``."""
    adata = ad.read_h5ad(path)
    labels = np.array(["non-targeting" if "non-targeting" in g else g for g in adata.obs["gene"].astype(str)])
    perturbations = sorted(set(labels) - {"non-targeting"})
    flag = next(c for c in ("FC3", "FC2") if c in adata.var.columns)
    extra = sorted(set(adata.var_names[adata.var[flag].to_numpy(dtype=bool)]) - set(perturbations))
    index = np.arange(adata.n_obs)
    rest, test = train_test_split(index, train_size=0.8, random_state=0)
    train, val = train_test_split(rest, train_size=0.8, random_state=0)
    split = np.empty(adata.n_obs, dtype=object)
    split[train], split[val], split[test] = "train", "val", "test"
    return {
        "cells": adata.obs_names.tolist(),
        "labels": labels,
        "nodes": perturbations + extra,
        "split": split,
        "partner": adata.obs["matched_ctrl_idx_0_ot"].astype(str).to_numpy(),
        "doublets": adata.obs["predicted_doublet"].to_numpy(dtype=bool),
    }


def test_the_artifact_keeps_what_the_reference_data_module_trains_on(authors):
    dataset, paths, config = authors
    reference = _reference_training_data(paths["counts"])
    record = DATASETS[dataset]
    artifact = preprocess_files(
        paths["counts"], paths["summary_stats"], record.stats_sheet, config, progress=False, print_table=False
    )
    assert artifact.obs_names.tolist() == reference["cells"]
    assert artifact.obs["gene"].astype(str).tolist() == reference["labels"].tolist()
    assert list(artifact.uns["nodes"]) == reference["nodes"]
    assert artifact.obs["split"].astype(str).tolist() == reference["split"].tolist()
    perturbed = reference["labels"] != CONTROL
    names = artifact.obs_names.to_numpy()
    partner = artifact.obs["partner"].to_numpy()
    assert (names[partner][perturbed] == reference["partner"][perturbed]).all()
    assert (partner[~perturbed] == np.flatnonzero(~perturbed)).all()  # controls: their own partner
    assert (artifact.obs["qc_doublet"].to_numpy() == reference["doublets"]).all()
    steps = json.loads(artifact.uns["record"])["preprocessing"]
    assert steps["mode"] == "published" and steps["shipped"]["deg_column"] == DEG_COLUMN[dataset]
    assert steps["steps"][-1] == {
        "step": "kept as shipped",
        "cells": len(reference["cells"]),
        "perturbations": len(set(reference["labels"]) - {CONTROL}),
    }


def test_our_own_preprocessing_filters_the_published_file_again(authors):
    """``mode: ours`` judges the file's perturbations again: on this file it removes some that the
    authors kept (the double filtering a published run must not do), and says so step by step."""
    dataset, paths, config = authors
    record = DATASETS[dataset]
    ours = dataclasses.replace(config, mode="ours", qc=dataclasses.replace(config.qc, doublets=False))
    artifact = preprocess_files(
        paths["counts"], paths["summary_stats"], record.stats_sheet, ours, progress=False, print_table=False
    )
    shipped = ad.read_h5ad(paths["counts"], backed="r")
    kept = set(artifact.obs["gene"].astype(str)) - {CONTROL}
    authors_kept = set(shipped.obs["gene"].astype(str)) - {CONTROL}
    shipped.file.close()
    assert kept < authors_kept
    steps = json.loads(artifact.uns["record"])["preprocessing"]
    assert steps["mode"] == "ours"
    assert [s["step"] for s in steps["steps"]] == ["input", "strong_perturbations", "on_target", "min_cells"]
    assert steps["steps"][-1]["perturbations"] == len(kept)


def test_inspect_says_which_preprocessing_and_what_each_step_kept(authors):
    dataset, paths, config = authors
    record = DATASETS[dataset]
    lines = inspect_screen(paths["counts"], paths["summary_stats"], record.stats_sheet, config)
    text = "\n".join(lines)
    assert (
        f"preprocessing: published: a file the GPO-VAE authors processed (var[{DEG_COLUMN[dataset]!r}]"
        in text
    )
    assert "pairing: as shipped in obs['matched_ctrl_idx_0_ot']" in text
    assert "splits: random (as shipped in obs['split'])" in text
    assert "→ kept as shipped 1," in text
    ours = "\n".join(
        inspect_screen(
            paths["counts"],
            paths["summary_stats"],
            record.stats_sheet,
            dataclasses.replace(config, mode="ours"),
        )
    )
    assert "preprocessing: ours:" in ours and "→ min_cells" in ours


def test_the_python_api_keeps_the_published_file_as_the_workflow_does(tmp_path):
    paths = write_authors_files(tmp_path, "rpe1")
    config = load_preset("gpo_vae_plus", "rpe1").preprocess
    workflow = preprocess_files(
        paths["counts"],
        paths["summary_stats"],
        DATASETS["rpe1"].stats_sheet,
        config,
        progress=False,
        print_table=False,
    )
    api = pp.prepare(
        ad.read_h5ad(paths["counts"]), config, paths["summary_stats"], DATASETS["rpe1"].stats_sheet
    )
    assert api.obs_names.equals(workflow.obs_names) and list(api.uns["nodes"]) == list(workflow.uns["nodes"])
    for column in ("gene", "split", "partner", "total_qc", "cf_row"):
        assert (api.obs[column].astype(str) == workflow.obs[column].astype(str)).all(), column
    assert (api.obsm["delta_x"] == workflow.obsm["delta_x"]).all()


def test_a_file_without_split_or_pairing_gets_the_authors_split_and_our_pairing(tmp_path):
    paths = write_authors_files(tmp_path, "k562")
    adata = ad.read_h5ad(paths["counts"])
    reference = _reference_training_data(paths["counts"])
    del adata.obs["split"]
    # a pairing that crosses splits is not the one this split needs: it is computed again
    names = adata.obs_names.to_numpy()
    adata.obs["matched_ctrl_idx_0_ot"] = names[np.roll(np.arange(adata.n_obs), 7)]
    config = load_preset("gpo_vae_plus", "k562").preprocess
    artifact = pp.prepare(adata, config)
    assert artifact.obs["split"].astype(str).tolist() == reference["split"].tolist()
    record = json.loads(artifact.uns["record"])
    assert record["splits"]["source"].startswith("the authors' rule: random by cell, seed 0")
    assert record["pairing"]["features"] in ("targets", "pca")
    assert (
        "obs['matched_ctrl_idx_0_ot'] names" in record["pairing"]["shipped_not_used"]
        or "does not fit" in (record["pairing"]["shipped_not_used"])
    )
    is_control = artifact.obs["gene"].astype(str).to_numpy() == CONTROL
    partner = artifact.obs["partner"].to_numpy()
    assert is_control[partner].all()
    assert (artifact.obs["split"].to_numpy()[partner] == artifact.obs["split"].to_numpy()).all()


def test_published_mode_on_a_raw_file_names_the_missing_columns_and_the_option(tmp_path):
    from gpo_vae.data.synthetic import SyntheticConfig, simulate_perturbseq

    raw = simulate_perturbseq(SyntheticConfig.preset("default", n_perturbations=6, n_genes=300)).adata
    config = dataclasses.replace(load_preset("gpo_vae_plus", "custom").preprocess, mode="published")
    with pytest.raises(ShippedProcessingError, match=r"FC3 or FC2.*--preprocess-mode ours"):
        pp.prepare(raw, config)


def test_our_filters_without_the_statistics_stop_with_why_they_are_missing(tmp_path):
    paths = write_authors_files(tmp_path, "adamson")
    config = dataclasses.replace(load_preset("gpo_vae_plus", "adamson").preprocess, mode="ours")
    why = "Could not download summary_stats.tar.gz (offline). Download it by hand …"
    with pytest.raises(
        MissingSummaryStatsError, match=r"filters perturbations by their summary statistics.*offline"
    ):
        preprocess_files(
            paths["counts"], None, None, config, progress=False, print_table=False, missing_stats=why
        )
    # the published mode needs no statistics
    artifact = preprocess_files(
        paths["counts"],
        None,
        None,
        dataclasses.replace(config, mode="auto"),
        progress=False,
        print_table=False,
    )
    assert json.loads(artifact.uns["record"])["preprocessing"]["mode"] == "published"


def test_adamson_statistics_named_by_ensembl_id_reach_unmeasured_targets(tmp_path):
    """Adamson's csv names perturbations by Ensembl id; the authors' file keeps ids in var
    ``ensemble_id`` and, for every target, in obs ``gene_id``: both map the rows to symbols, so a
    target that is not measured still finds its row (issue 37: every perturbation stopped)."""
    paths = write_authors_files(tmp_path, "adamson")
    config = dataclasses.replace(load_preset("gpo_vae_plus", "adamson").preprocess, mode="ours")
    lines = inspect_screen(paths["counts"], paths["summary_stats"], None, config)
    table = [line for line in lines if line.split() and line.split()[0] in ("PAFAH1B1", "TOP2A", "CRKL")]
    assert len(table) == 3
    assert not any("no summary-statistics row" in line for line in lines)
    unmeasured = [line for line in table if line.split()[2] == "no"]
    assert unmeasured and all(line.split()[4].isdigit() for line in unmeasured)  # its DEG count was read


@pytest.mark.parametrize(
    "layout",
    ["gene_id", "ensemble_id", "ensembl_id", "gene_ids", "index_of_ids", "obs_only"],
)
def test_ensembl_ids_are_found_in_every_layout_real_files_use(tmp_path, layout):
    from gpo_vae.data.contract import counts_from_adata
    from gpo_vae.preprocessing.pipeline import read_screen_stats
    from tests.published_files import authors_screen, authors_summary_stats

    processed, raw = authors_screen("adamson")
    ids = processed.var["ensemble_id"].astype(str).to_numpy()
    var = pd.DataFrame(index=processed.var_names.copy())
    if layout == "index_of_ids":
        var = pd.DataFrame({"gene_symbols": processed.var_names.to_numpy()}, index=pd.Index(ids))
    elif layout != "obs_only":
        var[layout] = ids
    obs = processed.obs[["gene", "gene_id"]].copy()
    if layout != "obs_only":
        obs = obs.drop(columns="gene_id")  # only var can map the measured targets then
    screen = counts_from_adata(ad.AnnData(X=processed.X, obs=obs, var=var))
    path = tmp_path / "stats.csv"
    authors_summary_stats(raw, "adamson").to_csv(path)
    stats = read_screen_stats(path, None, screen)
    symbols = set(stats.loc[~stats["is_control"], "perturbation"])
    measured = {g for g in set(obs["gene"].astype(str)) - {CONTROL} if g in screen.var_names}
    reachable = set(obs["gene"].astype(str)) - {CONTROL} if layout == "obs_only" else measured
    assert reachable <= symbols
