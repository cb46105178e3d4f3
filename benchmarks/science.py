"""The science benchmark: GPO-VAE, GPO-VAE+, SAMS-VAE and the baselines, side by side, over seeds.

    python benchmarks/science.py [--screens default,low_cells,panel,glioma,real] [--seeds 1,2,3]
                                 [--models gpo_vae,gpo_vae_plus,sams_vae] [--workers 2]
                                 [--out DIR] [--markdown]

For every simulated screen and seed the simulator draws a new screen (``SyntheticConfig.seed`` =
the seed: not the seed 0 screen the configs were tuned on), which is preprocessed once with the
``configs/gpo_vae_synthetic.yaml`` preprocessing (``low_cells``: ``min_cells`` 40; ``low_cells``
and ``panel``: ``min_degs: auto``), then every model family trains on that artifact with its
own ``configs/<model>_synthetic.yaml`` (training seed = the seed) and is evaluated against the
simulator's true network, exactly as ``main`` evaluates a run.

Two screens are a user's: ``real``, the real screen in ``../shared/data/screens`` (McFaline-Figueroa
et al. 2023, 9 CRISPRi knockdowns in three glioma lines; skipped with a message when absent), and
``glioma``, the simulator preset calibrated to it (``benchmarks/realism.py``). Both are read with
their cell lines as batches (``obs["cell_type"]``) and run with the configs a user gets,
``configs/<model>_custom.yaml``, the split drawn with the seed (``preprocess.seed``); ``real`` has
no true network, so its GRN columns stay empty.

Printed: one table, mean ± sd over seeds, per screen and method: held-out ATE Pearson r and R²
over all genes and the top-20 DE genes, the perturbation-specific Pearson (prediction and
observation minus the shift all perturbed cells share), GRN AUROC / AUPRC against the true
network and what training added to them (``auprc_gain``: the trained mask's AUPRC minus its
initial mask's; ``wasserstein_gain``: the same for CausalBench's mean Wasserstein distance at the
model's edge count), edges at p > 0.5 against the true number of edges among the pairs scored, and the
seconds of training (as the run measured them: a reused run keeps its own) and of evaluation
(one CPU thread per job, ``--workers`` jobs at once).
Baselines (per-perturbation training mean, non-control mean, no effect, split-half ceiling;
|corr ΔX|, |effect z| and random graphs) come from the same evaluations. SAMS-VAE's mask maps
perturbations to latent dimensions, not to genes: it has no graph to score. Then the held-out
cells on the baseline-to-replicate scale (``scaled_scores.csv``, task ``heldout_cells``: 0 = the
best of the training mean, the non-control mean and no effect; 1 = the Spearman–Brown-corrected
split-half replicate), with, per metric, whether the best family beats the best baseline by more
than the seeds' spread. Numbers are as measured; nothing is tuned to them.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _memory import peak_rss_gb  # noqa: E402
from _pool import (  # noqa: E402
    markdown,
    parse_seed_args,
    prepare_file,
    prepare_synthetic,
    print_scaled,
    run_jobs,
    scaled_rows,
    seed_jobs,
    seed_parser,
)

from gpo_vae.config import load_yaml  # noqa: E402

SCREENS = ("default", "low_cells", "panel", "glioma", "real")
MODELS = ("gpo_vae", "gpo_vae_plus", "sams_vae")
#: Preprocessing changes a screen needs beyond the synthetic config (the screen, not the model).
SCREEN_FILTERS = {
    "default": {},
    "low_cells": {"min_cells": 40, "min_degs": "auto"},
    "panel": {"min_degs": "auto"},
    "glioma": {},
    "real": {},
    "cascade": {},
    "feedback": {},
    "norman": {},
}
#: The user's screens: run with the custom configs, their cell lines (if any) read as batches.
USER_SCREENS = {"glioma": "cell_type", "real": "cell_type", "norman": None}
SCREENS_DIR = ROOT.parent / "shared" / "data" / "screens"
REAL_SCREEN = SCREENS_DIR / "mcfaline23_glioma_crispri.h5ad"
#: The real screens in ../shared (absent: skipped with a message).
REAL_SCREENS = {"real": REAL_SCREEN, "norman": SCREENS_DIR / "norman19_k562_crispra_singles.h5ad"}
BASELINES = ("mean_baseline", "noncontrol_mean", "control_baseline", "split_half_ceiling")
GRN_BASELINES = ("correlation", "effect_z", "random")
PREDICTION_COLUMNS = ("pearson", "r2", "pearson_top20", "r2_top20", "pearson_specific")


def _config_for(model: str, screen: str, folder: Path, seed: int | None = None) -> Path:
    family = "custom" if screen in USER_SCREENS else "synthetic"
    raw = load_yaml(ROOT / "configs" / f"{model}_{family}.yaml")
    raw["preprocess"]["filters"].update(SCREEN_FILTERS[screen])
    if screen in USER_SCREENS:
        # one thread per job, as the synthetic configs: two jobs of torch's default threads on
        # two cores oversubscribe them and run 10-20x slower (measured)
        raw["training"]["cpu_threads"] = raw["evaluation"]["cpu_threads"] = 1
        if seed is not None:
            raw["preprocess"]["seed"] = seed  # a user's screen: the seed draws the split
    path = folder / f"{model}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def prepare_screen(screen: str, seed: int, folder: Path) -> dict:
    """Simulate, compute the summary statistics and preprocess one screen; its paths and timings."""
    folder.mkdir(parents=True, exist_ok=True)
    config = _config_for("gpo_vae", screen, folder, seed)
    if screen in REAL_SCREENS:
        return prepare_file(REAL_SCREENS[screen], folder, config, USER_SCREENS[screen])
    return prepare_synthetic(screen, seed, folder, config, USER_SCREENS.get(screen))


def _number(value: float | None) -> float:
    """A run.json number; NaN where it is null (undefined)."""
    return float("nan") if value is None else float(value)


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
        graph = "model" in truth.index  # a real screen has no true network to score against
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
            auprc_gain=_number(metrics.get("grn_gain_true_network_auprc")),
            edges=int(metrics["grn_edges"]),
            true_edges=int(truth.loc["model", "n_positive"]),
        )
    own["wasserstein_gain"] = _number(metrics.get("grn_gain_mean_wasserstein"))
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
    rows += scaled_rows(out, "heldout_cells", job["model"], job["baselines"], {**base, "table": "scaled"})
    return {"rows": rows, "peak_rss_gb": peak_rss_gb()}


def summary_table(rows: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """mean ± sd over seeds of every column, per screen and method (in the order given)."""
    columns = [
        c
        for c in (
            *PREDICTION_COLUMNS,
            "auroc",
            "auprc",
            "auprc_gain",
            "wasserstein_gain",
            "edges",
            "true_edges",
            "train_s",
            "evaluate_s",
        )
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
    parser = seed_parser(__doc__.splitlines()[0], "screens", ",".join(SCREENS), ",".join(MODELS))
    args, screens, seeds, models = parse_seed_args(parser, "screens", list(SCREEN_FILTERS))
    for screen in [s for s in screens if s in REAL_SCREENS and not REAL_SCREENS[s].is_file()]:
        print(
            f"screen {screen} skipped: {REAL_SCREENS[screen]} absent (real screens live in ../shared/data/screens)"
        )
        screens.remove(screen)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        jobs = seed_jobs(
            screens,
            seeds,
            models,
            root,
            "screen",
            prepare_screen,
            lambda p: f"{p['cells']:,} cells x {p['genes']:,} genes, prepared in {p['prepare_s']:.0f} s",
        )

        def line_of(job: dict, result: dict) -> str:
            mine = result["rows"][0]
            graph = f", AUPRC {mine['auprc']:.3f}, {mine['edges']} edges" if "auprc" in mine else ""
            return f"r {mine['pearson']:.3f}{graph}, train {mine['train_s']:.0f} s"

        rows, failed, peak = run_jobs(
            jobs,
            train_and_evaluate,
            args.workers,
            lambda j: f"{j['screen']} seed {j['seed']} {j['model']}",
            line_of,
        )
        frame = pd.DataFrame(rows)
        if args.out:
            frame.to_csv(args.out / "science_rows.csv", index=False)
    scaled = frame[frame["table"] == "scaled"] if "table" in frame.columns else frame.iloc[0:0]
    frame = frame[frame["table"].isna()] if "table" in frame.columns else frame
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
        print(markdown(table))
    if len(scaled):
        print_scaled(scaled, "screen", models, "held-out cells on the scale", args.markdown)


if __name__ == "__main__":
    main()
