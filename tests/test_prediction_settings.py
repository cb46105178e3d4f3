"""Where a run's prediction settings come from (gpo_vae.prediction_settings), first found first:
an evaluation given to load, the run's evaluation.json, the workflow's newest evaluation of the
run, the shipped config for a screen of your own."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.prediction_settings import EVALUATION_FILE, resolve_settings, write_run_evaluation
from gpo_vae.presets import load_preset

MEDIAN = 1234.0


def _evaluation(folder: Path, run_dir: Path, n_cells: int, library: float, complete: bool = True) -> Path:
    """An evaluation folder as evaluate_run writes it: run.json (run_dir relative) and .complete."""
    folder.mkdir(parents=True)
    record = {
        "config": {"evaluation": {"n_generated_cells": n_cells, "seed": 7}},
        "data": {"generated_library_size": library, "ate_target_sum": library},
        "inputs": {"run_dir": os.path.relpath(run_dir, folder)},
    }
    (folder / "run.json").write_text(json.dumps(record))
    if complete:
        (folder / ".complete").write_text("sha\n")
    return folder


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """results/<dataset>/runs/<key> beside results/<dataset>/evaluation."""
    run = tmp_path / "results" / "screen" / "runs" / "abc"
    run.mkdir(parents=True)
    return run


def test_the_shipped_config_when_nothing_else_is_found(layout: Path):
    settings = resolve_settings(layout, MEDIAN)
    preset = load_preset().evaluation
    assert settings.n_cells == preset.n_generated_cells and settings.seed == preset.seed
    assert preset.generated_library_size == "median_library" and settings.library_size == MEDIAN
    assert "gpo_vae_plus_custom.yaml" in settings.source


def test_the_newest_finished_workflow_evaluation_of_this_run(layout: Path):
    evaluations = layout.parent.parent / "evaluation"
    _evaluation(evaluations / "old", layout, 100, 500.0)
    _evaluation(evaluations / "unfinished", layout, 300, 700.0, complete=False)
    other_run = layout.parent / "other"
    other_run.mkdir()
    _evaluation(evaluations / "another_run", other_run, 400, 800.0)
    newest = _evaluation(evaluations / "new", layout, 200, 600.0)
    os.utime(evaluations / "old" / ".complete", ns=(1, 1))
    settings = resolve_settings(layout, MEDIAN)
    assert (settings.n_cells, settings.seed, settings.library_size, settings.target_sum) == (
        200,
        7,
        600.0,
        600.0,
    )
    assert settings.source == str(newest / "run.json")


def test_the_run_s_own_record_wins_over_the_workflow_s_and_a_given_one_over_both(layout: Path):
    _evaluation(layout.parent.parent / "evaluation" / "e", layout, 200, 600.0)
    write_run_evaluation(
        EvaluationConfig(
            n_generated_cells=50, summary_stats_cells=20, generated_library_size="median_library"
        ),
        layout,
    )
    own = resolve_settings(layout, MEDIAN)
    assert own.n_cells == 50 and own.library_size == MEDIAN and own.target_sum == 1e4
    assert own.source == str(layout / EVALUATION_FILE)
    given = resolve_settings(
        layout, MEDIAN, {"n_generated_cells": 30, "summary_stats_cells": 10, "ate_target_sum": 99.0}
    )
    assert (given.n_cells, given.target_sum, given.library_size) == (30, 99.0, 1e4)
    folder = _evaluation(layout.parent / "elsewhere", layout, 80, 900.0)
    assert resolve_settings(layout, MEDIAN, folder).n_cells == 80
    assert resolve_settings(layout, MEDIAN, folder / "run.json").n_cells == 80
    with pytest.raises(FileNotFoundError, match=r"no evaluation record there.*run\.json"):
        resolve_settings(layout, MEDIAN, layout / "nowhere")
