"""Sweeps, re-evaluation and executor profiles through the real `redun run workflow.py ...`.

The sandbox's synthetic configs are shrunk as in ``test_workflow_main.py``; the sweep files are
written by the tests (two points, then a third).
"""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gpo_vae.config import load_yaml
from gpo_vae.leaderboard import point_metrics, rank_rows, to_csv, to_html
from tests.workflow_sandbox import REPO_ROOT, TINY_SECTIONS, WorkflowSandbox

TWO_POINTS = {
    "name": "tiny",
    "method": "grid",
    "metric": "val/loss",
    "goal": "minimize",
    "max_concurrent": 2,
    "parameters": {"model.grn_coeff": [10.0, 100.0]},
}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> WorkflowSandbox:
    box = WorkflowSandbox.create(tmp_path_factory.mktemp("sweep"))
    box.shrink_configs(
        {**TINY_SECTIONS, "training": {**TINY_SECTIONS["training"], "max_epochs": 1}},
        ("gpo_vae_synthetic", "gpo_vae_plus_synthetic"),  # sweep's default family and main's
    )
    return box


def write_yaml(box: WorkflowSandbox, name: str, data: dict) -> str:
    path = box.root / "configs" / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path.relative_to(box.root))


def train_jobs(box: WorkflowSandbox, execution: str) -> int:
    return sum(1 for name, cached in box.jobs(execution) if name == "train_run" and not cached)


def test_leaderboard_ranks_by_metric_and_escapes():
    rows = [
        {
            "point": "a",
            "label": "x=1",
            "parameters": {"m.x": 1},
            "metrics": point_metrics({"best_val_loss": 3.0}, {}),
        },
        {
            "point": "b",
            "label": "<b>",
            "parameters": {"m.x": 2},
            "metrics": point_metrics({"best_val_loss": 1.0}, {}),
        },
        {"point": "c", "label": "x=3", "parameters": {"m.x": 3}, "metrics": point_metrics({}, None)},
    ]
    ranked = rank_rows(rows, "val/loss", "minimize")
    assert [row["point"] for row in ranked] == ["b", "a", "c"] and ranked[2]["rank"] is None
    assert [row["point"] for row in rank_rows(rows, "val/loss", "maximize")] == ["a", "b", "c"]
    assert to_csv(ranked).splitlines()[0].startswith("rank,point,label,metric_value,m.x,val/loss")
    page = to_html(ranked, "s<1>", "val/loss", "minimize")
    assert "&lt;b&gt;" in page and "<b></td>" not in page and "s&lt;1&gt;" in page
    with pytest.raises(ValueError):
        rank_rows(rows, "val/loss", "up")


def jobs_named(box: WorkflowSandbox, execution: str, name: str) -> list[bool]:
    """The ``cached`` flag of every job of task ``name`` in one execution."""
    return [cached for task_name, cached in box.jobs(execution) if task_name == name]


def test_sweep_on_process_executor_then_extended_trains_only_the_new_point(sandbox):
    sweep = write_yaml(sandbox, "sweep_tiny.yaml", TWO_POINTS)
    args = (
        "sweep",
        "--dataset",
        "synthetic",
        "--sweep",
        sweep,
        "--executor",
        "process",
        "--max-concurrent",
        "1",
    )
    first, _ = sandbox.redun(*args)
    executed = sandbox.executed(first)
    assert {"preprocess_dataset", "train_run", "evaluate_run_task", "leaderboard"} <= executed
    assert train_jobs(sandbox, first) == 2
    assert len(jobs_named(sandbox, first, "preprocess_dataset")) == 1, "one preprocessing for both points"
    assert len(jobs_named(sandbox, first, "sweep_wave")) == 2, "--max-concurrent 1: one point per wave"
    out = sandbox.root / "results" / "synthetic" / "sweeps" / "tiny"
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 2 and list(board["rank"]) == [1, 2]
    assert board["metric_value"].is_monotonic_increasing
    assert list(board["metric_value"]) == list(board["val/loss"])
    assert sorted(board["model.grn_coeff"]) == [10.0, 100.0]
    assert board["test_iwelbo"].notna().all() and board["true_network_auroc"].notna().all()
    assert "<table>" in (out / "leaderboard.html").read_text()

    # the same command after the sweep file gained a point: only that point trains
    write_yaml(
        sandbox, "sweep_tiny.yaml", {**TWO_POINTS, "parameters": {"model.grn_coeff": [10.0, 100.0, 1000.0]}}
    )
    second, _ = sandbox.redun(*args)
    assert train_jobs(sandbox, second) == 1, sandbox.jobs(second)
    assert not {"simulate_dataset", "preprocess_dataset"} & sandbox.executed(second)
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 3 and sorted(board["model.grn_coeff"]) == [10.0, 100.0, 1000.0]


