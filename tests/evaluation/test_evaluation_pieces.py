"""Pieces of the evaluation that need no trained run: the reference-network agreement and the
evaluation config (the trained-run tests are in test_run.py)."""

from __future__ import annotations

import numpy as np
import pytest

from gpo_vae.config import ConfigError, from_dict, load_yaml, to_dict
from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.evaluation.grn_benchmark import pair_masks, reference_agreement
from gpo_vae.grn.curves import edge_precision_recall, ranking_metrics
from gpo_vae.run_config import load_run_config
from tests.evaluation.test_run import CONFIG_DIR, TINY_EVAL


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
