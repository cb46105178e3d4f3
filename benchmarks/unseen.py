"""The unseen benchmark: predicting held-out ``A+B`` pairs and held-out single genes, over seeds.

    python benchmarks/unseen.py [--scenarios pairs,singles,real_singles] [--seeds 1,2,3]
                                [--models gpo_vae,gpo_vae_plus,sams_vae] [--workers 2]
                                [--out DIR] [--markdown]

Scenarios (each seed draws a new screen, ``SyntheticConfig.seed`` = the seed, or, for the real
screen, a new split):

- ``pairs``: the ``nonadditive`` screen (20 ``A+B`` pairs whose downstream effects saturate),
  split ``heldout_combinations`` with ``heldout_fraction`` 0.3: every cell of ~30 % of the pairs
  that pass the filters is in test, their singles are in training.
- ``singles``: the ``default`` screen, split ``heldout_perturbations`` (20 % of the kept
  perturbations have no training cell).
- ``real_singles``: the real screen in ``../shared/data/screens`` (McFaline-Figueroa et al. 2023,
  CRISPRi in three glioma lines, read with its cell lines as batches), split
  ``heldout_perturbations`` with ``heldout_fraction`` 0.3 drawn with the seed, run with the
  configs a user gets (``configs/<model>_custom.yaml``); skipped with a message when absent.

Each screen is preprocessed once with ``configs/gpo_vae_synthetic.yaml``'s preprocessing and
that split, every model family trains on it with its own ``configs/<model>_synthetic.yaml``
(training seed = the seed) and is evaluated as ``main`` evaluates a run, which writes
``unseen_metrics.csv`` (:mod:`gpo_vae.evaluation.unseen`). The baselines' rows come from the
first model's evaluation (they do not depend on the model, except ``grn_neighbour_mean``, which
averages over that model's GRN neighbours).

Printed first: the scaled scores (``scaled_scores.csv``, :mod:`gpo_vae.evaluation.scaled`: 0 =
the task's best trivial baseline, 1 = the replicate, a second half of the held-out cells), mean ±
sd over seeds, with the mean of the seeds' bootstrap intervals and the raw means, for every model
family, baseline (the linear embedding model of Ahlmann-Eltze et al. included) and the replicate;
then, per metric, whether the best family beats the best baseline by more than the seeds' spread
of their per-seed difference. Then one table per scenario, mean ± sd over seeds of the per-seed
means: for pairs the ATE
Pearson r, its top-20 DE r, the interaction Pearson r (observed − additive vs predicted −
additive) on all and top-20 DE genes, its R², and the fraction of significantly interacting pairs
whose interaction direction is right; for singles the Pearson r and R², the perturbation-specific
r, the top-20 DE r and the normalised rank (0: every unseen gene's own prediction is its best match, 0.5: chance). Also the
seconds of training (one CPU thread per job, ``--workers`` jobs at once) and of evaluation, and
the peak memory of a job. Numbers are as measured; nothing is tuned to them.
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
from gpo_vae.report.unseen_section import PAIR_COLUMNS  # noqa: E402

MODELS = ("gpo_vae", "gpo_vae_plus", "sams_vae")
#: scenario → (simulator preset, preprocess.split overrides)
SCENARIOS = {
    "pairs": ("nonadditive", {"mode": "heldout_combinations", "heldout_fraction": 0.3}),
    "singles": ("default", {"mode": "heldout_perturbations", "heldout_fraction": 0.2}),
    "real_singles": ("real", {"mode": "heldout_perturbations", "heldout_fraction": 0.3}),
}
KIND = {"pairs": "combination", "singles": "single", "real_singles": "single"}
TASK = {"pairs": "unseen_pairs", "singles": "unseen_singles", "real_singles": "unseen_singles"}
SINGLE_COLUMNS = ("pearson", "r2", "pearson_specific", "pearson_top20", "rank_normalised")
COLUMNS = {"pairs": PAIR_COLUMNS, "singles": SINGLE_COLUMNS, "real_singles": SINGLE_COLUMNS}
REAL_SCREEN = ROOT.parent / "shared" / "data" / "screens" / "mcfaline23_glioma_crispri.h5ad"
REAL_BATCH_KEY = "cell_type"


def config_for(model: str, scenario: str, folder: Path, seed: int | None = None) -> Path:
    """The scenario's config (``configs/<model>_synthetic.yaml``, or ``_custom`` for the real
    screen) with its split, written into ``folder``."""
    real = SCENARIOS[scenario][0] == "real"
    raw = load_yaml(ROOT / "configs" / f"{model}_{'custom' if real else 'synthetic'}.yaml")
    raw["preprocess"].setdefault("split", {}).update(SCENARIOS[scenario][1])
    if real:
        # one thread per job: two jobs of torch's default threads oversubscribe two cores
        raw["training"]["cpu_threads"] = raw["evaluation"]["cpu_threads"] = 1
        if seed is not None:
            raw["preprocess"]["seed"] = seed  # a user's screen: the seed draws the split
    path = folder / f"{model}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def prepare(scenario: str, seed: int, folder: Path) -> dict:
    """Simulate (or read) and preprocess one scenario's screen; its paths and sizes (reused when present)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = config_for("gpo_vae", scenario, folder, seed)
    if SCENARIOS[scenario][0] == "real":
        return prepare_file(REAL_SCREEN, folder, config, REAL_BATCH_KEY)
    return prepare_synthetic(SCENARIOS[scenario][0], seed, folder, config)


