"""The ATE's scale on a shallow screen: our Pearson r with the published setting (generated cells
of 10,000 UMIs, every cell scaled to 10,000) and at the screen's own depth (both the training
cells' median library), and cell-eval's pearson_delta on the exported cells (our scale) and on
their raw counts (its own).

Simulates a screen (``--preset panel``: 500 genes; ``--median-umi`` sets its depth), preprocesses
it, trains one model with the laptop config (``--epochs``), evaluates it twice
(``evaluation.ate_target_sum`` and ``generated_library_size`` 10000, then ``median_library``;
every generated cell exported) and runs cell-eval on each export twice. Prints the mean over perturbations of each, the seconds of each step
and the peak memory. Needs the dev extra (cell-eval).

    python benchmarks/ate_scale.py --preset panel --median-umi 112 --epochs 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import pandas as pd
from _memory import peak_rss_gb

from gpo_vae.config import to_dict
from gpo_vae.data.synthetic import SyntheticConfig, simulate_perturbseq
from gpo_vae.evaluation.run import evaluate_run
from gpo_vae.model import GPOVAEModel
from gpo_vae.pp import prepare
from gpo_vae.preprocessing.artifact import write_artifact
from gpo_vae.run_config import load_run_config

ROOT = Path(__file__).resolve().parents[1]


def _cell_eval(folder: Path, predictions: Path, real: Path, out: Path) -> pd.Series:
    command = [sys.executable, "-m", "cell_eval", "run", "-ap", str(predictions), "-ar", str(real)]
    command += ["--control-pert", "non-targeting", "--profile", "minimal", "-o", str(out)]
    subprocess.run(command, check=True, capture_output=True, cwd=folder)
    return pd.read_csv(out / "results.csv").set_index("perturbation")["pearson_delta"]


def _as_counts(path: Path, out: Path) -> Path:
    cells = ad.read_h5ad(path)
    cells.X = cells.layers["counts"]
    cells.write_h5ad(out)
    return out


def _ours(folder: Path, method: str) -> pd.Series:
    table = pd.read_csv(folder / "prediction_metrics.csv")
    rows = (
        (table["reference"] == "heldout_test")
        & (table["subset"] == "all_cells")
        & (table["method"] == method)
    )
    return table[rows].set_index("perturbation")["pearson"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="panel")
    parser.add_argument("--median-umi", type=float, default=None, help="the screen's median UMIs per cell")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)"
    )
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="gpo_vae_ate_scale_"))
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    overrides = {"seed": args.seed} | ({"median_umi": args.median_umi} if args.median_umi else {})
    screen = simulate_perturbseq(SyntheticConfig.preset(args.preset, **overrides))
    config = load_run_config(ROOT / "configs" / "gpo_vae_custom.yaml")
    artifact = prepare(screen.adata, config)
    artifact_dir = write_artifact(artifact, out / "artifact")
    seconds["simulate + prepare"] = time.perf_counter() - start

    start = time.perf_counter()
    training = config.training.replace(max_epochs=args.epochs, seed=args.seed)
    sections = {"model": to_dict(config.model), "training": to_dict(training)}
    model = GPOVAEModel.train(artifact_dir, sections, out / "run", progress=False)
    seconds["train"] = time.perf_counter() - start

    rows = {}
    settings = {"10,000": 1e4, "median library": "median_library"}
    for name, scale in settings.items():
        start = time.perf_counter()
        evaluation = config.evaluation.replace(
            ate_target_sum=scale,
            generated_library_size=scale,
            cell_eval_cells=config.evaluation.n_generated_cells,
        )
        folder = evaluate_run(artifact_dir, model.run_dir, evaluation, out / f"eval_{scale}", progress=False)
        rows[f"ours, {name}: model"] = _ours(folder, "model")
        rows[f"ours, {name}: training mean"] = _ours(folder, "mean_baseline")
        rows[f"cell-eval on our X ({name}): model"] = _cell_eval(
            folder, folder / "predictions.h5ad", folder / "real_test.h5ad", out / f"cell_eval_{scale}"
        )
        predictions = _as_counts(folder / "predictions.h5ad", out / f"predictions_counts_{scale}.h5ad")
        real = _as_counts(folder / "real_test.h5ad", out / f"real_test_counts_{scale}.h5ad")
        rows[f"cell-eval on the counts ({name}; its median, ln): model"] = _cell_eval(
            folder, predictions, real, out / f"cell_eval_counts_{scale}"
        )
        seconds[f"evaluate + cell-eval twice, {name}"] = time.perf_counter() - start
        data = json.loads((folder / "run.json").read_text())["data"]
    print(
        f"screen: preset {args.preset}, {artifact.n_obs} cells after QC and filters, {artifact.n_vars} genes, "
        f"median training library {data['median_training_library']:.0f} UMIs; {args.epochs} epochs at most"
    )
    print(f"{'mean Pearson r of the held-out ATE over perturbations':<66} {'mean':>7} {'n':>4}")
    for name, values in rows.items():
        print(f"{name:<66} {values.mean():>7.3f} {values.notna().sum():>4}")
    for name, value in seconds.items():
        print(f"seconds, {name}: {value:.1f}")
    print(f"peak RSS: {peak_rss_gb() * 1024:.0f} MB; runs in {out}")


if __name__ == "__main__":
    main()
