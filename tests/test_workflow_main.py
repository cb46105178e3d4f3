"""`redun run workflow.py main --dataset synthetic`, twice, from a copy of the project root."""

from __future__ import annotations

import json

import pytest

from gpo_vae.preprocessing.artifact import read_artifact
from tests.workflow_sandbox import WorkflowSandbox


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> WorkflowSandbox:
    return WorkflowSandbox.create(tmp_path_factory.mktemp("workflow"))


def test_main_runs_then_serves_acquisition_from_cache(sandbox):
    first, _ = sandbox.redun("main", "--dataset", "synthetic")
    assert {"simulate_dataset", "preprocess_dataset"} <= sandbox.executed(first)
    summary = json.loads((sandbox.root / "results" / "synthetic" / "dataset_summary.json").read_text())
    assert summary["summary"]["cells"] > 0 and summary["summary"]["control_cells"] > 0
    assert summary["summary"]["perturbations"] > 10
    assert summary["packages"]["redun"]
    artifacts = list((sandbox.root / "results" / "synthetic" / "preprocessed").glob("*/artifact.h5ad"))
    assert len(artifacts) == 1
    read_artifact(artifacts[0].parent)

    second, result = sandbox.redun("main", "--dataset", "synthetic")
    assert sandbox.jobs(second), "the second execution recorded no jobs"
    assert sandbox.executed(second) == set(), f"tasks ran again: {sandbox.executed(second)}"
    assert "Cached Job" in result.stdout + result.stderr


def test_unknown_dataset_is_a_clear_error(sandbox):
    with pytest.raises(AssertionError, match="Unknown dataset 'rpe2'"):
        sandbox.redun("main", "--dataset", "rpe2")
