"""What the seed benchmarks (``science.py``, ``unseen.py``) share: the command line, the worker
pool and the Markdown table."""

from __future__ import annotations

import argparse
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def seed_parser(description: str, groups: str, default_groups: str, models: str) -> argparse.ArgumentParser:
    """``--<groups> --seeds --models --workers --markdown --out`` of a seed benchmark."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(f"--{groups}", default=default_groups)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--models", default=models)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--markdown", action="store_true", help="print the table(s) as Markdown too")
    parser.add_argument(
        "--out", type=Path, help="keep every screen's files here (default: a temporary folder)"
    )
    return parser


def split_list(text: str, kind: type = str) -> list:
    """``"a, b,,c"`` → ``["a", "b", "c"]`` (each converted with ``kind``)."""
    return [kind(part.strip()) for part in text.split(",") if part.strip()]


def parse_seed_args(
    parser: argparse.ArgumentParser, groups: str, known: list[str]
) -> tuple[argparse.Namespace, list[str], list[int], list[str]]:
    """(args, groups, seeds, models), after a usage error for an unknown group or a model family
    without a synthetic config."""
    args = parser.parse_args()
    names, seeds, models = (
        split_list(getattr(args, groups)),
        split_list(args.seeds, int),
        split_list(args.models),
    )
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown {groups} {unknown}; choose from {known}")
    for model in models:
        if not (ROOT / "configs" / f"{model}_synthetic.yaml").is_file():
            parser.error(f"--models {model}: no configs/{model}_synthetic.yaml")
    return args, names, seeds, models


def run_jobs(
    jobs: list[dict],
    worker: Callable[[dict], dict],
    workers: int,
    name_of: Callable[[dict], str],
    line_of: Callable[[dict, dict], str],
) -> tuple[list[dict], list[str], float]:
    """Run ``worker`` on every job in a spawned process pool: (rows, failures, peak RSS GB).

    ``worker`` returns ``{"rows": [...], "peak_rss_gb": float}``; one line is printed per
    finished job (``name_of(job)``: ``line_of(job, result)``), a failure is printed and listed
    without losing the other jobs' rows.
    """
    rows: list[dict] = []
    failed: list[str] = []
    peak = 0.0
    # spawned, not forked: a fork of this process (OpenMP already running) aborts in libgomp
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
        futures = {pool.submit(worker, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            name = name_of(job)
            try:
                result = future.result()
            except Exception as err:  # one job's failure must not lose the others' numbers
                failed.append(f"{name}: {type(err).__name__}: {err}")
                print(f"  {name}: FAILED ({failed[-1]})", flush=True)
                continue
            rows += result["rows"]
            peak = max(peak, result["peak_rss_gb"])
            print(f"  {name}: {line_of(job, result)}", flush=True)
    return rows, failed, peak


def markdown(table: pd.DataFrame) -> str:
    """The table as a Markdown pipe table (cells as their text)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(values) + " |" for values in table.astype(str).itertuples(index=False)]
    return "\n".join(lines)


def seed_jobs(
    groups: list[str],
    seeds: list[int],
    models: list[str],
    root: Path,
    key: str,
    prepare: Callable[[str, int, Path], dict],
    describe: Callable[[dict], str],
) -> list[dict]:
    """Prepare every (group, seed) screen under ``root`` and list one job per model on it.

    ``prepare`` returns at least ``artifact`` and ``truth``; the first model's job of a screen
    also reports the baselines (``baselines``), which do not depend on the model.
    """
    jobs = []
    for group in groups:
        for seed in seeds:
            folder = root / f"{group}_seed{seed}"
            prepared = prepare(group, seed, folder)
            print(f"{group} seed {seed}: {describe(prepared)}", flush=True)
            jobs += [
                {
                    key: group,
                    "seed": seed,
                    "model": model,
                    "folder": str(folder / model),
                    "artifact": prepared["artifact"],
                    "truth": prepared["truth"],
                    "baselines": i == 0,
                }
                for i, model in enumerate(models)
            ]
    return jobs


