"""The GRN benchmark: the model's trained graph against the field's GRN methods at matched K, over seeds.

    python benchmarks/grn.py [--screens default,cascade,feedback,panel,glioma,real,norman]
                             [--seeds 1,2,3] [--models gpo_vae_plus,gpo_vae_plus_deconvolved]
                             [--methods grnboost2,gies] [--method-timeout 3600] [--workers 2]
                             [--out DIR] [--markdown]
                             [--rows DIR/grn_rows.csv] [--docs docs/grn.md]

Every screen and seed is prepared as ``benchmarks/science.py`` prepares it (a new simulated screen
per seed; the real screens with the seed drawing their split), every model family trains on it
and is evaluated as ``main`` evaluates it. Then each GRN method runs in a process of its own (its
seconds and that process's peak RSS, imports included, are its cost): the cheap baselines every
evaluation scores (|effect z|, its network deconvolution, the inspre-style sparse inverse,
|corr ΔX|), and the field's methods of ``--methods`` (``benchmarks/grn_methods.py``: GRNBoost2 by
arboreto, GIES by the gies package); ``peak_gb`` is that process's peak RSS (reading the screen
and importing torch included), ``own_gb`` the peak of what the method itself allocated (numpy and
Python, ``tracemalloc``). Every method is scored with the evaluation's own code: cut
to the first model's edge count K (its ``p > threshold`` graph), AUPRC and precision at K and at
K = 1,000 against the simulator's direct edges (the union of TRRUST and DoRothEA on the real
screens: ``real``, 9 CRISPRi knock-downs in glioma lines; ``norman``, 18 CRISPRa activations in
K562), CausalBench's mean Wasserstein distance and false omission rate on held-out cells.

Printed: per screen and method, mean ± sd over seeds, and the rank by AUPRC (by mean Wasserstein
without a reference network); then per screen one verdict: the best model family against the best
baseline, with the paired difference over seeds and whether it exceeds their spread (|mean| > sd).
``--out`` keeps every file and the per-seed rows (``grn_rows.csv``), and a rerun into the same
folder reuses every complete trained run (the evaluation and the methods run again), so
``--methods gies`` adds one method without training again; a method that takes longer than
``--method-timeout`` seconds on a screen is stopped and listed as failed; ``--rows`` prints the tables of
such a file again without running anything; ``--docs`` writes the Markdown table and verdicts into
the page between its ``<!-- grn-benchmark:start -->`` and ``<!-- grn-benchmark:end -->`` lines.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _memory import peak_rss_gb  # noqa: E402
from _pool import markdown, seed_parser, split_list  # noqa: E402
from science import REAL_SCREENS, _config_for, prepare_screen  # noqa: E402

SCREENS = ("default", "cascade", "feedback", "panel", "glioma", "real", "norman")
#: Model families: a shipped config, and the settings that differ from it.
MODEL_VARIANTS = {
    "gpo_vae_plus": ("gpo_vae_plus", {}),
    "gpo_vae_plus_deconvolved": ("gpo_vae_plus", {"effect_statistic": "deconvolved"}),
    "gpo_vae": ("gpo_vae", {}),
}
CHEAP = ("effect_z", "deconvolution", "sparse_inverse", "correlation")
FIELD = ("grnboost2", "gies")
NETWORKS = ROOT.parent / "shared" / "data" / "networks"
KNOWN = ("trrust_human.csv.gz", "dorothea_human_ABCDE.csv.gz")
COLUMNS = ("auprc", "precision_at_k", "precision_at_1000", "mean_wasserstein", "false_omission_rate")


def _peak_gb() -> float:
    return peak_rss_gb()


def train_model_job(job: dict) -> dict:
    """Train one model family on a prepared screen and evaluate it as ``main`` does."""
    from gpo_vae.evaluation.run import evaluate_run
    from gpo_vae.run_config import load_run_config
    from gpo_vae.training.train import train_model

    folder = Path(job["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    base, changes = MODEL_VARIANTS[job["model"]]
    config = load_run_config(_config_for(base, job["screen"], folder, job["seed"]))
    model = config.model.replace(**changes)
    run_dir = train_model(
        job["artifact"], model, config.training.replace(seed=job["seed"]), folder / "run", progress=False
    )
    evaluate_run(
        job["artifact"],
        run_dir,
        config.evaluation,
        folder / "evaluation",
        true_network=job["truth"],
        networks=job["networks"],
        progress=False,
    )
    run = json.loads((run_dir / "run.json").read_text())
    return {
        "run": str(run_dir),
        "seconds": float(run["training_seconds"]),
        "peak_gb": _peak_gb(),
        "own_gb": np.nan,
    }


def _stop_after(seconds: int) -> None:
    """Raise TimeoutError in this (worker) process after ``seconds``: one slow method, not the run."""

    def stop(signum, frame) -> None:
        raise TimeoutError(f"stopped after {seconds} s (--method-timeout)")

    signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)


def method_job(job: dict) -> dict:
    """One GRN method on a prepared screen's training cells, in a process of its own."""
    from gpo_vae.evaluation import grn_benchmark as grn
    from gpo_vae.grn.effects import training_effect_zscores
    from gpo_vae.training.data import ArtifactCells

    cells = ArtifactCells.read(job["artifact"])
    train = cells.rows("train")
    if job.get("timeout"):
        _stop_after(int(job["timeout"]))
    tracemalloc.start()
    start = time.perf_counter()
    method = job["method"]
    if method in CHEAP:
        z = training_effect_zscores(cells)
        scores = grn.baseline_scores(cells.delta_x[train], z, cells.n_perturbed)[method]
    else:
        from grn_methods import gies_scores, grnboost2_scores, node_expression

        expression, measured = node_expression(cells.counts, train, cells.nodes, cells.genes)
        if method == "grnboost2":
            scores = grnboost2_scores(expression, measured, cells.n_nodes, cells.n_perturbed)
        else:
            dose = cells.dosage[train]
            per_cell = np.diff(dose.indptr)
            node = np.full(train.size, -2)
            node[per_cell == 0] = -1
            single = np.flatnonzero(per_cell == 1)
            node[single] = dose.indices[dose.indptr[single]]
            scores = gies_scores(expression, measured, node, cells.n_nodes, cells.n_perturbed)
    seconds = time.perf_counter() - start
    own = tracemalloc.get_traced_memory()[1] / 1024**3
    return {"scores": scores, "seconds": seconds, "peak_gb": _peak_gb(), "own_gb": own}


