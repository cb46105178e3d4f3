"""The evaluation stage: contract files, held-out references, GRN tables, the redun task.

One tiny GPO-VAE and one tiny SAMS-VAE run (3 epochs) on the session's synthetic artifact,
evaluated once per module with a scaled-down config.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from redun import File
from sklearn import metrics as skm

from gpo_vae.config import to_dict
from gpo_vae.evaluation import generation
from gpo_vae.evaluation import prediction as pred
from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.evaluation.grn_benchmark import sams_vae_node_scores
from gpo_vae.evaluation.run import COMPLETE_MARKER, evaluate_run, headline_table
from gpo_vae.model import GPOVAEModel
from gpo_vae.module import ModelConfig
from gpo_vae.preprocessing.artifact import ARTIFACT_FILE, read_artifact
from gpo_vae.report import load_tables
from gpo_vae.training.train import load_trained_model, train_model
from tasks.evaluate import evaluate_run_task
from tests.training.conftest import (  # noqa: F401  (session fixtures shared with the training tests)
    TINY_MODEL,
    TINY_TRAINING,
    artifact_dir,
    synthetic_dataset,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
TINY_EVAL = EvaluationConfig(
    n_generated_cells=60,
    iwelbo_particles=4,
    iwelbo_batch_size=400,
    summary_stats_cells=20,
    grn_ks=(20, 50),
    n_negatives=50,
    n_scatter=3,
    cpu_threads=1,
    device="cpu",
    cell_eval_cells=60,  # every generated cell: cell-eval's numbers are then exactly ours
)
CONTRACT_FILES = {
    "screen.json",
    "perturbation_table.csv",
    "prediction_metrics.csv",
    "ate_scatter.csv",
    "on_target.csv",
    "qc_ratio.csv",
    "summary_stats_agreement.csv",
    "summary_stats_points.csv",
    "grn_mask.csv",
    "grn_nodes.csv",
    "grn_edges.csv",
    "grn_statistical.csv",
    "grn_reference.csv",
    "grn_pr_curves.csv",
    "grn_ranking.csv",
    "grn_network.tsv",
    "grn.graphml",
    "predictions.h5ad",
    "baseline_predictions.h5ad",
    "real_test.h5ad",
    "scaled_scores.csv",
    "run.json",
}
#: The --networks files of the evaluation fixture, scored as methods too.
KNOWN_NETWORKS = {"network:biogrid_edges", "network:trrust_test"}
METHODS = {"model", "sams_vae", "mean_baseline", "noncontrol_mean", "control_baseline", "split_half_ceiling"}
GRN_METHODS = {
    "model",
    "model_init",
    "sams_vae",
    "correlation",
    "effect_z",
    "deconvolution",
    "sparse_inverse",
    "random",
}


@pytest.fixture(scope="module")
def runs(artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    root = tmp_path_factory.mktemp("eval_runs")
    training = TINY_TRAINING.replace(max_epochs=3)
    sizes = ("n_latent", "decoder_n_hidden", "basal_encoder_n_hidden", "embedding_encoder_n_layers")
    sizes += ("embedding_encoder_n_hidden", "n_particles")
    sams = ModelConfig.sams_vae(**{name: getattr(TINY_MODEL, name) for name in sizes})
    return {
        "model": train_model(artifact_dir, TINY_MODEL, training, root / "gpo", progress=False),
        "sams_vae": train_model(artifact_dir, sams, training, root / "sams", progress=False),
    }


@pytest.fixture(scope="module")
def networks(synthetic_dataset: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:  # noqa: F811
    """Two "biological" references: half of the true edges each, as an edge list and a TRRUST file."""
    true = pd.read_csv(synthetic_dataset["network"])
    root = tmp_path_factory.mktemp("networks")
    first, second = root / "biogrid_edges.csv", root / "trrust_test.tsv"
    true.iloc[::2][["source", "target"]].to_csv(first, index=False)
    half = true.iloc[1::2].rename(columns={"source": "tf"})[["tf", "target"]]
    half.assign(mor="Activation", pubmed_id="1").to_csv(second, sep="\t", index=False)
    return [first, second]


@pytest.fixture(scope="module")
def evaluation(
    artifact_dir: Path,  # noqa: F811
    synthetic_dataset: dict[str, Path],  # noqa: F811
    runs: dict[str, Path],
    networks: list[Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    return _full_evaluation(
        artifact_dir, synthetic_dataset, runs, networks, tmp_path_factory.mktemp("evaluation") / "eval"
    )


def _full_evaluation(
    artifact_dir: Path,  # noqa: F811
    synthetic_dataset: dict[str, Path],  # noqa: F811
    runs: dict[str, Path],
    networks: list[Path],
    out: Path,
    counts: str = "auto",
) -> Path:
    """The module's evaluation: both runs, the summary statistics, the networks and the truth."""
    return evaluate_run(
        artifact_dir,
        runs["model"],
        TINY_EVAL,
        out,
        summary_stats=synthetic_dataset["summary_stats"],
        summary_sheet="TabS_synthetic_summary_stat",
        networks=networks,
        true_network=synthetic_dataset["network"],
        sams_vae_run_dir=runs["sams_vae"],
        dataset="synthetic",
        progress=False,
        counts=counts,
    )


