"""Real-screen shapes end to end with the laptop config: seconds, memory, and what the model learnt.

    python benchmarks/screens.py [--presets panel,crispra,...] [--config configs/gpo_vae_custom.yaml]
                                 [--out DIR] [--threads N]

For each simulator preset (a 500-gene panel without its targets, CRISPRa, dual-guide
combinations, two cell lines, counts in a layer, guide-level labels) the screen is saved as a
user's ``.h5ad`` and run through the same library functions the workflow's tasks call: summary
statistics from the cells, ``inspect``, preprocessing, training and evaluation against the
simulator's true network. Printed per preset: cells × genes, perturbations kept, modality and
pairing features, seconds per stage, training epochs and steps, peak resident memory so far,
held-out ATE Pearson of the model and of the per-perturbation training mean, and the GRN's
AUPRC against the true network for the model, |corr ΔX| and a random graph (with the edges'
positive rate, the AUPRC of chance). Numbers are as measured; nothing is tuned to them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
from _memory import peak_rss_gb

from gpo_vae.data.contract import read_counts_h5ad
from gpo_vae.data.layout import ScreenLayout
from gpo_vae.data.summary_stats import compute_summary_stats, write_summary_stats_csv
from gpo_vae.data.synthetic import SyntheticConfig, saved_layout, simulate_perturbseq
from gpo_vae.evaluation.run import evaluate_run
from gpo_vae.preprocessing.artifact import write_artifact
from gpo_vae.preprocessing.from_file import preprocess_files
from gpo_vae.preprocessing.inspect import inspect_screen
from gpo_vae.run_config import load_run_config
from gpo_vae.training.train import train_model

PRESETS = ("panel", "crispra", "combinatorial", "batches", "counts_layer", "guides")
BATCH_KEYS = {"batches": "cell_line"}


def run_preset(preset: str, config_path: Path, root: Path, threads: int | None) -> dict:
    row: dict = {"preset": preset}
    run_config = load_run_config(config_path)
    training = run_config.training
    if threads is not None:
        training = training.replace(cpu_threads=threads)
    evaluation = run_config.evaluation
    screen = simulate_perturbseq(SyntheticConfig.preset(preset))
    folder = root / preset
    folder.mkdir(parents=True)
    counts = folder / "screen.h5ad"
    saved_layout(screen.adata, screen.config.layout).write_h5ad(counts)
    truth = folder / "true_network.csv"
    screen.network.to_csv(truth, index=False)
    layout = ScreenLayout(batch_key=BATCH_KEYS.get(preset))
    row["shape"] = f"{screen.adata.n_obs:,} x {screen.adata.n_vars:,}"

    start = time.perf_counter()
    adata = read_counts_h5ad(counts, layout)
    stats_path = write_summary_stats_csv(compute_summary_stats(adata, progress=False), folder / "stats.csv")
    row["stats_s"] = time.perf_counter() - start
    del adata

    start = time.perf_counter()
    inspect_screen(counts, stats_path, None, run_config.preprocess, layout)
    row["inspect_s"] = time.perf_counter() - start

    start = time.perf_counter()
    artifact = preprocess_files(
        counts, stats_path, None, run_config.preprocess, layout, progress=False, print_table=False
    )
    record = json.loads(artifact.uns["record"])
    artifact_dir = write_artifact(artifact, folder / "artifact")
    row["preprocess_s"] = time.perf_counter() - start
    table = pd.DataFrame(record["perturbation_table"])
    row["kept"] = f"{int((table['status'] == 'kept').sum())}/{len(table)}"
    row["modality"] = record["modality"]["resolved"]
    row["pairing"] = record["pairing"]["features"]

    start = time.perf_counter()
    run_dir = train_model(artifact_dir, run_config.model, training, folder / "run", progress=False)
    run = json.loads((run_dir / "run.json").read_text())
    row["train_s"] = time.perf_counter() - start
    row["epochs"], row["steps"] = run["epochs"], run.get("steps")

    start = time.perf_counter()
    out = evaluate_run(
        artifact_dir, run_dir, evaluation, folder / "evaluation", true_network=truth, progress=False
    )
    row["evaluate_s"] = time.perf_counter() - start
    metrics = json.loads((out / "run.json").read_text())["metrics"]
    row["model_r"] = metrics["model_mean_pearson"]
    row["mean_r"] = metrics["mean_baseline_mean_pearson"]
    reference = pd.read_csv(out / "grn_reference.csv", keep_default_na=False)
    truth_rows = reference[reference["network"] == "true_network"].set_index("method")
    for method, column in (
        ("model", "auprc_model"),
        ("correlation", "auprc_corr"),
        ("random", "auprc_random"),
    ):
        row[column] = (
            pd.to_numeric(truth_rows.loc[method, "auprc"]) if method in truth_rows.index else float("nan")
        )
    row["positive_rate"] = (
        pd.to_numeric(truth_rows["positive_rate"]).iloc[0] if len(truth_rows) else float("nan")
    )
    row["peak_rss_gb"] = peak_rss_gb()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--config", type=Path, default=Path("configs/gpo_vae_custom.yaml"))
    parser.add_argument(
        "--out", type=Path, help="keep every preset's files here (default: a temporary folder)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads for training (default: the config's)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        for preset in args.presets.split(","):
            rows.append(run_preset(preset.strip(), args.config, root, args.threads))
            print(
                pd.DataFrame(rows[-1:]).to_string(index=False, float_format=lambda v: f"{v:.2f}"), flush=True
            )
    print(f"\nconfig {args.config}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