def train_and_evaluate(job: dict) -> dict:
    """One model family on one prepared screen: the per-method means of its unseen table."""
    from gpo_vae.evaluation.run import evaluate_run
    from gpo_vae.run_config import load_run_config
    from gpo_vae.training.train import train_model

    folder = Path(job["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    config = load_run_config(config_for(job["model"], job["scenario"], folder, job["seed"]))
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
        own = method == "model" or method.startswith("model_")  # model_own_node, model_neighbours
        if not own and not job["baselines"]:
            continue
        name = method.replace("model", job["model"], 1) if own else method
        row = {**base, "method": name, **values.to_dict(), "n": int(counts[method])}
        if method == "model":
            row.update(
                train_s=float(run["training_seconds"]), evaluate_s=evaluate_s, epochs=int(run["epochs"])
            )
        rows.append(row)
    scaled = scaled_rows(
        out, TASK[job["scenario"]], job["model"], job["baselines"], {**base, "table": "scaled"}
    )
    return {
        "rows": rows + scaled,
        "peak_rss_gb": peak_rss_gb(),
    }


def summary_table(rows: pd.DataFrame, scenario: str, methods: list[str]) -> pd.DataFrame:
    """mean ± sd over seeds of the per-seed means, one row per method (models first)."""
    frame = rows[(rows["scenario"] == scenario) & rows.get("table", pd.Series(index=rows.index)).isna()]
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


def main() -> None:
    parser = seed_parser(__doc__.splitlines()[0], "scenarios", ",".join(SCENARIOS), ",".join(MODELS))
    args, scenarios, seeds, models = parse_seed_args(parser, "scenarios", list(SCENARIOS))
    if "real_singles" in scenarios and not REAL_SCREEN.is_file():
        print(
            f"scenario real_singles skipped: {REAL_SCREEN} absent (the real screen lives in ../shared/data/screens)"
        )
        scenarios = [scenario for scenario in scenarios if scenario != "real_singles"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        jobs = seed_jobs(
            scenarios,
            seeds,
            models,
            root,
            "scenario",
            prepare,
            lambda p: (
                f"{p['cells']:,} cells x {p['genes']:,} genes, held out {', '.join(p['heldout'])}; "
                f"prepared in {p['prepare_s']:.0f} s"
            ),
        )

        def line_of(job: dict, result: dict) -> str:
            mine = result["rows"][0]
            key = "interaction_pearson" if job["scenario"] == "pairs" else "pearson_specific"
            return f"{key} {mine.get(key, float('nan')):.3f}, train {mine['train_s']:.0f} s"

        rows, failed, peak = run_jobs(
            jobs,
            train_and_evaluate,
            args.workers,
            lambda j: f"{j['scenario']} seed {j['seed']} {j['model']}",
            line_of,
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
    methods = [*models, *(f"{m}_{v}" for v in ("neighbours", "regulators", "own_node") for m in models)]
    if "table" in frame.columns:
        print_scaled(frame[frame["table"] == "scaled"], "scenario", models, "scaled scores", args.markdown)
    for scenario in scenarios:
        table = summary_table(frame, scenario, methods)
        print(f"\n{scenario}:")
        print(table.to_string(index=False))
        if args.markdown:
            print()
            print(markdown(table))


if __name__ == "__main__":
    main()