def prepare_synthetic(
    preset: str, seed: int, folder: Path, config: Path, batch_key: str | None = None
) -> dict:
    """Simulate a preset (``SyntheticConfig.seed`` = ``seed``), save it in its layout, compute its
    summary statistics and preprocess it with ``config``'s preprocessing, into ``folder``
    (:func:`prepare_file`); ``batch_key`` reads the simulated cell lines as batches."""
    from gpo_vae.data.synthetic import SyntheticConfig, saved_layout, simulate_perturbseq

    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "prepared.json").exists():
        return prepare_file(folder / "screen.h5ad", folder, config, batch_key)
    simulated = simulate_perturbseq(SyntheticConfig.preset(preset, seed=seed))
    counts = folder / "screen.h5ad"
    saved_layout(simulated.adata, simulated.config.layout).write_h5ad(counts)
    truth = folder / "true_network.csv"
    simulated.network.to_csv(truth, index=False)
    return prepare_file(counts, folder, config, batch_key, truth)


def prepare_file(
    counts: Path, folder: Path, config: Path, batch_key: str | None = None, truth: Path | None = None
) -> dict:
    """Compute a counts file's summary statistics and preprocess it with ``config``'s
    preprocessing (as ``main`` does for a user's screen), into ``folder``.

    Returns ``artifact``, ``truth`` (the true network, or None), ``cells``, ``genes``,
    ``heldout`` (the split's held-out labels) and ``prepare_s``; a folder prepared before is
    reused as it is.
    """
    import json
    import time

    from gpo_vae.data.contract import read_counts_h5ad
    from gpo_vae.data.layout import ScreenLayout
    from gpo_vae.data.summary_stats import compute_summary_stats, write_summary_stats_csv
    from gpo_vae.preprocessing.artifact import write_artifact
    from gpo_vae.preprocessing.from_file import preprocess_files
    from gpo_vae.run_config import load_run_config

    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "prepared.json"
    if done.exists():  # an earlier run of the benchmark with the same --out
        return json.loads(done.read_text())
    start = time.perf_counter()
    layout = ScreenLayout(batch_key=batch_key)
    stats = write_summary_stats_csv(
        compute_summary_stats(read_counts_h5ad(counts, layout), progress=False), folder / "stats.csv"
    )
    preprocess = load_run_config(config).preprocess
    artifact = preprocess_files(counts, stats, None, preprocess, layout, progress=False, print_table=False)
    write_artifact(artifact, folder / "artifact")
    prepared = {
        "artifact": str(folder / "artifact"),
        "truth": str(truth) if truth else None,
        "cells": artifact.n_obs,
        "genes": artifact.n_vars,
        "heldout": json.loads(artifact.uns["record"])["splits"]["heldout"],
        "prepare_s": time.perf_counter() - start,
    }
    done.write_text(json.dumps(prepared))
    return prepared


#: Metrics of ``scaled_scores.csv`` the benchmarks tabulate, per task.
SCALED_COLUMNS = {
    "unseen_pairs": ("pearson", "pearson_specific", "interaction_pearson", "discrimination_l1"),
    "unseen_singles": ("pearson", "pearson_specific", "discrimination_l1", "centroid_accuracy"),
    "heldout_cells": ("pearson", "pearson_specific", "discrimination_l1"),
}


def scaled_rows(eval_dir: Path, task: str, model: str, baselines: bool, base: dict) -> list[dict]:
    """One row per (method, metric) of an evaluation's ``scaled_scores.csv`` for ``task``: the
    model's rows renamed to its family (``model_neighbours`` → ``<family>_neighbours``), the
    baselines' and the replicate's only when ``baselines``."""
    scores = pd.read_csv(eval_dir / "scaled_scores.csv")
    scores = scores[(scores["task"] == task) & scores["metric"].isin(SCALED_COLUMNS[task])]
    rows = []
    for _, row in scores.iterrows():
        own = row["role"] == "model" and str(row["method"]).startswith("model")
        if not own and (not baselines or row["role"] == "model"):
            continue  # another model's rows (SAMS-VAE evaluated beside) belong to its own job
        name = str(row["method"]).replace("model", model, 1) if own else str(row["method"])
        rows.append(
            {
                **base,
                "task": task,
                "metric": row["metric"],
                "method": name,
                "role": row["role"],
                "mean": row["mean"],
                "scaled": row["scaled"],
                "scaled_low": row["scaled_low"],
                "scaled_high": row["scaled_high"],
                "b": row["b"],
                "r": row["r"],
                "baseline": row["baseline"],
                "n": row["n"],
            }
        )
    return rows


