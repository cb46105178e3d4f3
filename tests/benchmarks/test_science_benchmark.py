"""benchmarks/science.py and unseen.py: their tables are mean ± sd of what the runs measured, and
they check their inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.benchmark_modules import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    return load_benchmark(name)


def _science():
    return _load("science")


def test_summary_table_is_mean_and_sd_over_seeds_in_method_order():
    science = _science()
    rows = pd.DataFrame(
        [
            {"screen": "default", "seed": 1, "method": "mean_baseline", "pearson": 0.80},
            {"screen": "default", "seed": 1, "method": "gpo_vae", "pearson": 0.70, "auprc": 0.3, "edges": 10},
            {"screen": "default", "seed": 2, "method": "gpo_vae", "pearson": 0.74, "auprc": 0.5, "edges": 20},
            {"screen": "default", "seed": 2, "method": "mean_baseline", "pearson": 0.84},
        ]
    )
    table = science.summary_table(rows, ["gpo_vae", "mean_baseline"]).set_index("method")
    assert list(table.index) == ["gpo_vae", "mean_baseline"]
    assert table.loc["gpo_vae", "pearson"] == "0.720 ± 0.028"
    assert table.loc["gpo_vae", "auprc"] == "0.400 ± 0.141"
    assert table.loc["gpo_vae", "edges"] == "15 ± 7"
    assert table.loc["mean_baseline", "auprc"] == ""  # a prediction baseline has no graph
    assert table.loc["gpo_vae", "seeds"] == 2


def test_unknown_screen_or_model_is_refused_before_any_work():
    for script, args, message in (
        ("science", ["--screens", "nope"], "unknown screens"),
        ("science", ["--models", "foo"], "no configs/foo"),
        ("unseen", ["--scenarios", "triples"], "unknown scenarios"),
        ("unseen", ["--models", "foo"], "no configs/foo"),
    ):
        done = subprocess.run(
            [sys.executable, f"benchmarks/{script}.py", *args], cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 2 and message in done.stderr, (script, done.stderr)


def test_unseen_table_is_per_scenario_mean_and_sd_with_models_first(tmp_path):
    unseen = _load("unseen")
    rows = pd.DataFrame(
        [
            {"scenario": "pairs", "seed": 1, "method": "additive", "interaction_pearson": 0.0, "n": 3},
            {"scenario": "pairs", "seed": 1, "method": "gpo_vae", "interaction_pearson": 0.3, "n": 3},
            {"scenario": "pairs", "seed": 2, "method": "gpo_vae", "interaction_pearson": 0.5, "n": 3},
            {"scenario": "singles", "seed": 1, "method": "gpo_vae", "rank_normalised": 0.25, "n": 6},
        ]
    )
    table = unseen.summary_table(rows, "pairs", ["gpo_vae"]).set_index("method")
    assert list(table.index) == ["gpo_vae", "additive"]
    assert table.loc["gpo_vae", "interaction_pearson"] == "0.400 ± 0.141"
    assert table.loc["additive", "seeds"] == 1 and "rank_normalised" not in table.columns
    # the scenario's split is what preprocessing will read
    config = unseen.config_for("gpo_vae", "pairs", tmp_path)
    assert "heldout_combinations" in config.read_text()
    markdown = _load("_pool").markdown(table.reset_index())
    assert markdown.splitlines()[0].startswith("| method | seeds |") and markdown.count("\n") == 3
