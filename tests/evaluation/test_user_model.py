"""The files and the Python API a user takes away from an evaluation agree with its report:
cell-eval on the exported cells, and GPOVAEModel's predict_shift, predict and grn at their defaults.

The run and evaluation fixtures are test_run.py's (one tiny GPO-VAE, one tiny SAMS-VAE, evaluated
with a scaled-down config).
"""

# ruff: noqa: F811  (the fixtures imported below are redefined as test arguments, as pytest means them)
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gpo_vae.model import GPOVAEModel, PredictionError
from gpo_vae.preprocessing.artifact import read_artifact
from tests.evaluation.test_run import TINY_EVAL, evaluation, networks, runs  # noqa: F401  (fixtures)
from tests.training.conftest import artifact_dir, synthetic_dataset  # noqa: F401  (session fixtures)


def _cell_eval(predictions: Path, real: Path, out: Path) -> pd.DataFrame:
    """``cell-eval run --profile minimal`` as a user runs it; its per-perturbation results."""
    command = [sys.executable, "-m", "cell_eval", "run", "-ap", str(predictions), "-ar", str(real)]
    command += ["--control-pert", "non-targeting", "--profile", "minimal", "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return pd.read_csv(out / "results.csv").set_index("perturbation")


def test_cell_eval_scores_the_exported_cells_as_the_report_does(evaluation: Path, tmp_path: Path):
    """``cell-eval run`` reads the exported files as written: every scored cell is in
    predictions.h5ad, so its pearson_delta is the report's held-out ATE Pearson of the model (both
    on log2(1 + s·x/lib)) and its discrimination_score_l1 our discrimination_l1; on
    baseline_predictions.h5ad its pearson_delta is the training mean's."""
    if importlib.util.find_spec("cell_eval") is None:
        pytest.skip("cell-eval is not installed (pip install -e '.[dev]')")
    predicted = ad.read_h5ad(evaluation / "predictions.h5ad")
    real = ad.read_h5ad(evaluation / "real_test.h5ad")
    baseline = ad.read_h5ad(evaluation / "baseline_predictions.h5ad")
    assert predicted.var_names.equals(real.var_names) and baseline.var_names.equals(real.var_names)
    assert (
        set(predicted.obs["target_gene"]) == set(real.obs["target_gene"]) == set(baseline.obs["target_gene"])
    )
    assert "non-targeting" in set(real.obs["perturbation"])
    assert np.array_equal(predicted.layers["counts"].sum(axis=1).A1 > 0, predicted.X.sum(axis=1).A1 > 0)
    assert (predicted.obs["perturbation"].value_counts() == TINY_EVAL.n_generated_cells).all()
    exported = json.loads((evaluation / "run.json").read_text())["data"]["cell_eval"]
    assert exported["cells_per_label"] == exported["scored_cells_per_label"] == TINY_EVAL.n_generated_cells
    assert exported["predicted_cells"] == predicted.n_obs and exported["real_test_cells"] == real.n_obs
    assert exported["bytes"]["predictions.h5ad"] == (evaluation / "predictions.h5ad").stat().st_size
    report = (evaluation / "report.html").read_text()
    assert f"predictions.h5ad holds every one of the {TINY_EVAL.n_generated_cells} generated cells" in report
    ours = pd.read_csv(evaluation / "prediction_metrics.csv")
    ours = ours[(ours["reference"] == "heldout_test") & (ours["subset"] == "all_cells")]
    model = ours[ours["method"] == "model"].set_index("perturbation")
    results = _cell_eval(evaluation / "predictions.h5ad", evaluation / "real_test.h5ad", tmp_path / "model")
    assert set(results.index) == set(model.index)
    theirs = results.loc[model.index]
    assert np.allclose(theirs["pearson_delta"], model["pearson"], atol=1e-6)
    # discrimination: the rank of the true effect by L1 distance, the target gene left out
    assert np.allclose(theirs["discrimination_score_l1"], model["discrimination_l1"], atol=1e-9)
    mean = ours[ours["method"] == "mean_baseline"].set_index("perturbation")
    results = _cell_eval(
        evaluation / "baseline_predictions.h5ad", evaluation / "real_test.h5ad", tmp_path / "mean"
    )
    assert np.allclose(results.loc[mean.index, "pearson_delta"], mean["pearson"], atol=1e-6)


def test_the_user_model_reproduces_the_evaluated_ate_and_graph(evaluation: Path, runs: dict[str, Path]):
    """predict_shift at its defaults reads the evaluation's settings: the report's model ATE."""
    model = GPOVAEModel.load(runs["model"], evaluation=evaluation)
    assert model.prediction_settings.source == str(evaluation / "run.json")
    assert model.prediction_settings.n_cells == TINY_EVAL.n_generated_cells
    scatter = pd.read_csv(evaluation / "ate_scatter.csv")
    labels = list(dict.fromkeys(scatter["perturbation"]))
    shift = model.predict_shift(labels)
    # predict at its defaults draws the cells the evaluation scored and exported
    exported = ad.read_h5ad(evaluation / "predictions.h5ad")
    cells = model.predict(labels[:1], controls=False)
    mine = exported[exported.obs["perturbation"] == labels[0]]
    assert (
        cells.X != sp.csr_matrix(mine.layers["counts"])
    ).nnz == 0 and cells.n_obs == TINY_EVAL.n_generated_cells
    for label in labels:
        rows = scatter[scatter["perturbation"] == label].set_index("gene")["predicted"]
        assert np.allclose(shift.loc[rows.index, label], rows, atol=1e-9), label
    edges = model.grn()  # the report's threshold: calibrated when the mask started at 0.5
    record = json.loads((evaluation / "run.json").read_text())
    assert len(edges) == record["metrics"]["grn_edges"] and not (edges["source"] == edges["target"]).any()
    assert (edges["probability"] > record["metrics"]["grn_threshold"]).all()
    network = pd.read_csv(evaluation / "grn_network.tsv", sep="\t", keep_default_na=False)
    assert list(network.columns) == ["source", "target", "weight", "method"] and len(network) == len(edges)
    assert network["method"].str.startswith("trained GRN mask").all()
    assert np.allclose(network["weight"], edges["probability"])
    mask = pd.read_csv(evaluation / "grn_mask.csv", index_col=0, keep_default_na=False, na_values=[""])
    threshold = record["metrics"]["grn_threshold"]
    assert np.isnan(np.diag(mask.to_numpy())).all() and int((mask.to_numpy() > threshold).sum()) == len(edges)
    matrix = model.grn(as_matrix=True)
    assert np.allclose(matrix.to_numpy(), mask.to_numpy(), equal_nan=True)
    networkx = pytest.importorskip("networkx")
    graph = networkx.read_graphml(evaluation / "grn.graphml")
    assert (
        graph.is_directed() and graph.number_of_nodes() == len(mask) and graph.number_of_edges() == len(edges)
    )
    source, target, weight, method = network.iloc[0]
    assert graph.edges[source, target]["weight"] == pytest.approx(weight)
    assert graph.graph["method"] == method  # the GraphML says which method made it, as the TSV
    kinds = pd.read_csv(evaluation / "grn_nodes.csv", keep_default_na=False).set_index("node")["kind"]
    assert {graph.nodes[n]["kind"] for n in kinds.index[kinds == "P"]} == {"perturbed"}


def test_the_user_model_generates_anndata_and_says_what_it_cannot_answer(
    runs: dict[str, Path],
    artifact_dir: Path,
):
    model = GPOVAEModel.load(runs["model"])
    first, second = model.perturbations[:2]
    cells = model.predict([first, f"{first}+{second}"], n_cells=30, seed=3)
    assert cells.shape == (90, len(model.genes)) and list(cells.var_names) == list(model.genes)
    assert list(cells.obs["perturbation"].cat.categories) == [first, f"{first}+{second}", "non-targeting"]
    assert sp.issparse(cells.X) and np.array_equal(cells.X.data, np.round(cells.X.data))
    assert cells.uns["gpo_vae"]["library_size"] == pytest.approx(model.median_library_size)
    again = model.predict([first], n_cells=30, seed=3, controls=False)
    assert np.array_equal(again.X.toarray(), cells.X[:30].toarray()), (
        "a label's cells depend on its seed alone"
    )
    artifact = read_artifact(artifact_dir)
    latent = model.latent(artifact[:50])
    assert latent.shape == (50, model.module.config.n_latent) and np.isfinite(latent).all()
    with pytest.raises(PredictionError, match=r"NOT_A_GENE.*model\.perturbations"):
        model.predict(["NOT_A_GENE"])
    downstream = model.nodes[len(model.perturbations)]
    with pytest.raises(PredictionError, match="no training cell carries"):
        model.predict([downstream])
    with pytest.raises(PredictionError, match="one batch"):
        model.predict([first], batch="K562")
    with pytest.raises(PredictionError, match="lacks"):
        model.latent(artifact[:5, :10])