def test_every_contract_file_is_written_and_the_report_renders(evaluation: Path):
    written = {p.name for p in evaluation.iterdir()}
    assert written == CONTRACT_FILES | {"report.html", COMPLETE_MARKER}
    assert [p.name for p in evaluation.parent.iterdir()] == ["eval"], "a temporary directory was left behind"
    tables = load_tables(evaluation)  # raises on a broken contract
    absent = {name for name, present in tables.present().items() if not present}
    # a random split holds no label that training never saw: the unseen tables are not written
    assert absent == {"unseen_metrics", "unseen_interaction_scatter", "unseen_neighbours"}, absent
    html = (evaluation / "report.html").read_text()
    assert html.lower().count("not computed") == 1 and "Unseen-label predictions: not computed" in html
    assert "<img" in html and "GPO-VAE report: synthetic" in html


def test_prediction_table_keys(evaluation: Path, artifact_dir: Path):  # noqa: F811
    table = pd.read_csv(evaluation / "prediction_metrics.csv", keep_default_na=False, na_values=[""])
    assert set(table["method"]) == METHODS
    keys = table.groupby(["method", "reference", "subset"]).size()
    for method in METHODS - {"split_half_ceiling"}:
        for reference in ("heldout_test", "all_cells"):
            for subset in ("all_cells", "qc_pass"):
                assert (method, reference, subset) in keys.index
    assert set(table.loc[table["method"] == "split_half_ceiling", "reference"]) == {"heldout_test"}
    data = pred.EvaluationData.from_anndata(read_artifact(artifact_dir))
    expected = data.perturbations()
    assert 0 < len(expected) <= data.cells.n_perturbed
    model = table[(table["method"] == "model") & (table["reference"] == "heldout_test")]
    assert sorted(set(model["perturbation"])) == sorted(expected)
    assert table.loc[table["method"] == "control_baseline", "pearson"].isna().all()
    assert (table.loc[table["method"] == "control_baseline", "r2"] <= 0).all()
    mean = table[(table["method"] == "mean_baseline") & (table["reference"] == "heldout_test")]
    assert mean["pearson"].between(-1, 1).all() and mean["pearson"].mean() > 0.5  # strong synthetic effects
    headline = headline_table(table).set_index("method")
    assert headline.loc["model", "mean_pearson"] == pytest.approx(
        model.query("subset == 'all_cells'")["pearson"].mean()
    )


def test_run_json_and_side_tables(evaluation: Path):
    run = json.loads((evaluation / "run.json").read_text())
    assert run["dataset"] == "synthetic" and run["seed"] == TINY_EVAL.seed
    assert run["config"]["evaluation"] == to_dict(TINY_EVAL)
    metrics = run["metrics"]
    for key in (
        "test_iwelbo",
        "sams_vae_test_iwelbo",
        "best_val_loss",
        "true_network_auroc",
        "model_mean_pearson",
    ):
        assert isinstance(metrics[key], float) and np.isfinite(metrics[key]), key
    assert metrics["test_iwelbo"] < 0
    edges = pd.read_csv(evaluation / "grn_edges.csv", keep_default_na=False)
    assert metrics["grn_edges"] == len(edges) and (edges["p"] > 0.5).all()
    scatter = pd.read_csv(evaluation / "ate_scatter.csv", keep_default_na=False, na_values=[""])
    assert scatter["perturbation"].nunique() == min(TINY_EVAL.n_scatter, run["data"]["n_perturbations"])
    assert len(scatter) == scatter["perturbation"].nunique() * run["data"]["n_genes"]
    qc = pd.read_csv(evaluation / "qc_ratio.csv")
    assert qc["t"].tolist() == [3.0, 4.0, 5.0]
    assert qc[["pass_ratio_generated", "pass_ratio_data"]].apply(lambda c: c.is_monotonic_increasing).all()
    points = pd.read_csv(evaluation / "summary_stats_points.csv", keep_default_na=False, na_values=[""])
    agreement = pd.read_csv(evaluation / "summary_stats_agreement.csv").set_index("quantity")
    assert set(agreement.index) == {"knockdown", "n_degs"}
    for quantity, n in agreement["n"].items():
        assert (points["quantity"] == quantity).sum() == n