def _run_isolated(function, jobs: list[dict], workers: int) -> list[dict | Exception]:
    """Each job in a fresh spawned process (its peak RSS is its own), ``workers`` at a time."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=spawn, max_tasks_per_child=1) as pool:
        futures = [pool.submit(function, job) for job in jobs]
        results = []
        for future in futures:
            try:
                results.append(future.result())
            except Exception as err:  # one method's failure must not lose the others' numbers
                results.append(err)
    return results


def score_screen(screen: dict, models: dict[str, dict], methods: dict[str, dict]) -> pd.DataFrame:
    """Every method's matched-K row on one screen and seed, scored by the evaluation's own code."""
    from gpo_vae.evaluation import grn_benchmark as grn
    from gpo_vae.evaluation.config import EvaluationConfig
    from gpo_vae.evaluation.prediction import EvaluationData
    from gpo_vae.grn.baselines import random_scores
    from gpo_vae.grn.effects import training_effect_zscores
    from gpo_vae.grn.ranking import matched_k_ranking
    from gpo_vae.preprocessing.artifact import read_artifact
    from gpo_vae.training.run_dir import load_trained_model

    data = EvaluationData.from_anndata(read_artifact(screen["artifact"]))
    cells = data.cells
    first = next(iter(models))
    evaluation = Path(models[first]["run"]).parent / "evaluation"
    metrics = json.loads((evaluation / "run.json").read_text())["metrics"]
    config = EvaluationConfig(grn_threshold=float(metrics["grn_threshold"]))
    z = training_effect_zscores(cells)
    scores, cost = {}, {}
    for i, (name, result) in enumerate(models.items()):
        model, _ = load_trained_model(result["run"])
        key = grn.MODEL if i == 0 else name
        scores[key] = model.mask_probabilities().double().numpy()
        cost[key] = (result["seconds"], result["peak_gb"], result["own_gb"])
        if i == 0:
            scores[grn.MODEL_INIT] = grn.initial_mask_probabilities(model, z)
            cost[grn.MODEL_INIT] = (np.nan,) * 3
    for name, result in methods.items():
        scores[name] = result["scores"]
        cost[name] = (result["seconds"], result["peak_gb"], result["own_gb"])
    scores["random"] = random_scores(cells.n_nodes, config.seed)
    cost["random"] = (np.nan,) * 3
    references = grn.reference_networks(screen["networks"], cells.nodes, cells.n_perturbed, screen["truth"])
    graphs = grn.method_graphs(scores, config.grn_threshold)
    evaluator = grn.held_out_evaluator(data, config.p_value)
    statistical = grn.statistical_table(evaluator, scores, graphs, cells.nodes, config)
    reference = grn.reference_tables(scores, graphs, references)[0] if references else None
    ranking = matched_k_ranking(statistical, reference, int(graphs[grn.MODEL].sum()))
    ranking["method"] = ranking["method"].replace(
        {grn.MODEL: first, grn.MODEL_INIT: f"{first} (initial mask)"}
    )
    seconds = {(first if m == grn.MODEL else m): c for m, c in cost.items()}
    seconds[f"{first} (initial mask)"] = seconds.pop(grn.MODEL_INIT)
    for i, column in enumerate(("seconds", "peak_gb", "own_gb")):
        ranking[column] = ranking["method"].map(lambda m, i=i: seconds.get(m, (np.nan,) * 3)[i])
    return ranking.assign(screen=screen["screen"], seed=screen["seed"])


def _mean_sd(values: pd.Series, digits: int) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return ""
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {sd:.{digits}f}"


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """mean ± sd over seeds per screen and method, methods in their mean rank."""
    out = []
    for (screen, method), group in rows.groupby(["screen", "method"], sort=False):
        entry = {"screen": screen, "method": method, "seeds": group["seed"].nunique()}
        entry["rank"] = _mean_sd(group["rank"], 1)
        for column in COLUMNS:
            entry[column] = _mean_sd(group[column], 3)
        if "tied_at_k" in group:  # rows of a run before the column existed have none
            entry["tied_at_k"] = _mean_sd(group["tied_at_k"], 0)
        entry["seconds"] = _mean_sd(group["seconds"], 1)
        entry["peak_gb"] = _mean_sd(group["peak_gb"], 2)
        entry["own_gb"] = _mean_sd(group.get("own_gb", pd.Series(dtype=float)), 3)
        entry["_rank"] = pd.to_numeric(group["rank"], errors="coerce").mean()
        out.append(entry)
    table = pd.DataFrame(out)
    order = {s: i for i, s in enumerate(dict.fromkeys(rows["screen"]))}
    table["_screen"] = table["screen"].map(order)
    return table.sort_values(["_screen", "_rank"], kind="stable").drop(columns=["_screen", "_rank"])


def verdicts(rows: pd.DataFrame, models: list[str]) -> list[str]:
    """Per screen: the best model family against the best baseline, paired over seeds."""
    lines = []
    for screen, part in rows.groupby("screen", sort=False):
        by = str(part["ranked_by"].iloc[0])
        wide = part.pivot_table(index="seed", columns="method", values=by)
        families = [m for m in models if m in wide.columns]
        baselines = [m for m in wide.columns if m not in models]
        if not families or not baselines or wide.empty:
            continue
        best_family = wide[families].mean().idxmax()
        best_baseline = wide[baselines].mean().idxmax()
        gap = (wide[best_family] - wide[best_baseline]).dropna()
        if gap.empty:
            continue
        sd = gap.std(ddof=1) if len(gap) > 1 else np.nan
        beyond = np.isfinite(sd) and abs(gap.mean()) > sd
        verb = "ties with" if round(gap.mean(), 3) == 0 else "beats" if gap.mean() > 0 else "loses to"
        spread = "beyond" if beyond else "within"
        lines.append(
            f"{screen}: {best_family} {verb} the best baseline {best_baseline} by {gap.mean():+.3f} {by} "
            f"(sd over {len(gap)} seeds {sd:.3f}: {spread} the spread)"
        )
    return lines


START, END = "<!-- grn-benchmark:start -->", "<!-- grn-benchmark:end -->"


def write_docs_block(page: Path, table: pd.DataFrame, lines: list[str], header: str) -> None:
    """Replace the text between :data:`START` and :data:`END` in ``page`` (atomically)."""
    text = page.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"--docs {page}: no {START} … {END} block to regenerate")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    shown = table.drop(columns=["seeds"]).rename(
        columns={"precision_at_k": "P@K", "precision_at_1000": "P@1000"}
    )
    block = (
        f"{START}\n{header}\n\n{markdown(shown)}\n\n" + "\n".join(f"- {line}" for line in lines) + f"\n{END}"
    )
    tmp = page.with_suffix(page.suffix + ".tmp")
    tmp.write_text(before + block + after)
    tmp.replace(page)


def report(frame: pd.DataFrame, models: list[str], args, header: str) -> None:
    """Print the summary table and verdicts (and write them into ``--docs``)."""
    table = summary_table(frame)
    lines = verdicts(frame, models)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.to_string(index=False))
    print("\n".join(lines))
    if args.markdown:
        print()
        print(markdown(table))
    if args.docs:
        write_docs_block(args.docs, table, lines, header)
        print(f"wrote the table into {args.docs}")


def main() -> None:
    parser = seed_parser(
        __doc__.splitlines()[0], "screens", ",".join(SCREENS), "gpo_vae_plus,gpo_vae_plus_deconvolved"
    )
    parser.add_argument("--methods", default=",".join(FIELD), help=f"field methods, of {list(FIELD)}")
    parser.add_argument(
        "--method-timeout",
        type=int,
        default=3600,
        help="seconds one method may take on one screen before it is stopped and listed as failed",
    )
    parser.add_argument("--rows", type=Path, help="print the tables of an earlier run's grn_rows.csv")
    parser.add_argument("--docs", type=Path, help="write the table into this page's benchmark block")
    args = parser.parse_args()
    if args.rows:
        frame = pd.read_csv(args.rows)
        models = [m for m in split_list(args.models) if m in set(frame["method"])]
        header = f"{frame['seed'].nunique()} seeds {sorted(frame['seed'].unique().tolist())}, rows of {args.rows.name}"
        report(frame, models, args, header)
        return
    screens, seeds, models = split_list(args.screens), split_list(args.seeds, int), split_list(args.models)
    methods = [*CHEAP, *split_list(args.methods)]
    for names, known, what in (
        (screens, SCREENS, "screens"),
        (models, MODEL_VARIANTS, "models"),
        (methods, CHEAP + FIELD, "methods"),
    ):
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"unknown {what} {unknown}; choose from {list(known)}")
    for screen in [s for s in screens if s in REAL_SCREENS and not REAL_SCREENS[s].is_file()]:
        print(
            f"screen {screen} skipped: {REAL_SCREENS[screen]} absent (real screens live in ../shared/data/screens)"
        )
        screens.remove(screen)
    known_networks = [str(NETWORKS / name) for name in KNOWN if (NETWORKS / name).is_file()]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        prepared = []
        for screen in screens:
            for seed in seeds:
                folder = root / f"{screen}_seed{seed}"
                info = prepare_screen(screen, seed, folder)
                networks = known_networks if screen in REAL_SCREENS else []
                prepared.append(
                    {**info, "screen": screen, "seed": seed, "folder": folder, "networks": networks}
                )
                print(
                    f"{screen} seed {seed}: {info['cells']:,} cells, prepared in {info['prepare_s']:.0f} s",
                    flush=True,
                )
        model_jobs = [{**p, "model": m, "folder": str(p["folder"] / m)} for p in prepared for m in models]
        method_jobs = [{**p, "method": m, "timeout": args.method_timeout} for p in prepared for m in methods]
        model_results = _run_isolated(train_model_job, model_jobs, args.workers)
        print(f"models trained and evaluated: {time.perf_counter() - started:.0f} s", flush=True)
        method_results = _run_isolated(method_job, method_jobs, args.workers)
        print(f"methods run: {time.perf_counter() - started:.0f} s", flush=True)
        rows, failed = [], []
        for p in prepared:
            same = (p["screen"], p["seed"])
            found: dict[str, dict] = {}
            for jobs, results, kind in (
                (model_jobs, model_results, "model"),
                (method_jobs, method_results, "method"),
            ):
                for job, result in zip(jobs, results, strict=True):
                    if (job["screen"], job["seed"]) != same:
                        continue
                    if isinstance(result, Exception):
                        failed.append(
                            f"{p['screen']} seed {p['seed']} {job[kind]}: {type(result).__name__}: {result}"
                        )
                    else:
                        found[job[kind]] = result
            trained = {m: found[m] for m in models if m in found}
            if trained:
                rows.append(score_screen(p, trained, {m: found[m] for m in methods if m in found}))
        frame = pd.concat(rows, ignore_index=True)
        if args.out:
            frame.to_csv(args.out / "grn_rows.csv", index=False)
    print(
        f"\n{len(seeds)} seeds {seeds}; {args.workers} jobs at once; total {time.perf_counter() - started:.0f} s"
    )
    for line in failed:
        print(f"FAILED {line}")
    header = f"{len(seeds)} seeds {seeds}, {args.workers} jobs at once on {os.cpu_count()} cores"
    report(frame, models, args, header)


if __name__ == "__main__":
    main()
