"""The unseen benchmark: predicting held-out ``A+B`` pairs and held-out single genes, over seeds.

    python benchmarks/unseen.py [--scenarios pairs,singles] [--seeds 1,2,3]
                                [--models gpo_vae,gpo_vae_plus,sams_vae] [--workers 2]
                                [--out DIR] [--markdown]

Scenarios (each seed draws a new screen, ``SyntheticConfig.seed`` = the seed):

- ``pairs``: the ``nonadditive`` screen (20 ``A+B`` pairs whose downstream effects saturate),
  split ``heldout_combinations`` with ``heldout_fraction`` 0.3: every cell of ~30 % of the pairs
  that pass the filters is in test, their singles are in training.
- ``singles``: the ``default`` screen, split ``heldout_perturbations`` (20 % of the kept
  perturbations have no training cell).

Each screen is preprocessed once with ``configs/gpo_vae_synthetic.yaml``'s preprocessing and
that split, every model family trains on it with its own ``configs/<model>_synthetic.yaml``
(training seed = the seed) and is evaluated as ``main`` evaluates a run, which writes
``unseen_metrics.csv`` (:mod:`gpo_vae.evaluation.unseen`). The baselines' rows come from the
first model's evaluation (they do not depend on the model, except ``grn_neighbour_mean``, which
averages over that model's GRN neighbours).

Printed: one table per scenario, mean ± sd over seeds of the per-seed means: for pairs the ATE
Pearson r, its top-20 DE r, the interaction Pearson r (observed − additive vs predicted −
additive) on all and top-20 DE genes, and the fraction of significantly interacting pairs whose
interaction direction is right; for singles the Pearson r, the perturbation-specific r and the
normalised rank (0: every unseen gene's own prediction is its best match, 0.5: chance). Also the
seconds of training (one CPU thread per job, ``--workers`` jobs at once) and of evaluation, and
the peak memory of a job. Numbers are as measured; nothing is tuned to them.
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

MODELS = ("gpo_vae", "gpo_vae_plus", "sams_vae")
#: scenario → (simulator preset, preprocess.split overrides)
SCENARIOS = {
    "pairs": ("nonadditive", {"mode": "heldout_combinations", "heldout_fraction": 0.3}),
    "singles": ("default", {"mode": "heldout_perturbations", "heldout_fraction": 0.2}),
}
KIND = {"pairs": "combination", "singles": "single"}
COLUMNS = {
    "pairs": (
        "pearson",
        "pearson_top20",
        "interaction_pearson",
        "interaction_pearson_top20",
        "interaction_sign_right",
    ),
    "singles": ("pearson", "pearson_specific", "pearson_top20", "rank_normalised"),
}


def config_for(model: str, scenario: str, folder: Path) -> Path:
    """``configs/<model>_synthetic.yaml`` with the scenario's split, written into ``folder``."""
    raw = yaml.safe_load((ROOT / "configs" / f"{model}_synthetic.yaml").read_text())
    raw["preprocess"].setdefault("split", {}).update(SCENARIOS[scenario][1])
    path = folder / f"{model}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def prepare(scenario: str, seed: int, folder: Path) -> dict:
    """Simulate and preprocess one scenario's screen; its paths and sizes (reused when present)."""
    from gpo_vae.data.layout import ScreenLayout
    from gpo_vae.data.summary_stats import compute_summary_stats, write_summary_stats_csv
    from gpo_vae.data.synthetic import SyntheticConfig, simulate_perturbseq
    from gpo_vae.preprocessing.artifact import write_artifact
    from gpo_vae.preprocessing.pipeline import preprocess_files
    from gpo_vae.run_config import load_run_config

    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "prepared.json"
    if done.exists():
        return json.loads(done.read_text())
    start = time.perf_counter()
    simulated = simulate_perturbseq(SyntheticConfig.preset(SCENARIOS[scenario][0], seed=seed))
    counts = folder / "screen.h5ad"
    simulated.adata.write_h5ad(counts)
    truth = folder / "true_network.csv"
    simulated.network.to_csv(truth, index=False)
    stats = write_summary_stats_csv(
        compute_summary_stats(simulated.adata, progress=False), folder / "stats.csv"
    )
    preprocess = load_run_config(config_for("gpo_vae", scenario, folder)).preprocess
    artifact = preprocess_files(
        counts, stats, None, preprocess, ScreenLayout(), progress=False, print_table=False
    )
    write_artifact(artifact, folder / "artifact")
    splits = json.loads(artifact.uns["record"])["splits"]
    prepared = {
        "artifact": str(folder / "artifact"),
        "truth": str(truth),
        "cells": artifact.n_obs,
        "genes": artifact.n_vars,
        "heldout": splits["heldout"],
        "prepare_s": time.perf_counter() - start,
    }
    done.write_text(json.dumps(prepared))
    return prepared