def test_true_network_auroc_matches_an_independent_computation(evaluation: Path, synthetic_dataset):  # noqa: F811
    mask = pd.read_csv(evaluation / "grn_mask.csv", index_col=0, keep_default_na=False, na_values=[""])
    kinds = pd.read_csv(evaluation / "grn_nodes.csv", keep_default_na=False)
    nodes = mask.index.tolist()
    assert kinds["node"].tolist() == nodes and mask.columns.tolist() == nodes
    truth = pd.read_csv(synthetic_dataset["network"])
    position = {node: i for i, node in enumerate(nodes)}
    adjacency = np.zeros((len(nodes), len(nodes)), dtype=bool)
    for source, target in zip(truth["source"], truth["target"], strict=True):
        if source in position and target in position:
            adjacency[position[source], position[target]] = True
    pairs = (kinds["kind"].to_numpy() == "P")[:, None] & ~np.eye(len(nodes), dtype=bool)
    expected_auroc = skm.roc_auc_score(adjacency[pairs], mask.to_numpy()[pairs])
    expected_auprc = skm.average_precision_score(adjacency[pairs], mask.to_numpy()[pairs])

    reference = pd.read_csv(evaluation / "grn_reference.csv", keep_default_na=False, na_values=[""])
    row = reference[(reference["method"] == "model") & (reference["network"] == "true_network")].iloc[0]
    assert row["auroc"] == pytest.approx(expected_auroc)
    assert row["auprc"] == pytest.approx(expected_auprc)
    assert row["n_pairs"] == pairs.sum() and row["n_positive"] == adjacency[pairs].sum()
    assert json.loads((evaluation / "run.json").read_text())["metrics"][
        "true_network_auroc"
    ] == pytest.approx(expected_auroc)
    n_perturbed = int((kinds["kind"] == "P").sum())
    assert set(reference["network"]) == {"biogrid_edges", "trrust_test", "union", "true_network"}
    # each known network is also a method (the prior-knowledge baseline), never scored against
    # itself or the union that holds it
    others = {
        "biogrid_edges": {"network:trrust_test"},
        "trrust_test": {"network:biogrid_edges"},
        "union": set(),
    }
    for network, known in others.items():
        part = reference[reference["network"] == network]
        assert set(part["method"]) == GRN_METHODS | known
        assert (part["n_pairs"] == n_perturbed * (n_perturbed - 1)).all()
    ours = reference[reference["method"].isin(GRN_METHODS)]
    union = ours[ours["network"] == "union"].set_index("method")["n_positive"]
    halves = ours[ours["network"].isin(["biogrid_edges", "trrust_test"])].groupby("method")["n_positive"]
    assert union.to_dict() == halves.sum().to_dict()  # the two halves are disjoint
    prior = reference[
        (reference["method"] == "network:trrust_test") & (reference["network"] == "biogrid_edges")
    ]
    # disjoint halves: the trrust edges hold no biogrid edge, so ranking by them is chance or worse
    assert prior["true_positives"].iloc[0] <= row["n_predicted"]
    assert prior["auprc"].iloc[0] <= prior["positive_rate"].iloc[0] + 1e-12
    curves = pd.read_csv(evaluation / "grn_pr_curves.csv", keep_default_na=False)
    assert set(zip(curves["method"], curves["network"], strict=True)) == set(
        zip(reference["method"], reference["network"], strict=True)
    )


