"""`redun run workflow.py main --dataset synthetic`, twice, from a copy of the project root.

The sandbox's synthetic configs are shrunk (tiny model, 2 epochs, few generated cells) so that
the whole pipeline (simulate → preprocess → train GPO-VAE and SAMS-VAE → evaluate → report)
runs in about a minute; the shipped configs are tested elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gpo_vae.config import load_yaml
from gpo_vae.preprocessing.artifact import read_artifact
from tests.workflow_sandbox import TINY_SECTIONS, WorkflowSandbox

STAGES = {"simulate_dataset", "preprocess_dataset", "train_run", "evaluate_run_task", "summarise_run"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> WorkflowSandbox:
    box = WorkflowSandbox.create(tmp_path_factory.mktemp("workflow"))
    box.shrink_configs(TINY_SECTIONS, ("gpo_vae_plus_synthetic", "sams_vae_synthetic", "gpo_vae_plus_custom"))
    (box.root / "networks").mkdir()
    # no edge among the screen's genes: the table must say why its precision is undefined
    (box.root / "networks" / "biogrid.csv").write_text("source,target\nNOTAGENE1,NOTAGENE2\n")
    return box


def test_main_runs_every_stage_then_serves_all_from_cache(sandbox):
    args = (
        "main",
        "--dataset",
        "synthetic",
        "--compare-sams-vae",
        "true",
        "--networks",
        "networks/biogrid.csv",
    )
    first, result = sandbox.redun(*args)
    assert STAGES <= sandbox.executed(first)
    results = sandbox.root / "results" / "synthetic"
    summary = json.loads((results / "dataset_summary.json").read_text())
    assert summary["summary"]["cells"] > 0 and summary["summary"]["control_cells"] > 0
    assert summary["summary"]["perturbations"] > 10
    assert summary["packages"]["redun"]
    artifacts = list((results / "preprocessed").glob("*/artifact.h5ad"))
    assert len(artifacts) == 1
    read_artifact(artifacts[0].parent)
    assert len(list((results / "runs").glob("*/.complete"))) == 2  # GPO-VAE and SAMS-VAE
    # every results directory names the dataset it came from by the counts file's SHA-256
    dataset_sha = summary["counts_sha256"]
    assert len(dataset_sha) == 64
    assert (
        json.loads((artifacts[0].parent / "record.json").read_text())["input"]["counts_sha256"] == dataset_sha
    )
    for run_config in (results / "runs").glob("*/config.json"):
        assert json.loads(run_config.read_text())["dataset_sha256"] == dataset_sha

    reports = list((results / "evaluation").glob("*/report.html"))
    assert len(reports) == 1 and (reports[0].parent / ".complete").exists()
    evaluation = reports[0].parent
    assert json.loads((evaluation / "run.json").read_text())["inputs"]["dataset_sha256"] == dataset_sha
    run = json.loads((evaluation / "run.json").read_text())
    assert run["dataset"] == "synthetic" and run["config"]["evaluation"]["n_generated_cells"] == 100
    assert run["inputs"]["sams_vae_run_dir"] and run["inputs"]["true_network"].endswith("true_network.csv")
    assert 0.0 <= run["metrics"]["true_network_auroc"] <= 1.0
    methods = set(pd.read_csv(evaluation / "prediction_metrics.csv")["method"])
    assert {
        "model",
        "sams_vae",
        "mean_baseline",
        "noncontrol_mean",
        "control_baseline",
        "split_half_ceiling",
    } == methods
    reference = pd.read_csv(evaluation / "grn_reference.csv", keep_default_na=False)
    assert set(reference["network"]) == {"biogrid", "true_network"}
    assert (reference.loc[reference["network"] == "biogrid", "reason"] != "").all()
    output = result.stdout + result.stderr
    relative = reports[0].relative_to(sandbox.root)
    assert f"report: {relative}" in output and "held-out ATE" in output
    end = output[output.index("held-out ATE, mean over perturbations:") :].splitlines()
    assert end[1].split() == ["method", "ATE", "r", "R²", "specific", "r"]
    assert [line.split()[0] for line in end[2:4]] == ["model", "SAMS-VAE"]
    verdict = next(line for line in end if line.startswith("verdict: "))
    assert "cannot rank models" in verdict
    assert output.count("held-out ATE, mean over perturbations:") == 1, "the headline is printed once"
    assert "File(path=" not in output, "redun's result dict is not printed after the headline"
    # the next commands run as printed, from where the run was started
    python = next(line for line in end if "GPOVAEModel.load" in line).strip()
    loaded = subprocess.run(python, shell=True, cwd=sandbox.root, capture_output=True, text=True)
    assert loaded.returncode == 0 and loaded.stdout.startswith("GPOVAEModel(GPO-VAE+"), loaded.stderr[-2000:]

    second, result = sandbox.redun(*args)
    assert sandbox.jobs(second), "the second execution recorded no jobs"
    # main is served from cache too: its result carries the config files it read
    assert sandbox.executed(second) == set(), f"tasks ran again: {sandbox.executed(second)}"
    output = result.stdout + result.stderr
    assert "Cached Job" in output
    assert "held-out ATE, mean over perturbations:" in output, "the headline ends a cached run too"

    # Editing the config file in place (same path, same command) is seen: only evaluation reruns.
    path = sandbox.root / "configs" / "gpo_vae_plus_synthetic.yaml"
    raw = load_yaml(path)
    raw["evaluation"]["n_negatives"] = 50
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    third, _ = sandbox.redun(*args)
    ran = sandbox.executed(third)
    assert {"main", "evaluate_run_task"} <= ran and not ran & {"preprocess_dataset", "train_run"}, ran


def test_unknown_dataset_is_a_clear_error(sandbox):
    with pytest.raises(AssertionError, match="Unknown dataset 'rpe2'"):
        sandbox.redun("main", "--dataset", "rpe2")


def test_main_help_lists_every_option_with_its_default():
    import inspect

    from workflow import main

    doc = main.func.__doc__
    for name, param in inspect.signature(main.func).parameters.items():
        flag = "--" + name.replace("_", "-")
        default = "none" if param.default is None else str(param.default).lower()
        assert f"{flag} ({default})" in doc, f"{flag} ({default}) missing from main's docstring"


def test_main_on_a_users_own_screen(sandbox, tmp_path):
    """`--dataset path.h5ad` with its own column and control label; statistics from the cells.
    The run opens the screen's labels and checks its counts once: the description, the summary
    statistics and the preprocessing (threads of one process) share what was read."""
    from gpo_vae.data.synthetic import SyntheticConfig, simulate_perturbseq

    adata = simulate_perturbseq(SyntheticConfig.preset("default")).adata
    adata.obs = pd.DataFrame(
        {"target": adata.obs["gene"].astype(str).replace("non-targeting", "NT").to_numpy()},
        index=adata.obs_names,
    )
    (sandbox.root / "screens").mkdir(exist_ok=True)
    adata.write_h5ad(sandbox.root / "screens" / "my_screen.h5ad")
    args = (
        "main",
        "--dataset",
        "screens/my_screen.h5ad",
        "--perturbation-key",
        "target",
        "--control-label",
        "NT",
    )
    trace = tmp_path / "opens.log"
    tracing = str(Path(__file__).resolve().parents[1] / "tracing")
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [tracing, os.environ.get("PYTHONPATH")])),
        "TRACE_H5_LOG": str(trace),
        "TRACE_H5_FILE": str(sandbox.root / "screens" / "my_screen.h5ad"),
    }
    execution, result = sandbox.redun(*args, env=env)
    opens = trace.read_text().splitlines()
    described = [line for line in opens if "_read_description" in line]
    checked = [line for line in opens if line.startswith("contract_on_disk.py:_open_counts_h5ad")]
    assert len(described) == 1 and len(checked) == 1, "\n".join(opens)
    assert any("preprocess_dataset" in line for line in opens), "the trace saw no preprocessing"
    assert {
        "prepare_local_dataset",
        "preprocess_dataset",
        "train_run",
        "evaluate_run_task",
    } <= sandbox.executed(execution)
    results = sandbox.root / "results" / "my_screen"
    assert (results / "data" / "summary_stats.csv").exists()  # computed from the cells
    assert len(list((results / "evaluation").glob("*/report.html"))) == 1
    assert "held-out ATE" in result.stdout + result.stderr


def test_importing_the_workflow_loads_no_heavy_library():
    """redun imports `workflow` (and tasks/scheduler.py) on every command, cached reruns included:
    torch, scanpy and anndata load only inside task bodies."""
    import subprocess
    import sys

    from tests.workflow_sandbox import REPO_ROOT

    code = "import sys, workflow, tasks.scheduler; print(sorted({'torch', 'scanpy', 'anndata'} & set(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]", loaded


def test_split_option_sets_the_split_mode_and_names_the_choices():
    from gpo_vae.config import ConfigError
    from gpo_vae.run_config import RunConfig
    from workflow.datasets import with_split

    config = RunConfig()
    assert with_split(config, None) is config
    assert with_split(config, "heldout_combinations").preprocess.split.mode == "heldout_combinations"
    assert with_split(config, "heldout_combinations").preprocess.split.heldout_fraction == 0.2
    with pytest.raises(ConfigError, match="heldout_perturbations, heldout_combinations"):
        with_split(config, "pairs")
