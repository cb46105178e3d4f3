"""benchmarks/science.py: its table is mean ± sd of what the runs measured, and it checks its inputs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _science():
    spec = importlib.util.spec_from_file_location("science", ROOT / "benchmarks" / "science.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    for args, message in (
        (["--screens", "nope"], "unknown screens"),
        (["--models", "foo"], "no configs/foo"),
    ):
        done = subprocess.run(
            [sys.executable, "benchmarks/science.py", *args], cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 2 and message in done.stderr
