"""CausalBench statistics: the vectorised tests equal scipy's, the protocol equals causalbench's."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from gpo_vae.grn.statistical import (
    StatisticalEvaluator,
    causalbench_expression,
    evaluate_network,
    expand_paths,
    sample_negatives,
    statistics_at_k,
)

CTRL = "non-targeting"


def _expression(seed: int = 0, n_genes: int = 10, n_control: int = 120, per_group: int = 25) -> tuple:
    """log1p counts with ties (zeros), where perturbing gene i lowers i+1 and raises i+2."""
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(n_genes)]
    labels = np.array([CTRL] * n_control + [g for g in genes for _ in range(per_group)])
    X = rng.poisson(1.5, size=(len(labels), n_genes)).astype(np.float32)
    for i, gene in enumerate(genes):
        rows = labels == gene
        X[rows, (i + 1) % n_genes] = np.floor(X[rows, (i + 1) % n_genes] * 0.2)
        X[rows, (i + 2) % n_genes] += 2
    return np.log1p(X).astype(np.float32), labels, genes


def _scipy_pair(X: np.ndarray, labels: np.ndarray, genes: list[str], source: str, target: str) -> tuple:
    control = X[labels == CTRL, genes.index(target)]
    perturbed = X[labels == source, genes.index(target)]
    result = stats.mannwhitneyu(control, perturbed)
    return result.statistic, result.pvalue, stats.wasserstein_distance(control, perturbed)


@pytest.mark.parametrize("sparse", [False, True])
def test_pair_tests_equal_scipy(sparse: bool) -> None:
    X, labels, genes = _expression()
    X = X.astype(np.float64)
    X[:, 3] = np.random.default_rng(1).normal(size=len(labels))  # a tie-free column
    labels[-4:] = "tiny"  # a 4-cell group: scipy's exact p-value on the tie-free column
    evaluator = StatisticalEvaluator(sp.csr_matrix(X) if sparse else X, labels, genes)
    sources = [s for s in [*genes, "tiny"] for _ in genes]
    targets = genes * (len(genes) + 1)
    table = evaluator.test_pairs(sources, targets)
    assert table["testable"].all()
    for row in table.itertuples():
        u, p, w = _scipy_pair(X, labels, genes, row.source, row.target)
        assert row.u_statistic == u
        assert row.p_value == pytest.approx(p, rel=1e-9, abs=1e-300)
        assert row.wasserstein == pytest.approx(w, rel=1e-9, abs=1e-12)
        assert row.significant == (p < 0.05)
    assert table["significant"].sum() > 10  # the simulated effects are found


def test_wasserstein_edge_cases_equal_scipy() -> None:
    # perturbed values entirely above, entirely below, inside and tied with the controls
    control = np.array([0.0, 0.0, 1.0, 2.0, 2.0, 5.0])
    groups = {"above": [6.0, 9.0], "below": [-3.0, -1.0, -1.0], "inside": [1.0, 2.0, 2.0, 3.5], "same": [0.0]}
    values = np.concatenate([control, *groups.values()])
    labels = np.array([CTRL] * control.size + [k for k, v in groups.items() for _ in v])
    evaluator = StatisticalEvaluator(values[:, None], labels, ["x"])
    table = evaluator.test_pairs(list(groups), ["x"] * len(groups)).set_index("source")
    for name, group in groups.items():
        assert table.loc[name, "wasserstein"] == pytest.approx(stats.wasserstein_distance(control, group))
        assert table.loc[name, "p_value"] == pytest.approx(stats.mannwhitneyu(control, group).pvalue)


def test_untestable_pairs_are_skipped_and_counted() -> None:
    X, labels, genes = _expression()
    nodes = [*genes, "NOT_MEASURED", "NO_CELLS"]
    edges = [("G0", "G1"), ("G0", "NOT_MEASURED"), ("NO_CELLS", "G2"), ("NO_CELLS", "NOT_MEASURED")]
    result = evaluate_network(X, labels, genes, edges, nodes, max_path_length=1, n_negatives=0)
    s = result.summary
    assert (s["n_edges"], s["n_tested"], s["n_skipped"]) == (4, 1, 3)
    assert (s["n_skipped_source"], s["n_skipped_target"]) == (2, 1)
    tests = result.tests.set_index(["source", "target"])
    assert tests.loc[("G0", "NOT_MEASURED"), "skip_reason"] == "target not measured"
    assert np.isnan(tests.loc[("NO_CELLS", "G2"), "p_value"])
    assert not tests.loc[("NO_CELLS", "G2"), "significant"]


def test_hand_counted_summary() -> None:
    X, labels, genes = _expression()
    # G0 → G1 and G0 → G2 carry simulated effects; G0 → G5 and G3 → G8 do not
    edges = [("G0", "G1"), ("G0", "G2"), ("G0", "G5"), ("G3", "G8")]
    expected = [_scipy_pair(X, labels, genes, a, b) for a, b in edges]
    significant = [p < 0.05 for _, p, _ in expected]
    assert significant[:2] == [True, True]
    result = evaluate_network(X, labels, genes, edges, genes, max_path_length=1, n_negatives=0)
    s = result.summary
    assert s["true_positives"] == sum(significant)
    assert s["false_positives"] == len(edges) - sum(significant)
    assert s["precision"] == pytest.approx(sum(significant) / len(edges))
    assert s["mean_wasserstein"] == pytest.approx(np.mean([w for _, _, w in expected]))
    assert np.isnan(s["false_omission_rate"]) and s["path_n_edges"] == 0


def test_expand_paths_is_causalbench_doubling() -> None:
    # chain a→b→c→d→e: step 1 adds 2-hop pairs, step 2 composes the 2-hop graph with itself
    # and so adds pairs 3 and 4 edges apart (CausalBench's "paths up to length 3")
    chain = np.zeros((5, 5), dtype=bool)
    chain[[0, 1, 2, 3], [1, 2, 3, 4]] = True
    steps, closure = expand_paths(chain, max_path_length=3)
    assert [sorted(zip(*np.nonzero(s), strict=True)) for s in steps] == [
        [(0, 2), (1, 3), (2, 4)],
        [(0, 3), (0, 4), (1, 4)],
    ]
    assert closure.sum() == 10
    # a cycle: self-pairs are removed and the expansion stops once nothing changes
    cycle = np.zeros((3, 3), dtype=bool)
    cycle[[0, 1, 2], [1, 2, 0]] = True
    steps, closure = expand_paths(cycle, max_path_length=-1)
    assert len(steps) == 1 and closure.sum() == 6 and not closure.diagonal().any()
    assert expand_paths(chain, max_path_length=1)[0] == []


def test_negatives_reproducible_eligible_and_seeded() -> None:
    n = 30
    closure = np.random.default_rng(0).random((n, n)) < 0.3
    source_ok = np.arange(n) < 20
    target_ok = np.arange(n) != 5
    rows, cols = sample_negatives(closure, source_ok, target_ok, 50, seed=0)
    assert len(set(zip(rows, cols, strict=True))) == 50
    assert not closure[rows, cols].any() and source_ok[rows].all() and target_ok[cols].all()
    assert (rows != cols).all()
    again = sample_negatives(closure, source_ok, target_ok, 50, seed=0)
    other = sample_negatives(closure, source_ok, target_ok, 50, seed=1)
    assert np.array_equal(again[0], rows) and np.array_equal(again[1], cols)
    assert set(zip(*other, strict=True)) != set(zip(rows, cols, strict=True))
    eligible = source_ok[:, None] & target_ok[None, :] & ~closure & ~np.eye(n, dtype=bool)
    everything = sample_negatives(closure, source_ok, target_ok, 10_000, seed=0)
    assert len(everything[0]) == eligible.sum()


def test_false_omission_rate_reproducible_and_seed_dependent() -> None:
    X, labels, genes = _expression(n_genes=16)
    edges = [("G0", "G1")]
    evaluator = StatisticalEvaluator(X, labels, genes)
    first = evaluator.evaluate(edges, genes, n_negatives=60, seed=0)
    again = StatisticalEvaluator(X, labels, genes).evaluate(edges, genes, n_negatives=60, seed=0)
    other = evaluator.evaluate(edges, genes, n_negatives=60, seed=5)
    negatives = first.tests[first.tests["kind"] == "negative"]
    assert len(negatives) == 60
    assert first.summary["false_omission_rate"] == negatives["significant"].mean()
    pd.testing.assert_frame_equal(first.tests, again.tests)
    assert first.summary["false_omission_rate"] != other.summary["false_omission_rate"]


def test_statistics_at_k_equals_evaluating_each_top_k_graph() -> None:
    X, labels, genes = _expression()
    rng = np.random.default_rng(3)
    scores = rng.random((len(genes), len(genes)))
    np.fill_diagonal(scores, 2.0)  # self-loops never become edges
    table = statistics_at_k(scores, genes, X, labels, genes, ks=(1, 5, 200), n_negatives=20)
    assert list(table.index) == [1, 5, 200]
    assert table.loc[200, "n_edges"] == len(genes) * (len(genes) - 1)  # capped
    off = np.where(np.eye(len(genes), dtype=bool), -np.inf, scores)
    assert table.loc[1, "min_score"] == off.max()
    top5 = off >= np.sort(off.ravel())[-5]
    direct = evaluate_network(X, labels, genes, top5, genes, n_negatives=20).summary
    pd.testing.assert_series_equal(table.loc[5].drop(["min_score", "tied"]), direct, check_names=False)
    assert (table["tied"] == 0).all()  # distinct random scores: every top K is the scores' own
    flat = statistics_at_k(np.ones_like(scores), genes, X, labels, genes, ks=(5,), n_negatives=20)
    assert flat.loc[5, "tied"] == 5  # a constant score: the 5 are picked by pair order alone


def test_true_graph_beats_random_graph() -> None:
    X, labels, genes = _expression(n_genes=20)
    n = len(genes)
    truth = np.zeros((n, n), dtype=bool)
    truth[np.arange(n), (np.arange(n) + 1) % n] = True
    truth[np.arange(n), (np.arange(n) + 2) % n] = True
    evaluator = StatisticalEvaluator(X, labels, genes)
    true_summary = evaluator.evaluate(truth, genes, n_negatives=100).summary
    random = np.random.default_rng(0).random((n, n)) < truth.mean()
    np.fill_diagonal(random, False)
    random_summary = evaluator.evaluate(random, genes, n_negatives=100).summary
    assert true_summary["precision"] == 1.0
    assert random_summary["precision"] < 0.5
    assert true_summary["mean_wasserstein"] > 2 * random_summary["mean_wasserstein"]


def test_causalbench_expression_median_normalisation() -> None:
    counts = sp.csr_matrix(np.array([[1.0, 1.0], [3.0, 1.0], [0.0, 0.0], [2.0, 6.0]]))
    # libraries 2, 4, 0, 8: median of non-empty = 4
    expected = np.log1p(np.array([[2.0, 2.0], [3.0, 1.0], [0.0, 0.0], [1.0, 3.0]]))
    np.testing.assert_allclose(causalbench_expression(counts).toarray(), expected, rtol=1e-6)


def test_matches_causalbench_evaluator() -> None:
    module = pytest.importorskip("causalscbench.evaluation.statistical_evaluation")
    X, labels, genes = _expression(seed=4, n_genes=15)
    edges = [(genes[i], genes[(i + 1) % 15]) for i in range(0, 15, 2)]
    edges += [("G3", "G9"), ("G9", "G4"), ("G4", "G12"), ("G12", "G0"), ("G5", "G7")]
    reference = module.Evaluator(X, list(labels), genes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's mean of an empty step
        expected = reference.evaluate_network(
            edges, max_path_length=3, check_false_omission_rate=True, omission_estimation_size=40
        )
    ours = evaluate_network(X, labels, genes, edges, genes, max_path_length=3, n_negatives=40, seed=0)
    s = ours.summary
    graph = expected["output_graph"]
    assert (s["true_positives"], s["false_positives"]) == (graph["true_positives"], graph["false_positives"])
    assert s["mean_wasserstein"] == pytest.approx(graph["wasserstein_distance"]["mean"], rel=1e-6)
    steps = ours.path_steps()
    assert len(steps) == len(expected["all_path_results"]) == 2
    for (_, ours_step), theirs in zip(steps.iterrows(), expected["all_path_results"], strict=True):
        assert ours_step["true_positives"] == theirs["true_positives"]
        assert ours_step["false_positives"] == theirs["false_positives"]
        assert ours_step["mean_wasserstein"] == pytest.approx(
            theirs["wasserstein_distance"]["mean"], rel=1e-6
        )
    assert s["false_omission_rate"] == expected["false_omission_rate"]
    assert s["negative_mean_wasserstein"] == pytest.approx(expected["negative_mean_wasserstein"], rel=1e-6)