def test_the_on_target_change_is_scored_as_a_ratio_and_a_sign_count(evaluation: Path):
    """on_target.csv holds each perturbation's held-out ATE at its own target; run.json and the
    report give the median predicted / observed ratio and the signs that agree."""
    table = pd.read_csv(evaluation / "on_target.csv")
    metrics = pd.read_csv(evaluation / "prediction_metrics.csv")
    assert set(table["perturbation"]) <= set(metrics["perturbation"])
    assert (table["perturbation"] == table["target"]).all()  # singles: the target is the label
    scatter = pd.read_csv(evaluation / "ate_scatter.csv").set_index(["perturbation", "gene"])
    for _, row in table[table["perturbation"].isin(scatter.index.get_level_values(0))].iterrows():
        assert row["observed"] == pytest.approx(scatter.loc[(row["perturbation"], row["target"]), "observed"])
        assert row["model"] == pytest.approx(scatter.loc[(row["perturbation"], row["target"]), "predicted"])
    run = json.loads((evaluation / "run.json").read_text())["metrics"]
    moved = table[table["observed"] != 0]
    assert run["on_target_n"] == len(moved)
    assert run["model_on_target_ratio_median"] == pytest.approx((moved["model"] / moved["observed"]).median())
    signs = int((np.sign(moved["model"]) == np.sign(moved["observed"])).sum())
    assert run["model_on_target_sign_agreement"] == pytest.approx(signs / len(moved))
    assert f"with the observed sign for {signs} of {len(moved)}" in (evaluation / "report.html").read_text()


def test_grn_statistical_has_matched_k_rows_for_every_method(evaluation: Path):
    table = pd.read_csv(
        evaluation / "grn_statistical.csv", dtype={"k": str}, keep_default_na=False, na_values=[""]
    )
    n_model = len(pd.read_csv(evaluation / "grn_edges.csv"))
    metrics = json.loads((evaluation / "run.json").read_text())["metrics"]
    # the tiny model's mask started at p = 0.5 everywhere: its graph is its top grn_density share
    # of the pairs from a perturbed gene, not every pair that rose above 0.5 by noise
    nodes = pd.read_csv(evaluation / "grn_nodes.csv")
    n_pairs = int((nodes["kind"] == "P").sum()) * (len(nodes) - 1)
    assert metrics["grn_threshold_calibrated"] == 1 and metrics["grn_threshold"] > 0.5
    assert n_model == round(TINY_EVAL.grn_density * n_pairs)
    own = f"p>{metrics['grn_threshold']:.3g}"
    assert set(table["method"]) == GRN_METHODS | KNOWN_NETWORKS
    for method in GRN_METHODS | KNOWN_NETWORKS:
        rows = table[table["method"] == method].set_index("k")
        assert {own, str(n_model), "20", "50"} <= set(rows.index)
        # a method without probabilities takes its top-K at the model's size as its graph
        assert rows.loc[own, "n_edges"] == rows.loc[str(n_model), "n_edges"] == n_model
        assert (rows["n_tested"] <= rows["n_edges"]).all()
        assert (rows["true_positives"] + rows["false_positives"] == rows["n_tested"]).all()


def test_every_grn_method_is_ranked_at_the_models_edge_count(evaluation: Path):
    """grn_ranking.csv: one row per method at the model's K, ranked by AUPRC against the true
    network, values copied from the reference and statistical tables; run.json carries them and
    grn_network.tsv says which method made the graph."""
    ranking = pd.read_csv(evaluation / "grn_ranking.csv")
    statistical = pd.read_csv(evaluation / "grn_statistical.csv", dtype={"k": str})
    reference = pd.read_csv(evaluation / "grn_reference.csv")
    n_model = len(pd.read_csv(evaluation / "grn_edges.csv"))
    assert set(ranking["method"]) == GRN_METHODS | KNOWN_NETWORKS
    assert (ranking["k"] == n_model).all() and (ranking["reference"] == "true_network").all()
    assert ranking["auprc"].is_monotonic_decreasing
    assert ranking["rank"].tolist() == list(range(1, len(ranking) + 1))
    truth = reference[reference["network"] == "true_network"].set_index("method")
    at_k = statistical[statistical["k"] == str(n_model)].set_index("method")
    metrics = json.loads((evaluation / "run.json").read_text())["metrics"]
    for row in ranking.itertuples():
        assert row.auprc == pytest.approx(truth.loc[row.method, "auprc"])
        assert row.tied_at_k == at_k.loc[row.method, "tied"]
        if row.tied_at_k * 2 > n_model:  # mostly picked by pair order (the paper's equal initial logits)
            assert np.isnan(row.precision_at_k) and np.isnan(row.mean_wasserstein)
            continue
        assert row.precision_at_k == pytest.approx(truth.loc[row.method, "precision"])
        assert row.mean_wasserstein == pytest.approx(at_k.loc[row.method, "mean_wasserstein"], nan_ok=True)
        key = row.method.replace(":", "_")
        assert metrics[f"grn_{key}_auprc"] == pytest.approx(row.auprc)
    model = ranking.set_index("method").loc["model"]
    assert metrics["grn_model_rank"] == model["rank"]
    best = ranking[~ranking["method"].isin(["model", "sams_vae"])].iloc[0]
    assert metrics["grn_model_minus_best_baseline"] == pytest.approx(model["auprc"] - best["auprc"])
    network = pd.read_csv(evaluation / "grn_network.tsv", sep="\t")
    assert list(network.columns) == ["source", "target", "weight", "method"]
    assert network["method"].str.startswith("trained GRN mask, probability > ").all()
    report = (evaluation / "report.html").read_text()
    assert 'id="grn-ranking"' in report and f"At matched K = {n_model} edges the model ranks" in report