def test_sweep_unknown_key_names_the_file_and_key(sandbox):
    bad = write_yaml(sandbox, "sweep_bad.yaml", {**TWO_POINTS, "parameters": {"model.grn_coef": [1.0]}})
    with pytest.raises(AssertionError, match=r"sweep_bad.yaml.*model.grn_coef"):
        sandbox.redun("sweep", "--dataset", "synthetic", "--sweep", bad)


@pytest.mark.slow  # over a minute on 2 cores: `make test-all`
def test_changed_evaluation_reevaluates_changed_training_retrains_and_evaluate_run(sandbox):
    base = load_yaml(sandbox.root / "configs" / "gpo_vae_plus_synthetic.yaml")
    first, _ = sandbox.redun("main", "--dataset", "synthetic")
    assert {"preprocess_dataset", "train_run", "evaluate_run_task"} <= {n for n, _ in sandbox.jobs(first)}

    evaluation = {**base, "evaluation": {**base["evaluation"], "n_negatives": 50}}
    second, _ = sandbox.redun(
        "main", "--dataset", "synthetic", "--config", write_yaml(sandbox, "eval.yaml", evaluation)
    )
    executed = sandbox.executed(second)
    assert "evaluate_run_task" in executed and "summarise_run" in executed
    assert not {"simulate_dataset", "preprocess_dataset", "train_run"} & executed, executed

    training = {**base, "training": {**base["training"], "seed": 7}}
    third, _ = sandbox.redun(
        "main", "--dataset", "synthetic", "--config", write_yaml(sandbox, "train.yaml", training)
    )
    executed = sandbox.executed(third)
    assert "train_run" in executed and "evaluate_run_task" in executed
    assert "preprocess_dataset" not in executed, executed

    run_dir = next(p.parent for p in (sandbox.root / "results" / "synthetic" / "runs").glob("*/model.pt"))
    config = write_yaml(
        sandbox, "eval2.yaml", {**base, "evaluation": {**base["evaluation"], "n_negatives": 60}}
    )
    fourth, result = sandbox.redun("evaluate", "--run", str(run_dir), "--config", config)
    executed = sandbox.executed(fourth)
    assert "evaluate_run_task" in executed and "train_run" not in executed
    assert not any(name == "train_run" for name, _ in sandbox.jobs(fourth))
    assert "mean_pearson" in result.stdout + result.stderr
    # the dataset's files that main recorded are evaluated against again, with the new config
    report = re.search(r"report: (\S+)", result.stdout + result.stderr).group(1)
    run = json.loads((Path(report).parent / "run.json").read_text())
    assert run["config"]["evaluation"]["n_negatives"] == 60
    assert (
        run["inputs"]["true_network"].endswith("true_network.csv")
        and 0.0 <= run["metrics"]["true_network_auroc"] <= 1.0
    )


def test_sweep_and_evaluate_help_list_every_option_with_its_default():
    import inspect

    from workflow import evaluate, main, sweep

    for entry in (main, sweep, evaluate):
        doc = entry.func.__doc__
        for name, param in inspect.signature(entry.func).parameters.items():
            flag = "--" + name.replace("_", "-")
            default = "none" if param.default is None else str(param.default).lower()
            assert f"{flag} ({default})" in doc, f"{flag} ({default}) missing from {entry.name}'s docstring"


def uncommented_profiles() -> str:
    """redun.ini with its commented cluster sections uncommented (headers and ``key = value`` lines)."""
    lines = (REPO_ROOT / "redun.ini").read_text().splitlines()
    setting = re.compile(r"# (\[executors\.\w+\]|\w+ = .*)$")
    return "\n".join(line[2:] if setting.match(line) else line for line in lines) + "\n"


def test_redun_ini_profiles_parse(tmp_path):
    from redun import Scheduler
    from redun.config import Config

    text = (
        (REPO_ROOT / "redun.ini")
        .read_text()
        .replace("sqlite:///redun.db", f"sqlite:///{tmp_path / 'redun.db'}")
    )
    config = Config()
    config.read_string(text)
    executors = config["executors"]
    assert executors["default"]["type"] == "local"
    assert executors["process"]["mode"] == "process"
    assert set(executors) == {"default", "process"}, "the cluster profiles stay commented"
    scheduler = Scheduler(config=config)
    assert {"default", "process"} <= set(scheduler.executors)

    full = tmp_path / "redun.ini"
    full.write_text(uncommented_profiles())
    parsed = configparser.ConfigParser()
    parsed.read(full)
    batch, k8s = parsed["executors.batch"], parsed["executors.k8s"]
    assert batch["type"] == "aws_batch" and {"image", "queue", "s3_scratch", "memory", "vcpus"} <= set(batch)
    assert k8s["type"] == "k8s" and {"image", "namespace", "scratch"} <= set(k8s)
    gpu = parsed["executors.batch_gpu"]
    assert gpu["type"] == "aws_batch" and int(gpu["gpus"]) >= 1 and "cuda" in gpu["image"]
    redun_config = Config()
    redun_config.read_path(str(full))
    assert redun_config["executors"]["batch"]["queue"] and redun_config["executors"]["k8s"]["namespace"]

    # redun builds the AWS Batch executors offline (no AWS call until a job is submitted); the
    # k8s one loads a cluster's kubeconfig when built, so it is checked as parsed text only.
    without_k8s = re.sub(r"\[executors\.k8s\].*?(?=\n\[|\Z)", "", uncommented_profiles(), flags=re.S)
    batch_config = Config()
    batch_config.read_string(without_k8s.replace("sqlite:///redun.db", f"sqlite:///{tmp_path / 'b.db'}"))
    built = Scheduler(config=batch_config).executors
    assert type(built["batch"]).__name__ == type(built["batch_gpu"]).__name__ == "AWSBatchExecutor"
    assert built["batch"].queue == batch["queue"] and built["batch_gpu"].image == gpu["image"]


