"""Unseen labels: their baselines, interaction and rank metrics, and the regulator weights."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gpo_vae.evaluation import unseen as u
from gpo_vae.evaluation.run import evaluate_run
from gpo_vae.preprocessing.artifact import write_artifact
from gpo_vae.preprocessing.config import PreprocessConfig, QCConfig, SplitConfig
from gpo_vae.preprocessing.from_file import preprocess_files
from gpo_vae.training.train import train_model
from tests.evaluation.test_run import TINY_EVAL
from tests.training.conftest import TINY_MODEL, TINY_TRAINING, synthetic_dataset  # noqa: F401

CONTROL = "non-targeting"
GENES = pd.Index([f"g{i}" for i in range(6)], name="gene")


def _frame(rows: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, index=GENES).T.rename_axis("perturbation")


def test_unseen_labels_are_those_no_training_or_validation_cell_carries():
    labels = np.array(["A", "A", "B", "A+B", "C", "A+C", "B+C", CONTROL])
    split = np.array(["train", "test", "val", "test", "test", "test", "train", "train"])
    found = u.unseen_labels(labels, split, ["A", "C", "A+B", "A+C"], CONTROL)
    # C has a training cell only inside B+C: seen; A+B and A+C were never trained on
    assert found.combinations == ["A+B", "A+C"] and found.singles == [] and not found.unseen_genes
    split[6] = "test"
    found = u.unseen_labels(labels, split, ["A", "C", "A+B", "A+C"], CONTROL)
    assert found.singles == ["C"] and found.unseen_genes == {"C"}


def test_additive_and_matching_mean_are_the_sum_and_mean_of_the_seen_singles():
    singles = _frame({"A": [1, 0, 2, 0, 0, 0], "B": [0, 1, 2, 0, 0, -1]})
    additive = u.additive_prediction(["A+B", "A+Z"], singles)
    np.testing.assert_allclose(additive.loc["A+B"], [1, 1, 4, 0, 0, -1])
    np.testing.assert_allclose(additive.loc["A+Z"], singles.loc["A"])  # Z unseen adds nothing
    matching = u.matching_mean_prediction(["A+B"], singles)
    np.testing.assert_allclose(matching.loc["A+B"], [0.5, 0.5, 2, 0, 0, -0.5])


def test_interaction_metrics_score_only_what_additivity_misses():
    additive = _frame({"A+B": [2.0, 1.0, 0.0, -1.0, 0.5, 0.0]})
    interaction = np.array([-1.0, -0.5, 0.1, 0.4, -0.2, 0.0])  # buffering: against the additive profile
    observed = additive + interaction
    errors = np.full((1, 6), 0.05)
    exact = u.combination_metrics(observed, observed, additive, errors, top_de=3, interaction_z=3.0)
    assert exact.loc["A+B", "interaction_pearson"] == pytest.approx(1.0)
    assert exact.loc["A+B", "interaction_r2"] == pytest.approx(1.0)
    assert exact.loc["A+B", "interaction_sign_right"] == 1.0
    flat = u.combination_metrics(observed, additive, additive, errors, top_de=3, interaction_z=3.0)
    # additivity carries no interaction: r = 0 by definition, R² = 1 - Σt²/Σ(t - t̄)², never the direction
    assert flat.loc["A+B", "interaction_pearson"] == 0.0
    t = interaction
    assert flat.loc["A+B", "interaction_r2"] == pytest.approx(1 - (t**2).sum() / ((t - t.mean()) ** 2).sum())
    assert flat.loc["A+B", "interaction_sign_right"] == 0.0
    direction = additive.loc["A+B"].to_numpy() / np.linalg.norm(additive.loc["A+B"])
    along = float(interaction @ direction)
    assert along < 0
    assert flat.loc["A+B", "interaction_z"] == pytest.approx(along / np.sqrt(((direction * 0.05) ** 2).sum()))
    noisy = u.combination_metrics(observed, observed, additive, errors * 100, top_de=3, interaction_z=3.0)
    assert not noisy.loc["A+B", "interaction_significant"] and np.isnan(
        noisy.loc["A+B", "interaction_sign_right"]
    )


def test_rank_is_one_when_every_prediction_matches_its_own_gene_best_and_chance_when_all_agree():
    rng = np.random.default_rng(0)
    observed = pd.DataFrame(rng.normal(size=(4, 6)), index=list("ABCD"), columns=GENES)
    shift = pd.Series(0.0, index=GENES)
    perfect = u.single_metrics(observed, observed + 0.01 * rng.normal(size=(4, 6)), shift, top_de=3)
    assert (perfect["rank"] == 1).all() and (perfect["rank_normalised"] == 0).all()
    shared = pd.DataFrame(np.repeat(rng.normal(size=(1, 6)), 4, axis=0), index=list("ABCD"), columns=GENES)
    same = u.single_metrics(observed, shared + shift.to_numpy(), shift, top_de=3)
    # identical predictions tie with each other: every gene sits in the middle
    np.testing.assert_allclose(same["rank_normalised"], 0.5)
    reversed_ = u.single_metrics(observed, observed.iloc[::-1].set_axis(observed.index), shift, top_de=3)
    assert (reversed_["rank"] > 1).all()


def test_regulator_weights_recover_what_moves_with_the_target():
    """5 of 30 seen perturbations move gene a by x_i; a's children move by β per unit of a; the
    others move a only by noise. The weights pick the five and give k·β."""
    rng = np.random.default_rng(1)
    x = np.r_[rng.choice([-1.0, 1.0], 5) * rng.uniform(1.0, 2.0, 5), rng.normal(0.0, 0.05, 25)]
    beta = np.array([0.0, 0.8, -0.5, 0.3, 0.0, 0.0])  # on g0..g5; g0 is a itself
    effects = np.outer(x, beta) + rng.normal(0.0, 0.001, (30, 6))
    effects[:, 0] = x
    single_ate = pd.DataFrame(effects, index=[f"b{i}" for i in range(30)], columns=["a", *GENES[1:]])
    weights = u.regulator_weights(single_ate, "a", own_change=-2.0)
    predicted = weights @ single_ate.loc[weights.index]
    np.testing.assert_allclose(predicted["a"], -2.0)
    np.testing.assert_allclose(predicted.iloc[1:], -2.0 * beta[1:], atol=0.02)
    # only significant regulators with z: the five (and at most a noise draw or two beyond 3σ)
    strict = u.regulator_weights(single_ate, "a", own_change=-2.0, z=3.0)
    assert {f"b{i}" for i in range(5)} <= set(strict.index) and len(strict) <= 7
    # a gene that only noise moves: weights no larger than the perturbations' own effects, where
    # k·x/(x·x) would multiply the noise by |k|/‖x‖ (here ~7)
    single_ate["quiet"] = rng.normal(0.0, 0.05, 30)
    quiet = u.regulator_weights(single_ate, "quiet", -2.0)
    assert len(quiet) == 30 and np.linalg.norm(quiet) == pytest.approx(1.0)
    assert np.linalg.norm(quiet @ single_ate.loc[quiet.index]) < np.linalg.norm(single_ate, axis=1).max()
    assert u.regulator_weights(single_ate, "unmeasured", -2.0).empty
    assert u.typical_own_change(
        pd.DataFrame([[-3.0, 0.1], [0.2, -1.0]], index=["p", "q"], columns=["p", "q"])
    ) == pytest.approx(-2.0)


def test_neighbour_dosages_spread_an_unseen_gene_over_its_weights():
    nodes = {"A": 0, "B": 1, "C": 2, "D": 3}
    weights = {"C": pd.Series([0.75, 0.25], index=["A", "B"]), "D": pd.Series(dtype=float)}
    rows = u.neighbour_dosages(["A+C", "C", "D", "B"], nodes, 4, weights, seen=["A", "B"])
    np.testing.assert_allclose(rows["A+C"][0], [1.75, 0.25, 0, 0])
    np.testing.assert_allclose(rows["C"][0], [0.75, 0.25, 0, 0])
    np.testing.assert_allclose(rows["D"][0], [0.5, 0.5, 0, 0])  # no neighbours: every seen gene
    np.testing.assert_allclose(rows["B"][0], [0, 1, 0, 0])
    scores = np.array([[0, 0.9, 0.2, 0], [0.1, 0, 0.6, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=float)
    found = u.neighbour_weights(scores, list(nodes), "C", ["A", "B"], k=5)
    np.testing.assert_allclose(found.loc[["B", "A"]], [0.75, 0.25])


def test_interaction_standard_errors_follow_the_group_variances():
    rng = np.random.default_rng(2)
    labels = np.array([CONTROL] * 40 + ["A"] * 30 + ["B"] * 30 + ["A+B"] * 20)
    split = np.array(["test"] * 20 + ["train"] * 20 + ["train"] * 60 + ["test"] * 20)
    counts = sp.csr_matrix(rng.poisson(20.0, (labels.size, 6)).astype(np.float32))
    errors = u.interaction_standard_errors(counts, labels, split, ["A+B"], CONTROL, ["A", "B"])

    def moments(rows: np.ndarray) -> tuple[np.ndarray, int]:
        x = counts[rows].toarray()
        y = np.log2(1 + x / x.sum(axis=1, keepdims=True) * 1e4)
        return y.var(axis=0, ddof=1), rows.sum()

    (v_ab, n_ab), (v_ct, n_ct) = (
        moments((labels == "A+B") & (split == "test")),
        moments((labels == CONTROL) & (split == "test")),
    )
    (v_a, n_a), (v_b, n_b) = moments(labels == "A"), moments(labels == "B")
    v_c, n_c = moments((labels == CONTROL) & (split == "train"))
    expected = np.sqrt(v_ab / n_ab + v_ct / n_ct + v_a / n_a + v_b / n_b + 4 * v_c / n_c)
    np.testing.assert_allclose(errors[0], expected, rtol=1e-6)


@pytest.fixture(scope="module")
def heldout_gene_evaluation(synthetic_dataset, tmp_path_factory) -> Path:  # noqa: F811
    """The default screen with 20 % of its genes held out, a tiny model, a small evaluation."""
    root = tmp_path_factory.mktemp("unseen_genes")
    config = PreprocessConfig(qc=QCConfig(doublets=False), split=SplitConfig(mode="heldout_perturbations"))
    adata = preprocess_files(
        synthetic_dataset["counts"],
        synthetic_dataset["summary_stats"],
        "TabS_synthetic_summary_stat",
        config,
        progress=False,
        print_table=False,
    )
    artifact = write_artifact(adata, root / "artifact")
    run = train_model(artifact, TINY_MODEL, TINY_TRAINING.replace(max_epochs=3), root / "run", progress=False)
    return evaluate_run(artifact, run, TINY_EVAL, root / "eval", progress=False)


def test_unseen_genes_are_predicted_through_their_regulators_and_scored(heldout_gene_evaluation: Path):
    out = heldout_gene_evaluation
    record = json.loads((out / "screen.json").read_text())["splits"]
    genes = record["unseen_singles"]
    assert genes and record["heldout_combinations"] == []
    table = pd.read_csv(out / u.METRICS_FILE)
    singles = table[table["kind"] == u.SINGLE]
    methods = set(singles["method"])
    assert {"model", "model_neighbours", "model_own_node", u.NONCONTROL, u.REGULATOR_REGRESSION} <= methods
    assert u.GRN_NEIGHBOURS in methods
    for _, rows in singles.groupby("method"):
        assert sorted(rows["perturbation"]) == sorted(genes)
        assert rows["rank"].between(1, len(genes)).all()
    # the regulator dosage is not the untrained node's: the two predictions differ
    model = singles.set_index(["method", "perturbation"])["pearson"]
    assert not np.allclose(model["model"].sort_index(), model["model_own_node"].sort_index())
    assert singles.loc[singles["method"] == u.NONCONTROL, "rank_normalised"].eq(0.5).all()
    cells = ad.read_h5ad(out / u.CELLS_FILE)
    assert set(genes) <= set(cells.obs["gene"].astype(str))
    weights = pd.read_csv(out / u.NEIGHBOURS_FILE)
    assert set(weights["mode"]) == {"regulators", "neighbours"} and set(weights["gene"]) == set(genes)
    metrics = json.loads((out / "run.json").read_text())["metrics"]
    assert "model_unseen_singles_rank_normalised" in metrics
    assert "Held-out single genes" in (out / "report.html").read_text()
    # the training mean predicts nothing for a gene no training cell carries: no baseline file
    # (cell-eval scores a prediction of every real label), and run.json says which files there are
    exported = json.loads((out / "run.json").read_text())["data"]["cell_eval"]
    assert exported["files"] == ["predictions.h5ad", "real_test.h5ad"]
    assert not (out / "baseline_predictions.h5ad").exists()
    assert set(genes) <= set(ad.read_h5ad(out / "predictions.h5ad").obs["target_gene"].astype(str))


def test_a_heldout_gene_run_leads_with_every_method_on_the_baseline_to_replicate_scale(
    heldout_gene_evaluation: Path,
):
    from gpo_vae.evaluation import scaled as sc
    from gpo_vae.report.headline import run_headline

    out = heldout_gene_evaluation
    scores = pd.read_csv(out / sc.SCALED_FILE)
    assert set(scores["task"]) == {sc.SINGLES, sc.SEEN}
    singles = scores[(scores["task"] == sc.SINGLES) & (scores["metric"] == "pearson_specific")]
    rows = singles.set_index("method")
    assert {"model", "noncontrol_mean", sc.NO_EFFECT, "linear_embedding", sc.REPLICATE} <= set(rows.index)
    best = rows["baseline"].iloc[0]
    assert best in sc.TRIVIAL_BASELINES[sc.SINGLES]
    assert rows.loc[best, "scaled"] == 0.0 and rows.loc[sc.REPLICATE, "scaled"] == 1.0
    trivial = rows.loc[list(sc.TRIVIAL_BASELINES[sc.SINGLES]), "mean"]
    assert rows.loc[best, "mean"] == trivial.max()
    assert rows.loc["model", "role"] == "model" and rows.loc["linear_embedding", "role"] == "baseline"
    finite = rows.dropna(subset=["scaled_low"])
    assert (finite["scaled_low"] <= finite["scaled"] + 1e-12).all()
    assert (finite["scaled"] <= finite["scaled_high"] + 1e-12).all()
    # the scaled score is the formula on the raw means of unseen_metrics.csv
    table = pd.read_csv(out / u.METRICS_FILE)
    means = table[table["kind"] == u.SINGLE].groupby("method")["pearson_specific"].mean()
    b, r = rows.loc["model", "b"], rows.loc["model", "r"]
    assert rows.loc["model", "mean"] == pytest.approx(means["model"])
    assert rows.loc["model", "scaled"] == pytest.approx((means["model"] - b) / (r - b))
    lines = run_headline(out)
    assert lines[0].startswith("unseen genes (") and f"0 = {best}" in lines[0]
    verdict = next(i for i, line in enumerate(lines) if "told apart" in line or "beyond" in line)
    shown = {line.split()[0] for line in lines[1:verdict]}
    assert {"model", "linear_embedding", "noncontrol_mean", sc.REPLICATE} <= shown
    assert lines[-1].startswith("check: on held-out cells of the") and "training mean" in lines[-1]
    metrics = json.loads((out / "run.json").read_text())["metrics"]
    assert metrics["model_scaled_unseen_singles"] == pytest.approx(rows.loc["model", "scaled"])
    assert "linear_embedding_scaled_unseen_singles_low" in metrics


def test_network_neighbours_take_either_direction_with_equal_weights():
    nodes = ["A", "B", "C", "D"]
    adjacency = np.zeros((4, 4), dtype=bool)
    adjacency[0, 2] = adjacency[2, 1] = adjacency[3, 0] = True  # A→C, C→B, D→A
    found = u.network_neighbours(adjacency, nodes, "C", seen=["A", "B", "D"])
    np.testing.assert_allclose(found.loc[["A", "B"]], [0.5, 0.5])
    assert "D" not in found.index
    assert u.network_neighbours(adjacency, nodes, "C", seen=["D"]).empty
