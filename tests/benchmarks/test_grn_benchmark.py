"""benchmarks/grn.py and grn_methods.py: the field's methods find a planted edge, the tables are
mean ± sd over seeds in rank order, the verdict pairs seeds, the docs block is regenerated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.benchmark_modules import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    return load_benchmark(name)


def _chain_cells(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Log-expression of 3 nodes, x0 → x1 (strong), x2 independent; controls and an intervention
    on each node (a do-intervention: the node set to a lower value of its own, cut from its
    parents, as GIES models it), 300 cells each."""
    rng = np.random.default_rng(seed)
    blocks, labels = [], []
    for node in (-1, 0, 1, 2):
        x0 = rng.normal(0.5 if node == 0 else 2.0, 0.5, 300)
        x1 = rng.normal(0.5, 0.5, 300) if node == 1 else 1.0 + 0.9 * x0 + rng.normal(0.0, 0.2, 300)
        x2 = rng.normal(0.0 if node == 2 else 1.5, 0.5, 300)
        blocks.append(np.column_stack([x0, x1, x2]))
        labels.append(np.full(300, node))
    return np.vstack(blocks), np.concatenate(labels)


def test_grnboost2_gives_a_target_its_true_regulator_first():
    """GRNBoost2 regresses each target on the perturbed nodes: of 12 (its features are drawn per
    split, a tenth of them: with a handful every feature looks alike), x1's best predictor is its
    regulator x0, and the 10 independent genes rank below."""
    pytest.importorskip("arboreto")
    methods = _load("grn_methods")
    rng = np.random.default_rng(0)
    expression = rng.normal(1.5, 0.5, (1200, 12))
    expression[:, 1] = 1.0 + 0.9 * expression[:, 0] + rng.normal(0.0, 0.2, 1200)
    scores = methods.grnboost2_scores(expression, np.arange(12), n_nodes=12, n_perturbed=12)
    assert scores[:, 1].argmax() == 0 and scores[0, 1] > 2 * np.delete(scores[:, 1], [0, 1]).max()
    assert (np.diag(scores) == 0).all()


def test_gies_finds_the_planted_edge_from_the_interventions():
    pytest.importorskip("gies")
    methods = _load("grn_methods")
    expression, labels = _chain_cells()
    scores = methods.gies_scores(expression, np.arange(3), labels, n_nodes=3, n_perturbed=3)
    assert scores[0, 1] == 1.0
    assert scores[:, 2].sum() == 0 and scores[2].sum() == 0  # x2 is independent of both
    assert set(np.unique(scores)) <= {0.0, 1.0}


def _rows() -> pd.DataFrame:
    rows = []
    for seed, (model, deconv, z) in zip(
        (1, 2, 3), [(0.60, 0.64, 0.60), (0.47, 0.49, 0.47), (0.45, 0.51, 0.44)], strict=True
    ):
        for rank, (method, auprc) in enumerate(
            sorted(
                {"gpo_vae_plus": model, "deconvolution": deconv, "effect_z": z}.items(), key=lambda i: -i[1]
            ),
            start=1,
        ):
            rows.append(
                {
                    "screen": "default",
                    "seed": seed,
                    "method": method,
                    "rank": rank,
                    "auprc": auprc,
                    "precision_at_k": auprc,
                    "precision_at_1000": 0.07,
                    "mean_wasserstein": 1.0,
                    "false_omission_rate": 0.1,
                    "ranked_by": "auprc",
                    "seconds": 1.0,
                    "peak_gb": 1.0,
                    "own_gb": 0.01,
                }
            )
    return pd.DataFrame(rows)


def test_summary_is_mean_and_sd_over_seeds_and_the_verdict_pairs_them():
    grn = _load("grn")
    table = grn.summary_table(_rows()).set_index("method")
    assert list(table.index) == ["deconvolution", "gpo_vae_plus", "effect_z"]
    assert (
        table.loc["deconvolution", "auprc"]
        == f"{np.mean([0.64, 0.49, 0.51]):.3f} ± {np.std([0.64, 0.49, 0.51], ddof=1):.3f}"
    )
    (line,) = grn.verdicts(_rows(), ["gpo_vae_plus"])
    gaps = np.array([0.60 - 0.64, 0.47 - 0.49, 0.45 - 0.51])
    assert f"loses to the best baseline deconvolution by {gaps.mean():+.3f} auprc" in line
    assert f"sd over 3 seeds {gaps.std(ddof=1):.3f}: beyond the spread" in line


def test_the_docs_block_is_replaced_and_the_rest_of_the_page_kept(tmp_path: Path):
    grn = _load("grn")
    page = tmp_path / "grn.md"
    page.write_text(f"# Title\n\nbefore\n{grn.START}\nold table\n{grn.END}\nafter\n")
    grn.write_docs_block(page, grn.summary_table(_rows()), ["a verdict"], "3 seeds")
    text = page.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{grn.END}\nafter\n")
    assert "old table" not in text and "| deconvolution |" in text and "- a verdict" in text
    page.write_text("no block")
    with pytest.raises(SystemExit, match="no <!-- grn-benchmark:start -->"):
        grn.write_docs_block(page, grn.summary_table(_rows()), [], "")


def test_grnboost2_without_a_measured_regulator_scores_nothing():
    """A panel that measures none of the perturbed genes leaves GRNBoost2 no feature: all 0."""
    pytest.importorskip("arboreto")
    methods = _load("grn_methods")
    expression = np.random.default_rng(0).normal(1.0, 0.5, (200, 4))
    # nodes 0-1 perturbed but unmeasured; the measured columns are the downstream nodes 2-5
    scores = methods.grnboost2_scores(expression, np.array([2, 3, 4, 5]), n_nodes=6, n_perturbed=2)
    assert scores.shape == (6, 6) and not scores.any()


def test_a_method_past_its_timeout_is_stopped_with_the_reason():
    """--method-timeout: the alarm raises in the method's process, so the run lists it as failed."""
    import signal
    import time

    grn = _load("grn")
    previous = signal.getsignal(signal.SIGALRM)
    try:
        grn._stop_after(1)
        with pytest.raises(TimeoutError, match=r"stopped after 1 s \(--method-timeout\)"):
            for _ in range(100):  # 10 s at most: the alarm must end this loop after about 1 s
                time.sleep(0.1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
