"""Do the report, cell-eval on the exported files and the Python API give the same numbers?

    .venv/bin/python benchmarks/agreement.py results/synthetic/evaluation/<hash>

For the evaluation folder given: the report's mean held-out ATE Pearson r of the model and of the
training mean (``prediction_metrics.csv``); cell-eval's mean ``pearson_delta`` on
``predictions.h5ad`` and ``baseline_predictions.h5ad`` against ``real_test.h5ad`` (run as a user
runs it, ``cell-eval run --profile minimal``); and the model's r recomputed from
``GPOVAEModel.load(run).predict_shift`` at its defaults against the observed ATE of the report's
scatter perturbations (``ate_scatter.csv``). Prints each mean beside the report's over the same
perturbations, the largest per-perturbation difference and the seconds each took.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gpo_vae import GPOVAEModel
from gpo_vae.evaluation.cell_eval import BASELINE_FILE, PREDICTIONS_FILE, REAL_TEST_FILE
from gpo_vae.io import resolve_recorded


def cell_eval_pearson(predictions: Path, real: Path, out: Path) -> pd.Series:
    """cell-eval's per-perturbation pearson_delta, as ``cell-eval run`` writes it."""
    command = [sys.executable, "-m", "cell_eval", "run", "-ap", str(predictions), "-ar", str(real)]
    command += ["--control-pert", "non-targeting", "--profile", "minimal", "-o", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return pd.read_csv(out / "results.csv").set_index("perturbation")["pearson_delta"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "evaluation", type=Path, help="an evaluation folder (results/<dataset>/evaluation/<hash>)"
    )
    args = parser.parse_args()
    folder = args.evaluation
    metrics = pd.read_csv(folder / "prediction_metrics.csv")
    held = metrics[(metrics["reference"] == "heldout_test") & (metrics["subset"] == "all_cells")]
    report = {
        method: held[held["method"] == method].set_index("perturbation")["pearson"]
        for method in held["method"].unique()
    }
    rows = []

    def add(what: str, method: str, values: pd.Series, seconds: float) -> None:
        ours = report[method].reindex(values.index)
        rows.append(
            {
                "source": what,
                "method": method,
                "mean r": float(values.mean()),
                "report's mean r": float(ours.mean()),  # over the same perturbations
                "largest difference": float((values - ours).abs().max()),
                "perturbations": len(values),
                "seconds": round(seconds, 1),
            }
        )

    with tempfile.TemporaryDirectory() as scratch:
        for method, name in (("model", PREDICTIONS_FILE), ("mean_baseline", BASELINE_FILE)):
            if (folder / name).is_file():
                start = time.perf_counter()
                found = cell_eval_pearson(folder / name, folder / REAL_TEST_FILE, Path(scratch) / method)
                add(f"cell-eval on {name}", method, found, time.perf_counter() - start)
    run = json.loads((folder / "run.json").read_text())
    start = time.perf_counter()
    model = GPOVAEModel.load(resolve_recorded(run["inputs"]["run_dir"], folder))
    labels = list(report["model"].index)
    shift = model.predict_shift(labels)
    real = pd.read_csv(folder / "ate_scatter.csv")  # the observed ATE of the scatter's perturbations
    observed = real.pivot(index="gene", columns="perturbation", values="observed")
    found = pd.Series(
        {p: float(np.corrcoef(shift.loc[observed.index, p], observed[p])[0, 1]) for p in observed.columns}
    )
    add(
        f"predict_shift at its defaults ({model.prediction_settings.source})",
        "model",
        found,
        time.perf_counter() - start,
    )
    with pd.option_context("display.width", 160, "display.max_colwidth", 80):
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.6f}"))


if __name__ == "__main__":
    main()