def test_the_graph_reports_what_training_added_to_its_initial_mask(evaluation: Path, runs: dict[str, Path]):
    """model_init is the mask the run started from; run.json holds model minus it."""
    model = GPOVAEModel.load(runs["model"])
    metrics = json.loads((evaluation / "run.json").read_text())["metrics"]
    reference = pd.read_csv(evaluation / "grn_reference.csv", keep_default_na=False, na_values=[""])
    truth = reference[reference["network"] == "true_network"].set_index("method")["auprc"]
    assert metrics["model_init_true_network_auprc"] == pytest.approx(truth["model_init"])
    assert metrics["grn_gain_true_network_auprc"] == pytest.approx(truth["model"] - truth["model_init"])
    statistical = pd.read_csv(evaluation / "grn_statistical.csv", dtype={"k": str})
    at_k = statistical[statistical["k"] == str(metrics["grn_edges"])].set_index("method")["mean_wasserstein"]
    assert metrics["grn_gain_mean_wasserstein"] == pytest.approx(at_k["model"] - at_k["model_init"])
    if model.module.config.mask_init == "constant":
        # every pair starts equal: the initial mask ranks nothing, its AUPRC is the positive rate
        row = reference[(reference["network"] == "true_network") & (reference["method"] == "model_init")]
        assert row["auprc"].iloc[0] == pytest.approx(row["positive_rate"].iloc[0])


def test_sams_vae_node_scores_are_a_similarity_over_trained_nodes(runs: dict[str, Path]):
    model, info = load_trained_model(runs["sams_vae"])
    scores = sams_vae_node_scores(model)
    n_perturbed = info["n_perturbed"]
    assert scores.shape == (model.n_nodes, model.n_nodes)
    assert np.allclose(scores, scores.T) and (scores >= 0).all() and (scores <= 1).all()
    assert (scores[n_perturbed:] == 0).all() and (scores[:, n_perturbed:] == 0).all()
    assert np.allclose(np.diag(scores)[:n_perturbed], 1.0)
    with pytest.raises(ValueError, match="latent-sized"):
        sams_vae_node_scores(load_trained_model(runs["model"])[0])


def test_generated_cells_of_a_perturbation_do_not_depend_on_the_others(runs, artifact_dir):  # noqa: F811
    model, info = load_trained_model(runs["model"])
    data = pred.EvaluationData.from_anndata(read_artifact(artifact_dir))
    perturbations = data.perturbations()
    config = TINY_EVAL.replace(n_generated_cells=30)
    both = generation.generate_and_summarise(
        model, info["node_names"], perturbations[:3], data.genes, config, "non-targeting"
    )
    alone = generation.generate_and_summarise(
        model, info["node_names"], perturbations[2:3], data.genes, config, "non-targeting"
    )
    pd.testing.assert_frame_equal(both.ate().iloc[2:3], alone.ate())
    other_seed = generation.generate_and_summarise(
        model, info["node_names"], perturbations[2:3], data.genes, config.replace(seed=1), "non-targeting"
    )
    assert not np.allclose(other_seed.ate().to_numpy(), alone.ate().to_numpy())


def test_encoded_controls_predict_from_the_training_controls(runs, artifact_dir):  # noqa: F811
    import dataclasses

    model, info = load_trained_model(runs["model"])
    model.config = dataclasses.replace(model.config, prediction_basal="encoded_controls")
    data = pred.EvaluationData.from_anndata(read_artifact(artifact_dir))
    perturbations = data.perturbations()[:2]
    config = TINY_EVAL.replace(n_generated_cells=30)
    args = (model, info["node_names"], perturbations, data.genes, config, "non-targeting")
    with pytest.raises(ValueError, match="pass control_counts"):
        generation.generate_and_summarise(*args)
    first = generation.generate_and_summarise(*args, control_counts=data.training_controls)
    again = generation.generate_and_summarise(*args, control_counts=data.training_controls)
    pd.testing.assert_frame_equal(first.ate(), again.ate())
    controls = data.training_controls()
    train = data.cells.rows("train")
    assert controls.shape[0] == int((data.labels[train] == "non-targeting").sum())
    # one control cell encoded instead of all: the prediction follows the cells it encodes
    shifted = generation.generate_and_summarise(*args, control_counts=lambda b: controls[:1])
    assert not np.allclose(shifted.control_mean, first.control_mean)


