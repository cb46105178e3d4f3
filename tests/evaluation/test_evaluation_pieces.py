"""Pieces of the evaluation that need no trained run: the reference-network agreement, the
evaluation config and the held-out reference (the trained-run tests are in test_run.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gpo_vae.config import ConfigError, from_dict, load_yaml, to_dict
from gpo_vae.evaluation import prediction as pred
from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.evaluation.grn_benchmark import pair_masks, reference_agreement
from gpo_vae.evaluation.observed import observed_tables
from gpo_vae.grn.curves import edge_precision_recall, ranking_metrics
from gpo_vae.preprocessing.artifact import read_artifact
from gpo_vae.run_config import load_run_config
from tests.evaluation.test_run import CONFIG_DIR, TINY_EVAL
from tests.training.conftest import artifact_dir, synthetic_dataset  # noqa: F401  (session fixtures)


def test_reference_agreement_matches_curves_on_perturbed_pairs():
    rng = np.random.default_rng(3)
    n, n_perturbed = 12, 7
    scores = rng.random((n, n))
    reference = rng.random((n, n)) < 0.2
    predicted = scores > 0.6
    both, _ = pair_masks(n, n_perturbed)
    row, curve = reference_agreement(scores, predicted, reference, both)
    restrict = np.arange(n_perturbed)
    expected = ranking_metrics(scores, reference, restrict)
    pr = edge_precision_recall(predicted, reference, restrict)
    assert row["auroc"] == pytest.approx(expected["auroc"]) and row["auprc"] == pytest.approx(
        expected["auprc"]
    )
    assert row["precision"] == pytest.approx(pr["precision"]) and row["recall"] == pytest.approx(pr["recall"])
    assert row["n_pairs"] == expected["n_pairs"] and len(curve) > 1


def test_evaluation_config_validates_and_every_shipped_yaml_spells_it_out():
    with pytest.raises(ValueError, match="summary_stats_cells"):
        EvaluationConfig(n_generated_cells=10, summary_stats_cells=20)
    with pytest.raises(ValueError, match="grn_threshold"):
        EvaluationConfig(grn_threshold=1.0)
    with pytest.raises(ConfigError, match=r"evaluation\.grn_ks"):
        from_dict(EvaluationConfig, {"grn_ks": ["many"]}, "evaluation")
    assert from_dict(EvaluationConfig, to_dict(TINY_EVAL)) == TINY_EVAL
    for path in sorted(CONFIG_DIR.glob("*_*.yaml")):
        raw = load_yaml(path)
        assert set(raw["evaluation"]) == set(to_dict(EvaluationConfig())), path.name
        evaluation = load_run_config(path).evaluation
        if "synthetic" in path.name or path.stem.endswith("_custom"):
            part = CONFIG_DIR / "datasets" / ("synthetic.yaml" if "synthetic" in path.name else "custom.yaml")
            assert "SCALED DOWN" in part.read_text() and evaluation.n_generated_cells < 2500
        else:
            assert evaluation.n_generated_cells == 2500 and evaluation.iwelbo_particles == 100


def _scrambled_training_cells(adata):
    """The artifact with every training cell's counts permuted across genes (test cells kept)."""
    train = np.flatnonzero(adata.obs["split"].to_numpy() == "train")
    dense = adata.X.toarray()
    dense[train] = dense[train][:, np.random.default_rng(1).permutation(dense.shape[1])]
    scrambled = adata.copy()
    scrambled.X = sp.csr_matrix(dense)
    return scrambled


def test_heldout_reference_reads_only_test_cells(artifact_dir: Path):  # noqa: F811
    adata = read_artifact(artifact_dir)
    original = pred.EvaluationData.from_anndata(adata)
    scrambled = pred.EvaluationData.from_anndata(_scrambled_training_cells(adata))
    perturbations = original.perturbations()
    before = observed_tables(original, perturbations, TINY_EVAL)
    after = observed_tables(scrambled, perturbations, TINY_EVAL)
    rng = np.random.default_rng(0)
    fixed = pd.DataFrame(
        rng.normal(size=before.references["heldout_test", "all_cells"].shape), index=perturbations
    )
    fixed.columns = original.genes
    predictions = {"model": {"all_cells": fixed, "qc_pass": fixed}}
    table_before = pred.prediction_table(before.references, predictions, before.ceilings, TINY_EVAL)
    table_after = pred.prediction_table(after.references, predictions, after.ceilings, TINY_EVAL)
    held = table_before["reference"] == "heldout_test"
    # observed ATE, model rows and the split-half ceiling: test cells only, so unchanged
    pd.testing.assert_frame_equal(table_before[held], table_after[held])
    assert not np.allclose(
        table_before.loc[~held, "pearson"].to_numpy(),
        table_after.loc[~held, "pearson"].to_numpy(),
        equal_nan=True,
    ), "the all-cells reference should see the training cells"
    # and the training-cell baseline does change: the scramble reached the data
    assert not before.mean_baselines["all_cells"].equals(after.mean_baselines["all_cells"])