def train_and_evaluate(job: dict) -> dict:
    """One model family on one prepared screen: the per-method means of its unseen table."""
    from gpo_vae.evaluation.run import evaluate_run
    from gpo_vae.run_config import load_run_config
    from gpo_vae.training.train import train_model

    folder = Path(job["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    config = load_run_config(config_for(job["model"], job["scenario"], folder))
    training = config.training.replace(seed=job["seed"], cpu_threads=1)
    run_dir = train_model(job["artifact"], config.model, training, folder / "run", progress=False)
    start = time.perf_counter()
    out = evaluate_run(
        job["artifact"],
        run_dir,
        config.evaluation.replace(cpu_threads=1),
        folder / "evaluation",
        true_network=job["truth"],
        progress=False,
    )
    evaluate_s = time.perf_counter() - start
    run = json.loads((run_dir / "run.json").read_text())
    table = pd.read_csv(out / "unseen_metrics.csv")
    table = table[table["kind"] == KIND[job["scenario"]]]
    columns = [c for c in COLUMNS[job["scenario"]] if c in table.columns]
    means = table.groupby("method", sort=False)[columns].mean()
    counts = table.groupby("method", sort=False).size()
    base = {"scenario": job["scenario"], "seed": job["seed"]}
    rows = []
    for method, values in means.iterrows():
        own = method == "model" or method == f"model{'_own_node'}"
        if not own and not job["baselines"]:
            continue
        name = method.replace("model", job["model"], 1) if own else method
        row = {**base, "method": name, **values.to_dict(), "n": int(counts[method])}
        if method == "model":
            row.update(
                train_s=float(run["training_seconds"]), evaluate_s=evaluate_s, epochs=int(run["epochs"])
            )
        rows.append(row)
    return {"rows": rows, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def summary_table(rows: pd.DataFrame, scenario: str, methods: list[str]) -> pd.DataFrame:
    """mean ± sd over seeds of the per-seed means, one row per method (models first)."""
    frame = rows[rows["scenario"] == scenario]
    columns = [c for c in (*COLUMNS[scenario], "n", "train_s", "evaluate_s") if c in frame.columns]
    out = []
    for method, group in frame.groupby("method", sort=False):
        entry = {"method": method, "seeds": group["seed"].nunique()}
        for column in columns:
            values = pd.to_numeric(group[column], errors="coerce").dropna()
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            if values.empty:
                entry[column] = ""
            elif column in ("n", "train_s", "evaluate_s"):
                entry[column] = f"{values.mean():.0f} ± {spread:.0f}"
            else:
                entry[column] = f"{values.mean():.3f} ± {spread:.3f}"
        out.append(entry)
    table = pd.DataFrame(out)
    order = {m: i for i, m in enumerate(methods)}
    table["_order"] = table["method"].map(lambda m: order.get(m, len(order)))
    return table.sort_values("_order", kind="stable").drop(columns="_order")


def _markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(values) + " |" for values in table.astype(str).itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown too")
    parser.add_argument(
        "--out", type=Path, help="keep every screen's files here (default: a temporary folder)"
    )
    args = parser.parse_args()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)}")
    for model in models:
        if not (ROOT / "configs" / f"{model}_synthetic.yaml").is_file():
            parser.error(f"--models {model}: no configs/{model}_synthetic.yaml")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        jobs = []
        for scenario in scenarios:
            for seed in seeds:
                folder = root / f"{scenario}_seed{seed}"
                prepared = prepare(scenario, seed, folder)
                print(
                    f"{scenario} seed {seed}: {prepared['cells']:,} cells x {prepared['genes']:,} genes, "
                    f"held out {', '.join(prepared['heldout'])}; prepared in {prepared['prepare_s']:.0f} s",
                    flush=True,
                )
                for i, model in enumerate(models):
                    jobs.append(
                        {
                            "scenario": scenario,
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
                name = f"{job['scenario']} seed {job['seed']} {job['model']}"
                try:
                    result = future.result()
                except Exception as err:  # one job's failure must not lose the others' numbers
                    failed.append(f"{name}: {type(err).__name__}: {err}")
                    print(f"  {name}: FAILED ({failed[-1]})", flush=True)
                    continue
                rows += result["rows"]
                peak = max(peak, result["peak_rss_gb"])
                mine = result["rows"][0]
                key = "interaction_pearson" if job["scenario"] == "pairs" else "pearson_specific"
                print(
                    f"  {name}: {key} {mine.get(key, float('nan')):.3f}, train {mine['train_s']:.0f} s",
                    flush=True,
                )
        frame = pd.DataFrame(rows)
        if args.out:
            frame.to_csv(args.out / "unseen_rows.csv", index=False)
    print(
        f"\n{len(seeds)} seeds {seeds}; {args.workers} jobs at once, 1 thread each; "
        f"peak RSS of a job {peak:.1f} GB; total {time.perf_counter() - started:.0f} s"
    )
    for line in failed:
        print(f"FAILED {line}")
    if frame.empty:
        return
    methods = [*models, *(f"{m}_own_node" for m in models)]
    for scenario in scenarios:
        table = summary_table(frame, scenario, methods)
        print(f"\n{scenario}:")
        print(table.to_string(index=False))
        if args.markdown:
            print()
            print(_markdown(table))


if __name__ == "__main__":
    main()