def test_evaluation_task_is_content_addressed(artifact_dir: Path, runs: dict[str, Path], tmp_path: Path):  # noqa: F811
    artifact = File(str(artifact_dir / ARTIFACT_FILE))
    model = File(str(runs["model"] / "model.pt"))
    config = to_dict(TINY_EVAL.replace(n_generated_cells=30, grn_ks=(10,)))
    report = Path(evaluate_run_task.func(artifact, model, config, str(tmp_path)).path)
    assert report.name == "report.html" and (report.parent / COMPLETE_MARKER).exists()
    assert not (report.parent / "summary_stats_points.csv").exists()  # no summary statistics given
    written = report.stat().st_mtime_ns
    assert Path(evaluate_run_task.func(artifact, model, config, str(tmp_path)).path) == report
    assert report.stat().st_mtime_ns == written, "a finished evaluation was recomputed"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [report.parent.name, f".{report.parent.name}.lock"]
    )


def test_a_top_de_beyond_the_screens_genes_is_capped_and_labelled_so(
    artifact_dir: Path,  # noqa: F811
    runs: dict[str, Path],
    tmp_path: Path,
):
    n_genes = read_artifact(artifact_dir).n_vars
    config = TINY_EVAL.replace(
        n_generated_cells=30, grn_ks=(10,), top_de=n_genes + 5000, jaccard_ks=(20, 9999)
    )
    out = evaluate_run(artifact_dir, runs["model"], config, tmp_path / "eval", progress=False)
    columns = set(pd.read_csv(out / "prediction_metrics.csv").columns)
    assert f"pearson_top{n_genes}" in columns and f"pearson_top{n_genes + 5000}" not in columns
    assert f"jaccard_top{n_genes}" in columns and "jaccard_top9999" not in columns
    record = json.loads((out / "run.json").read_text())
    assert record["data"]["top_de"] == n_genes and record["data"]["jaccard_ks"] == [20, n_genes]
    assert record["config"]["evaluation"]["top_de"] == n_genes + 5000  # the setting as given
    html = (out / "report.html").read_text()
    assert f"top-{n_genes + 5000}" not in html and f"top-{n_genes} DE genes" in html


def test_an_evaluation_reading_the_counts_from_disk_gives_the_same_tables(
    evaluation: Path,
    artifact_dir: Path,  # noqa: F811
    synthetic_dataset: dict[str, Path],  # noqa: F811
    runs: dict[str, Path],
    networks: list[Path],
    tmp_path: Path,
):
    """``counts="disk"`` reads the artifact's cells a block at a time in every stage; every table,
    number and cell file is the same as the in-memory evaluation's (the module fixture)."""
    out = _full_evaluation(artifact_dir, synthetic_dataset, runs, networks, tmp_path / "eval", counts="disk")
    tables = sorted(p.name for p in evaluation.iterdir() if p.suffix in (".csv", ".tsv", ".graphml", ".json"))
    assert len(tables) > 15
    for name in tables:
        if name == "run.json":
            continue
        assert (out / name).read_bytes() == (evaluation / name).read_bytes(), name
    memory, disk = (json.loads((folder / "run.json").read_text()) for folder in (evaluation, out))
    assert disk["metrics"] == memory["metrics"]
    assert disk["data"] == memory["data"]
    for name in ("predictions.h5ad", "baseline_predictions.h5ad", "real_test.h5ad"):
        a, b = (ad.read_h5ad(folder / name) for folder in (evaluation, out))
        assert (a.X != b.X).nnz == 0 and (a.layers["counts"] != b.layers["counts"]).nnz == 0, name
        pd.testing.assert_frame_equal(a.obs, b.obs)


def test_an_unknown_counts_place_is_refused(artifact_dir: Path, runs: dict[str, Path], tmp_path: Path):  # noqa: F811
    with pytest.raises(ValueError, match="counts must be 'auto', 'memory' or 'disk'"):
        evaluate_run(artifact_dir, runs["model"], TINY_EVAL, tmp_path / "eval", progress=False, counts="gpu")
    assert not (tmp_path / "eval").exists()
