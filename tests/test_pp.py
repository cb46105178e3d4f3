"""``gpo_vae.pp.prepare`` on screens saved the way other tools save them, and training from a raw
screen in one call (:class:`gpo_vae.GPOVAEModel`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpo_vae import GPOVAEModel, pp
from gpo_vae.config import to_dict
from gpo_vae.data.contract import DataContractError
from gpo_vae.data.layout import LayoutError
from gpo_vae.data.synthetic import SyntheticConfig, saved_layout, simulate_perturbseq
from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.model import PredictionError
from gpo_vae.preprocessing.config import PreprocessConfig, QCConfig
from tests.training.conftest import TINY_MODEL, TINY_TRAINING

QUICK = PreprocessConfig(qc=QCConfig(doublets=False))


@pytest.fixture(scope="module")
def screen():
    config = SyntheticConfig.preset(
        "default", n_perturbations=20, n_genes=600, cells_per_perturbation=100, control_fraction=0.2
    )
    return simulate_perturbseq(config)


@pytest.fixture(scope="module")
def plain(screen):
    return pp.prepare(screen.adata, QUICK)


def _same_artifact(a, b) -> None:
    assert list(a.uns["nodes"]) == list(b.uns["nodes"])
    assert (a.obs["gene"].astype(str).to_numpy() == b.obs["gene"].astype(str).to_numpy()).all()
    assert (a.obs["split"].to_numpy() == b.obs["split"].to_numpy()).all()
    assert (a.X != b.X).nnz == 0


def test_prepare_builds_the_same_artifact_however_the_screen_was_saved(screen, plain):
    before = screen.adata.copy()
    _same_artifact(plain, pp.prepare(saved_layout(screen.adata, "counts_layer"), QUICK))
    _same_artifact(plain, pp.prepare(saved_layout(screen.adata, "guides"), QUICK))
    renamed = screen.adata.copy()
    labels = renamed.obs["gene"].astype(str).replace({"non-targeting": "NTC"})
    renamed.obs = renamed.obs.drop(columns="gene").assign(target_gene=labels.to_numpy())
    _same_artifact(plain, pp.prepare(renamed, QUICK, perturbation_key="target_gene", control_label="ntc"))
    assert (screen.adata.X != before.X).nnz == 0 and screen.adata.obs.equals(before.obs), "input untouched"
    assert len(plain.uns["nodes"]) > 2 and plain.obsm["D"].shape == (plain.n_obs, len(plain.uns["nodes"]))


def test_prepare_says_what_is_wrong_with_a_screen(screen):
    with pytest.raises(DataContractError, match=r"no column 'perturbation'.*--perturbation-key"):
        pp.prepare(screen.adata, QUICK, perturbation_key="perturbation")
    normalised = saved_layout(screen.adata, "counts_layer")
    del normalised.layers["counts"]
    with pytest.raises(DataContractError, match="not raw counts"):
        pp.prepare(normalised, QUICK)
    with pytest.raises(LayoutError, match=r"counts_layers.*'counts_layer'"):
        pp.prepare(screen.adata, QUICK, counts_layers="counts")


def test_a_raw_screen_trains_in_one_call(screen, plain, tmp_path: Path):
    config = {
        "preprocess": to_dict(QUICK),
        "model": to_dict(TINY_MODEL),
        "training": to_dict(TINY_TRAINING.replace(max_epochs=2)),
    }
    model = GPOVAEModel.train(screen.adata, config, run_dir=tmp_path / "run", progress=False)
    assert model.nodes == [str(n) for n in plain.uns["nodes"]]
    assert (tmp_path / "run" / "artifact" / "artifact.h5ad").is_file()
    # the config's evaluation section (here its defaults) is what predict_shift defaults to
    assert model.prediction_settings.source == str(tmp_path / "run" / "evaluation.json")
    assert model.prediction_settings.n_cells == EvaluationConfig().n_generated_cells
    again = GPOVAEModel.train(plain, config, run_dir=tmp_path / "run", progress=False)
    assert np.array_equal(
        again.grn(as_matrix=True).to_numpy(), model.grn(as_matrix=True).to_numpy(), equal_nan=True
    )
    written = (tmp_path / "run" / "artifact" / "artifact.h5ad").stat().st_mtime_ns
    other = pp.prepare(screen.adata, dataclasses.replace(QUICK, seed=1))
    with pytest.raises(PredictionError, match="another preprocessing"):
        GPOVAEModel.train(other, config, run_dir=tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "artifact" / "artifact.h5ad").stat().st_mtime_ns == written, "left as it was"
    # the run records its artifact relative to itself: a moved run still answers from its cells
    import json
    import shutil

    assert json.loads((tmp_path / "run" / "config.json").read_text())["artifact_path"] == "artifact"
    before = model.predict_shift(model.perturbations[:2], n_cells=20)
    shutil.move(tmp_path / "run", tmp_path / "moved")
    moved = GPOVAEModel.load(tmp_path / "moved")
    pd.testing.assert_frame_equal(moved.predict_shift(moved.perturbations[:2], n_cells=20), before)


def test_prepare_and_the_workflow_build_the_same_artifact_from_one_crispra_file(tmp_path: Path):
    """The workflow computes summary statistics from the cells of a screen given without any
    (tasks/acquire.py), writes them and preprocesses the file (tasks/preprocess.py); pp.prepare on
    the same cells must judge them by the same numbers: a CRISPRa screen stays CRISPRa."""
    import json

    import anndata as ad

    from gpo_vae.data.contract import read_counts_h5ad
    from gpo_vae.data.layout import ScreenLayout
    from gpo_vae.data.summary_stats import compute_summary_stats, write_summary_stats_csv
    from gpo_vae.preprocessing.from_file import preprocess_files

    screen = simulate_perturbseq(
        SyntheticConfig.preset("crispra", n_perturbations=16, n_genes=500, cells_per_perturbation=150)
    )
    path = tmp_path / "crispra.h5ad"
    screen.adata.write_h5ad(path)
    layout = ScreenLayout()
    # the workflow's two stages, as its tasks call them
    stats = write_summary_stats_csv(
        compute_summary_stats(read_counts_h5ad(path, layout), progress=False), tmp_path / "stats.csv"
    )
    workflow = preprocess_files(path, stats, None, QUICK, layout, progress=False, print_table=False)
    api = pp.prepare(ad.read_h5ad(path), QUICK)
    _same_artifact(workflow, api)
    assert (workflow.obsm["D"] != api.obsm["D"]).nnz == 0
    assert workflow.obs.equals(api.obs) and workflow.var.equals(api.var)
    records = [json.loads(a.uns["record"]) for a in (workflow, api)]
    assert records[0]["modality"]["resolved"] == records[1]["modality"]["resolved"] == "crispra"
    # everything but the file checksums (only a file has them) and the seconds each stage took
    for record in records:
        record.pop("input"), record.pop("timings", None)
    assert records[0] == records[1]


def test_without_a_config_the_api_uses_the_laptop_preset_that_a_small_screen_passes():
    """config=None is configs/gpo_vae_plus_custom.yaml (installed as gpo_vae.configs): GPO-VAE+
    sized for a laptop, with filters a screen of 60 cells a label passes where the published ones
    stop it, and the stop names the key and how to change it from Python."""
    import json

    from gpo_vae.preprocessing.filter_table import PerturbationFilterError
    from gpo_vae.presets import load_preset, preset_path, run_config_from

    preset = load_preset()
    assert preset_path().name == "gpo_vae_plus_custom.yaml"
    assert run_config_from(None) == preset
    assert preset.model.mask_init == "effects" and preset.model.n_latent <= 32  # ours, laptop-sized
    assert preset.training.max_steps <= 4000
    small = simulate_perturbseq(
        SyntheticConfig.preset(
            "default", n_perturbations=10, n_genes=400, cells_per_perturbation=60, control_fraction=0.2
        )
    )
    artifact = pp.prepare(small.adata)
    assert int(artifact.uns["n_perturbed"]) >= preset.preprocess.filters.min_perturbations
    assert json.loads(artifact.uns["record"])["config"] == to_dict(preset.preprocess)
    with pytest.raises(PerturbationFilterError, match=r"load_preset\(overrides=\{'preprocess\.filters\."):
        pp.prepare(small.adata, PreprocessConfig())  # the published filters: 101 cells a label
