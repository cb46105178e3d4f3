"""The end of a run as lines (gpo_vae.report.headline): one table and its verdict, the
report's path and the next commands as they run from where the run started."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gpo_vae.report.headline import cells_verdict, headline_table, next_steps
from gpo_vae.report.verdict import mask_verdicts


def _metrics(model: float, mean: float, ceiling: float, n: int = 6) -> pd.DataFrame:
    rows = [
        {"method": method, "perturbation": f"P{i}", "pearson": value, "r2": 0.0}
        for method, value in (("model", model), ("mean_baseline", mean), ("split_half_ceiling", ceiling))
        for i in range(n)
    ]
    return pd.DataFrame(rows).assign(reference="heldout_test", subset="all_cells")


def test_the_verdict_says_where_the_model_stands_and_when_the_data_is_noise():
    clear = cells_verdict(_metrics(0.80, 0.85, 0.9), unseen=False)
    assert clear.startswith("verdict: on held-out cells of the 6 perturbations")
    assert "0.800 against their training mean's 0.850 (trails it by 0.050)" in clear
    assert "counting noise" not in clear and "cannot rank models" in clear
    assert "(matches it)" in cells_verdict(_metrics(0.845, 0.85, 0.9), unseen=False)
    noisy = cells_verdict(_metrics(0.05, 0.08, 0.1), unseen=False)
    assert "two halves of the test cells agree at r 0.100 only" in noisy
    assert cells_verdict(_metrics(0.8, 0.85, 0.9), unseen=True).startswith("check: ")
    few = cells_verdict(_metrics(0.5, 0.85, 0.9, n=4), unseen=False)
    assert "only 4 labels scored, fewer than the 5" in few and "trails" not in few


def test_the_model_and_the_training_mean_are_averaged_over_the_same_perturbations():
    """On a held-out split the training mean has no prediction for the held-out genes: the model's
    mean over all of them beside the mean's over the seen ones compared different labels and the
    sentence counted the held-out ones as seen (issue 34: "33 seen", 11 were)."""
    metrics = _metrics(0.9, 0.85, 0.95, n=8)
    held_out = metrics["perturbation"].isin(["P6", "P7"])
    metrics.loc[held_out & (metrics["method"] == "model"), "pearson"] = 0.1
    metrics.loc[held_out & (metrics["method"] == "mean_baseline"), "pearson"] = float("nan")
    verdict = cells_verdict(metrics, unseen=True)
    assert "of the 6 perturbations seen in training the model's ATE r is 0.900" in verdict
    table = headline_table(metrics).set_index("method")
    assert (table["n_perturbations"] == 6).all()


def test_next_steps_are_commands_that_run_from_here_and_score_each_cell_line(tmp_path: Path):
    folder = tmp_path / "results" / "screen" / "evaluation" / "abc"
    folder.mkdir(parents=True)
    (folder / "predictions.h5ad").write_bytes(b"")
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    (python.parent / "cell-eval").write_text("")
    lines = next_steps(folder, "results/screen/runs/r1", python)
    assert lines[0] == f"report: {folder / 'report.html'}  (open it in a browser)"
    assert "GPOVAEModel.load('results/screen/runs/r1')" in lines[2] and lines[2].strip().startswith(
        str(python)
    )
    assert lines[3].strip().startswith(f"{python.parent / 'cell-eval'} run -ap {folder / 'predictions.h5ad'}")
    assert "--celltype-col" not in lines[3]
    (folder / "screen.json").write_text(json.dumps({"batches": {"key": "cell_line", "names": ["A", "B"]}}))
    assert "--celltype-col batch" in next_steps(folder, None, python)[-1]
    (python.parent / "cell-eval").unlink()
    assert "(first: " in next_steps(folder, None, python)[-1]


def test_a_graph_without_edges_says_so_once():
    verdicts = mask_verdicts({"grn_edges": 0, "grn_threshold": 0.5, "grn_mask_median_change": 0.03}, [])
    assert len(verdicts) == 1 and verdicts[0].text.startswith("The graph has no edge above p > 0.5")
    kept = mask_verdicts(
        {"grn_edges": 40, "grn_threshold": 0.5, "grn_edges_at_start": 42, "grn_edges_kept_from_start": 38}, []
    )
    assert kept[0].text.startswith("Training changed little of the graph: 38 of its 40 edges")


def test_the_old_module_still_gives_the_headline_with_a_warning():
    import gpo_vae.evaluation.headline as old
    import gpo_vae.report.headline as new

    with pytest.warns(DeprecationWarning, match="moved to gpo_vae.report.headline.run_headline"):
        assert old.run_headline is new.run_headline