def _mean_sd(values: pd.Series) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.3f} (1 seed)"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def scaled_summary(rows: pd.DataFrame, group: str, models: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Per (``group``, task, metric, method): the scaled score and the raw mean, mean ± sd over
    seeds, and the per-seed bootstrap interval's mean ends; and one verdict line per (group,
    task, metric): the best model family against the best baseline, by the seeds' spread of
    their per-seed difference."""
    table, verdicts = [], []
    keys = [group, "task", "metric"]
    for (name, task, metric), part in rows.groupby(keys, sort=False):
        for method, mine in part.groupby("method", sort=False):
            table.append(
                {
                    group: name,
                    "task": task,
                    "metric": metric,
                    "method": method,
                    "seeds": mine["seed"].nunique(),
                    "scaled": _mean_sd(mine["scaled"]),
                    "interval (mean of seeds)": (
                        f"[{mine['scaled_low'].mean():.2f}, {mine['scaled_high'].mean():.2f}]"
                        if mine["scaled_low"].notna().any()
                        else ""
                    ),
                    "raw": _mean_sd(mine["mean"]),
                    "0 = baseline (raw)": f"{mine['baseline'].iloc[0]} {_mean_sd(mine['b'])}",
                    "1 = replicate (raw)": _mean_sd(mine["r"]),
                }
            )
        verdicts.append(f"{name} {task} {metric}: {scaled_verdict(part, models)}")
    return pd.DataFrame(table), verdicts


def scaled_verdict(part: pd.DataFrame, models: list[str]) -> str:
    """Does the best model family beat the best baseline by more than the seeds' spread?"""
    wide = part.pivot_table(index="seed", columns="method", values="scaled", aggfunc="first")
    families = [m for m in models if m in wide.columns]
    baselines = [m for m in part.loc[part["role"] == "baseline", "method"].unique() if m in wide.columns]
    if not families or not baselines or wide[families + baselines].isna().all().all():
        return "no scale (no headroom between baseline and replicate, or nothing scored)"
    best_model = max(families, key=lambda m: wide[m].mean())
    best_baseline = max(baselines, key=lambda m: wide[m].mean())
    difference = (wide[best_model] - wide[best_baseline]).dropna()
    mean = difference.mean()
    spread = difference.std(ddof=1) if len(difference) > 1 else float("nan")
    text = (
        f"{best_model} {wide[best_model].mean():.2f} vs {best_baseline} {wide[best_baseline].mean():.2f}, "
        f"difference {mean:+.2f} ± {spread:.2f} over {len(difference)} seeds"
    )
    if len(difference) > 1 and mean > spread:
        return f"{text}: the model WINS (by more than the seeds' spread)"
    if len(difference) > 1 and -mean > spread:
        return f"{text}: the baseline wins"
    return f"{text}: not told apart"


def scaled_pivot(summary: pd.DataFrame, group: str) -> pd.DataFrame:
    """:func:`scaled_summary`'s scaled column as one row per method, one column per (group, metric)."""
    frame = summary.assign(column=summary[group] + " " + summary["metric"])
    table = frame.pivot_table(index="method", columns="column", values="scaled", aggfunc="first", sort=False)
    order = list(dict.fromkeys(frame["method"]))
    table = table.reindex(order).fillna("")
    return table.loc[:, (table != "").any(axis=0)].reset_index()  # a column no seed could scale


def print_scaled(rows: pd.DataFrame, group: str, models: list[str], title: str, as_markdown: bool) -> None:
    """Print :func:`scaled_summary` (long table, verdicts) and :func:`scaled_pivot` of ``rows``."""
    summary, verdicts = scaled_summary(rows, group, models)
    compact = scaled_pivot(summary, group)
    print(f"\n{title} (0 = best trivial baseline, 1 = replicate), mean ± sd over seeds:")
    print(summary.to_string(index=False))
    print("\n" + "\n".join(verdicts))
    print(f"\nscaled scores, one column per {group} and metric:")
    print(compact.to_string(index=False))
    if as_markdown:
        print()
        print(markdown(summary))
        print()
        print(markdown(compact))