def test_points_group_by_preprocess_section_and_bad_keys_name_the_sweep():
    from gpo_vae.config import ConfigError
    from workflow.sweep_support import chunks, preprocess_groups, sweep_point_configs

    base = REPO_ROOT / "configs" / "gpo_vae_synthetic.yaml"
    points = [
        {"model.hop": 1},
        {"model.hop": 2, "preprocess.seed": 5},
        {"model.hop": 3},
        {"model.hop": 4, "preprocess.seed": 5},
    ]
    configs = sweep_point_configs(base, "sweeps/x.yaml", points)
    assert [c.model.hop for c in configs] == [1, 2, 3, 4] and configs[1].preprocess.seed == 5
    assert preprocess_groups(configs) == [0, 1, 0, 1]
    with pytest.raises(ConfigError, match=r"sweeps/x.yaml: point hops=1: .*model.hops"):
        sweep_point_configs(base, "sweeps/x.yaml", [{"model.hops": 1}])
    assert chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]


def test_sweep_logs_to_wandb_only_when_asked_without_retraining(sandbox, tmp_path):
    import importlib.util

    sweep = write_yaml(sandbox, "sweep_wandb.yaml", {**TWO_POINTS, "name": "tiny_wandb"})
    args = ("sweep", "--dataset", "synthetic", "--sweep", sweep)
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(AssertionError, match=r"wandb is not installed.*gpo-vae\[wandb\]"):
            sandbox.redun(*args, "--wandb-project", "lab")
    sandbox.redun(*args)
    out = sandbox.root / "results" / "synthetic" / "sweeps" / "tiny_wandb"
    assert not (out / "wandb.json").exists(), "no wandb unless asked"

    log = tmp_path / "wandb_calls.jsonl"
    env = {"PYTHONPATH": str(REPO_ROOT / "tests" / "fake_wandb"), "FAKE_WANDB_LOG": str(log)}
    second, _ = sandbox.redun(*args, "--wandb-project", "lab", env=env)
    executed = sandbox.executed(second)
    assert (
        "leaderboard" in executed and not {"train_run", "preprocess_dataset", "evaluate_run_task"} & executed
    )
    inits = [json.loads(line) for line in log.read_text().splitlines() if '"init"' in line]
    assert [c["job_type"] for c in inits] == ["sweep-point", "sweep-point", "sweep-leaderboard"]
    assert {c["project"] for c in inits} == {"lab"} and {c["group"] for c in inits} == {"sweep-tiny_wandb"}
    board = pd.read_csv(out / "leaderboard.csv")
    assert sorted(c["config"]["point"] for c in inits[:2]) == sorted(board["point"])
    assert json.loads((out / "wandb.json").read_text())["error"] is None
    saved = json.loads((out / "leaderboard.json").read_text())  # what the retry command reads
    assert saved["sweep"]["name"] == "tiny_wandb" and [r["point"] for r in saved["rows"]] == list(
        board["point"]
    )


def test_redun_log_shows_the_call_graph_of_a_sweep(sandbox):
    import subprocess
    import sys

    sweep = write_yaml(sandbox, "sweep_log.yaml", {**TWO_POINTS, "name": "tiny_log"})
    execution, _ = sandbox.redun("sweep", "--dataset", "synthetic", "--sweep", sweep)
    redun_bin = Path(sys.executable).with_name("redun")
    shown = subprocess.run(
        [str(redun_bin), "log", execution], cwd=sandbox.root, capture_output=True, text=True, check=True
    ).stdout
    depth = {}  # task → indentation of its job lines in the call tree
    for indent, name in re.findall(
        r"^( *)Job \w+ \[\s*\w+\s*\] [^:]+:\d+:\d+:\s+gpo_vae\.(\w+)\(", shown, re.M
    ):
        depth.setdefault(name, set()).add(len(indent))
    assert depth["sweep"] == {0} and depth["sweep_wave"] == {2} and depth["leaderboard"] == {2}, shown
    assert depth["train_run"] == {4} and depth["evaluate_run_task"] == {4}, "points are a wave's children"
