"""The science benchmark: GPO-VAE, GPO-VAE+, SAMS-VAE and the baselines, side by side, over seeds.

    python benchmarks/science.py [--screens default,low_cells,panel] [--seeds 1,2,3]
                                 [--models gpo_vae,gpo_vae_plus,sams_vae] [--workers 2]
                                 [--out DIR] [--markdown]

For every screen and seed the simulator draws a new screen (``SyntheticConfig.seed`` = the
seed: not the seed 0 screen the configs were tuned on), which is preprocessed once with the
``configs/gpo_vae_synthetic.yaml`` preprocessing (``low_cells``: ``min_cells`` 40; ``low_cells``
and ``panel``: ``min_degs: auto``), then every model family trains on that artifact with its
own ``configs/<model>_synthetic.yaml`` (training seed = the seed) and is evaluated against the
simulator's true network, exactly as ``main`` evaluates a run.

Printed: one table, mean ± sd over seeds, per screen and method: held-out ATE Pearson r and R²
over all genes and the top-20 DE genes, the perturbation-specific Pearson (prediction and
observation minus the shift all perturbed cells share), GRN AUROC / AUPRC against the true
network, edges at p > 0.5 against the true number of edges among the pairs scored, and the
seconds of training (as the run measured them: a reused run keeps its own) and of evaluation
(one CPU thread per job, ``--workers`` jobs at once).
Baselines (per-perturbation training mean, non-control mean, no effect, split-half ceiling;
|corr ΔX|, |effect z| and random graphs) come from the same evaluations. SAMS-VAE's mask maps
perturbations to latent dimensions, not to genes: it has no graph to score. Numbers are as
measured; nothing is tuned to them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCREENS = ("default", "low_cells", "panel")
MODELS = ("gpo_vae", "gpo_vae_plus", "sams_vae")
#: Preprocessing changes a screen needs beyond the synthetic config (the screen, not the model).
SCREEN_FILTERS = {
    "default": {},
    "low_cells": {"min_cells": 40, "min_degs": "auto"},
    "panel": {"min_degs": "auto"},
}
BASELINES = ("mean_baseline", "noncontrol_mean", "control_baseline", "split_half_ceiling")
GRN_BASELINES = ("correlation", "effect_z", "random")
PREDICTION_COLUMNS = ("pearson", "r2", "pearson_top20", "r2_top20", "pearson_specific")


def _config_for(model: str, screen: str, folder: Path) -> Path:
    raw = yaml.safe_load((ROOT / "configs" / f"{model}_synthetic.yaml").read_text())
    raw["preprocess"]["filters"].update(SCREEN_FILTERS[screen])
    path = folder / f"{model}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def prepare_screen(screen: str, seed: int, folder: Path) -> dict:
    """Simulate, compute the summary statistics and preprocess one screen; its paths and timings."""
    from gpo_vae.data.contract import read_counts_h5ad
    from gpo_vae.data.layout import ScreenLayout
    from gpo_vae.data.summary_stats import compute_summary_stats, write_summary_stats_csv
    from gpo_vae.data.synthetic import SyntheticConfig, saved_layout, simulate_perturbseq
    from gpo_vae.preprocessing.artifact import write_artifact
    from gpo_vae.preprocessing.pipeline import preprocess_files
    from gpo_vae.run_config import load_run_config

    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "prepared.json"
    if done.exists():  # an earlier run of the benchmark with the same --out
        return json.loads(done.read_text())
    start = time.perf_counter()
    simulated = simulate_perturbseq(SyntheticConfig.preset(screen, seed=seed))
    counts = folder / "screen.h5ad"
    saved_layout(simulated.adata, simulated.config.layout).write_h5ad(counts)
    truth = folder / "true_network.csv"
    simulated.network.to_csv(truth, index=False)
    layout = ScreenLayout()
    stats = write_summary_stats_csv(
        compute_summary_stats(read_counts_h5ad(counts, layout), progress=False), folder / "stats.csv"
    )
    preprocess = load_run_config(_config_for("gpo_vae", screen, folder)).preprocess
    artifact = preprocess_files(counts, stats, None, preprocess, layout, progress=False, print_table=False)
    write_artifact(artifact, folder / "artifact")
    prepared = {
        "artifact": str(folder / "artifact"),
        "truth": str(truth),
        "cells": artifact.n_obs,
        "genes": artifact.n_vars,
        "prepare_s": time.perf_counter() - start,
    }
    done.write_text(json.dumps(prepared))
    return prepared


def train_and_evaluate(job: dict) -> dict:
    """One model family on one prepared screen: its metrics and the baselines' (a worker job)."""
    from gpo_vae.evaluation.run import evaluate_run
    from gpo_vae.run_config import load_run_config
    from gpo_vae.training.train import train_model

    folder = Path(job["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    config = load_run_config(_config_for(job["model"], job["screen"], folder))
    training = config.training.replace(seed=job["seed"])
    run_dir = train_model(job["artifact"], config.model, training, folder / "run", progress=False)
    start = time.perf_counter()
    out = evaluate_run(
        job["artifact"],
        run_dir,
        config.evaluation,
        folder / "evaluation",
        true_network=job["truth"],
        progress=False,
    )
    evaluate_s = time.perf_counter() - start
    run = json.loads((run_dir / "run.json").read_text())
    train_s = float(run["training_seconds"])  # measured by the run itself, also when it is reused
    table = pd.read_csv(out / "prediction_metrics.csv")
    held = table[(table["reference"] == "heldout_test") & (table["subset"] == "all_cells")]
    means = held.groupby("method")[[c for c in PREDICTION_COLUMNS if c in held.columns]].mean()
    # a latent-sized (SAMS-VAE) mask is no graph: its evaluation writes no GRN tables
    graph = (out / "grn_reference.csv").exists()
    truth = pd.DataFrame()
    if graph:
        reference = pd.read_csv(out / "grn_reference.csv", keep_default_na=False)
        truth = reference[reference["network"] == "true_network"].set_index("method")
    metrics = json.loads((out / "run.json").read_text())["metrics"]
    rows = []
    base = {"screen": job["screen"], "seed": job["seed"]}
    own = {
        **base,
        "method": job["model"],
        **means.loc["model"].to_dict(),
        "epochs": int(run["epochs"]),
        "train_s": train_s,
        "evaluate_s": evaluate_s,
    }
    if graph:
        own.update(
            auroc=float(truth.loc["model", "auroc"]),
            auprc=float(truth.loc["model", "auprc"]),
            edges=int(metrics["grn_edges"]),
            true_edges=int(truth.loc["model", "n_positive"]),
        )
    rows.append(own)
    if job["baselines"]:
        for method in BASELINES:
            rows.append({**base, "method": method, **means.loc[method].to_dict()})
        for method in GRN_BASELINES:
            if method in truth.index:
                rows.append(
                    {
                        **base,
                        "method": method,
                        "auroc": float(truth.loc[method, "auroc"]),
                        "auprc": float(truth.loc[method, "auprc"]),
                    }
                )
    return {"rows": rows, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def summary_table(rows: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """mean ± sd over seeds of every column, per screen and method (in the order given)."""
    columns = [
        c
        for c in (*PREDICTION_COLUMNS, "auroc", "auprc", "edges", "true_edges", "train_s", "evaluate_s")
        if c in rows.columns
    ]
    order = {m: i for i, m in enumerate(methods)}
    out = []
    for (screen, method), group in rows.groupby(["screen", "method"], sort=False):
        entry = {"screen": screen, "method": method, "seeds": group["seed"].nunique()}
        for column in columns:
            values = pd.to_numeric(group[column], errors="coerce").dropna()
            if values.empty:
                entry[column] = ""
            elif column in ("edges", "true_edges", "train_s", "evaluate_s"):
                entry[column] = f"{values.mean():.0f} ± {values.std(ddof=1) if len(values) > 1 else 0:.0f}"
            else:
                entry[column] = f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}"
        out.append(entry)
    table = pd.DataFrame(out)
    table["_order"] = table["method"].map(lambda m: order.get(m, len(order)))
    return table.sort_values(["screen", "_order"], kind="stable").drop(columns="_order")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screens", default=",".join(SCREENS))
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown too")
    parser.add_argument(
        "--out", type=Path, help="keep every screen's files here (default: a temporary folder)"
    )
    args = parser.parse_args()
    screens = [s.strip() for s in args.screens.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [s for s in screens if s not in SCREEN_FILTERS]
    if unknown:
        parser.error(f"unknown screens {unknown}; choose from {list(SCREEN_FILTERS)}")
    for model in models:
        if not (ROOT / "configs" / f"{model}_synthetic.yaml").is_file():
            parser.error(f"--models {model}: no configs/{model}_synthetic.yaml")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        jobs = []
        for screen in screens:
            for seed in seeds:
                folder = root / f"{screen}_seed{seed}"
                prepared = prepare_screen(screen, seed, folder)
                print(
                    f"{screen} seed {seed}: {prepared['cells']:,} cells x {prepared['genes']:,} genes, "
                    f"prepared in {prepared['prepare_s']:.0f} s",
                    flush=True,
                )
                for i, model in enumerate(models):
                    jobs.append(
                        {
                            "screen": screen,
                            "seed": seed,
                            "model": model,
                            "folder": str(folder / model),
                            "artifact": prepared["artifact"],
                            "truth": prepared["truth"],
                            "baselines": i == 0,
                        }
                    )
        rows: list[dict] = []
        failed: list[str] = []
        peak = 0.0
        # spawned, not forked: a fork of this process (OpenMP already running) aborts in libgomp
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=spawn) as pool:
            futures = {pool.submit(train_and_evaluate, job): job for job in jobs}
            for future in as_completed(futures):
                job = futures[future]
                name = f"{job['screen']} seed {job['seed']} {job['model']}"
                try:
                    result = future.result()
                except Exception as err:  # one job's failure must not lose the others' numbers
                    failed.append(f"{name}: {type(err).__name__}: {err}")
                    print(f"  {name}: FAILED ({failed[-1]})", flush=True)
                    continue
                rows += result["rows"]
                peak = max(peak, result["peak_rss_gb"])
                mine = result["rows"][0]
                graph = f", AUPRC {mine['auprc']:.3f}, {mine['edges']} edges" if "auprc" in mine else ""
                print(f"  {name}: r {mine['pearson']:.3f}{graph}, train {mine['train_s']:.0f} s", flush=True)
        frame = pd.DataFrame(rows)
        if args.out:
            frame.to_csv(args.out / "science_rows.csv", index=False)
    table = summary_table(frame, [*models, *BASELINES, *GRN_BASELINES])
    print(
        f"\n{len(seeds)} seeds {seeds}; {args.workers} jobs at once, 1 thread each; peak RSS of a job {peak:.1f} GB"
    )
    print(f"total {time.perf_counter() - started:.0f} s")
    for line in failed:
        print(f"FAILED {line}")
    print(table.to_string(index=False))
    if args.markdown:
        print()
        print("| " + " | ".join(table.columns) + " |")
        print("|" + "---|" * len(table.columns))
        for values in table.astype(str).itertuples(index=False):
            print("| " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()
