"""The gpo-vae workflow: ``redun run workflow.py main --dataset NAME``.

redun imports the module named ``workflow``; this package answers that import. Each line of
``main`` is one pipeline stage; the stages live in ``tasks/``.
"""

import json
from pathlib import Path
from typing import Any

from redun import File, task

from gpo_vae.config import ConfigError, to_dict
from gpo_vae.data.registry import get_dataset_record, is_local_dataset
from gpo_vae.run_config import RunConfig, load_run_config
from gpo_vae.sweeps import SweepSpec, expand_sweep, load_sweep, point_id, point_label
from gpo_vae.wandb_logging import require_wandb
from tasks.acquire import fetch_published_dataset, prepare_local_dataset, simulate_dataset, summarise_dataset
from tasks.evaluate import evaluate_run_task, summarise_run
from tasks.preprocess import preprocess_dataset
from tasks.sweep import leaderboard, sweep_wave
from tasks.train import train_run
from workflow.sweep_support import (
    chunks,
    find_artifact,
    preprocess_groups,
    recorded_dataset_files,
    sweep_point_configs,
)

redun_namespace = "gpo_vae"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def config_path(dataset: str, model: str, config: str | None) -> Path:
    """The run config: ``config`` when given, else ``configs/<model>_<dataset>.yaml``."""
    if config:
        return Path(config)
    if not is_local_dataset(dataset):
        get_dataset_record(dataset)  # an unknown name fails here, listing the choices
    name = "custom" if is_local_dataset(dataset) else dataset
    path = CONFIG_DIR / f"{model}_{name}.yaml"
    if not path.exists():
        choices = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(
            f"no config {path.name} for --model {model!r}; configs/ holds {choices}, or pass --config"
        )
    return path


def training_sections(run_config: RunConfig) -> dict[str, Any]:
    """The ``model`` and ``training`` sections that ``train_run`` takes."""
    return {"model": to_dict(run_config.model), "training": to_dict(run_config.training)}


def read_files(paths: list[Path | None]) -> list[File]:
    """The existing files among ``paths`` as redun Files (for an entry point's result)."""
    return [File(str(Path(path).resolve())) for path in paths if path is not None and Path(path).is_file()]


def dataset_slug(dataset: str) -> str:
    """Folder name of a dataset's results: its registry name or its file's stem."""
    return Path(dataset).stem if is_local_dataset(dataset) else dataset


def network_files(networks: str | None) -> list[File]:
    """Reference network files from a comma-separated list of paths (none when empty)."""
    paths = [Path(item.strip()) for item in (networks or "").split(",") if item.strip()]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"--networks: no such file {', '.join(missing)}")
    return [File(str(path.resolve())) for path in paths]


def acquire(
    dataset: str,
    results_dir: str,
    seed: int,
    synthetic_preset: str,
    data_dir: str | None,
    cache_dir: str | None,
    perturbation_key: str,
    control_label: str,
    summary_stats: str | None,
    summary_sheet: str | None,
) -> Any:
    """The acquisition stage for any kind of dataset (a lazy redun expression)."""
    if is_local_dataset(dataset):
        return prepare_local_dataset(
            File(str(Path(dataset).resolve())),
            str(Path(results_dir, dataset_slug(dataset), "data")),
            perturbation_key,
            control_label,
            File(str(Path(summary_stats).resolve())) if summary_stats else None,
            summary_sheet,
        )
    record = get_dataset_record(dataset)
    if record.simulated:
        out_dir = Path(results_dir, "synthetic", f"data-{synthetic_preset}-seed{seed}")
        return simulate_dataset(str(out_dir), synthetic_preset, seed)
    return fetch_published_dataset(dataset, data_dir, cache_dir)


# An entry point returns the files its body read by path (configs, sweep file, run records) as
# Files: redun re-runs the body when one of them changed and serves it from cache otherwise.
@task()
def main(
    dataset: str = "synthetic",
    model: str = "gpo_vae",
    config: str | None = None,
    results_dir: str = "results",
    seed: int = 0,
    synthetic_preset: str = "default",
    data_dir: str | None = None,
    cache_dir: str | None = None,
    perturbation_key: str = "gene",
    control_label: str = "non-targeting",
    summary_stats: str | None = None,
    summary_sheet: str | None = None,
    networks: str | None = None,
    compare_sams_vae: bool = False,
    executor: str = "default",
    train_executor: str | None = None,
) -> dict[str, Any]:
    """Run the pipeline: acquire → preprocess → train → evaluate (+ GRN benchmark) → report.

    Options (default):
      --dataset (synthetic)        synthetic, rpe1, k562, adamson, or a path to your .h5ad
      --model (gpo_vae)            config family: configs/<model>_<dataset>.yaml (gpo_vae, sams_vae)
      --config (none)              a run config YAML instead of the family default
      --results-dir (results)      results go to <results-dir>/<dataset>/
      --seed (0)                   seed of the synthetic screen (training seeds are in the config)
      --synthetic-preset (default) default (laptop size) or rpe1 (RPE1 size)
      --data-dir (none)            folder holding downloaded archives or their files
      --cache-dir (none)           download cache ($GPO_VAE_CACHE or ~/.cache/gpo_vae)
      --perturbation-key (gene)    obs column naming each cell's perturbed gene (own .h5ad)
      --control-label (non-targeting)  label of control cells (own .h5ad)
      --summary-stats (none)       summary statistics file (own .h5ad; else computed from cells)
      --summary-sheet (none)       its sheet, for a workbook with several
      --networks (none)            comma-separated reference network files for the GRN benchmark
      --compare-sams-vae (false)   also train configs/sams_vae_<dataset>.yaml and compare it
      --executor (default)         redun executor of the heavy stages (preprocess, train,
                                   evaluate): default (threads), process, or one of redun.ini
      --train-executor (none)      executor of training only (none: --executor), e.g. a GPU one

    The result lists the report and its headline table.
    """
    config_files = [config_path(dataset, model, config)]
    run_config = load_run_config(config_files[0])
    sams_config = None
    if compare_sams_vae:
        if model == "sams_vae":
            raise ConfigError("--compare-sams-vae compares a GPO-VAE run with SAMS-VAE; --model is sams_vae")
        config_files.append(config_path(dataset, "sams_vae", None))
        sams_config = load_run_config(config_files[1])
    spec = acquire(
        dataset,
        results_dir,
        seed,
        synthetic_preset,
        data_dir,
        cache_dir,
        perturbation_key,
        control_label,
        summary_stats,
        summary_sheet,
    )
    out = Path(results_dir, dataset_slug(dataset))
    summary = summarise_dataset(spec, str(out / "dataset_summary.json"))
    artifact = preprocess_dataset.options(executor=executor)(
        spec, to_dict(run_config.preprocess), str(out / "preprocessed")
    )
    train = train_run.options(executor=train_executor or executor)
    trained = train(artifact, training_sections(run_config), str(out / "runs"))
    sams = train(artifact, training_sections(sams_config), str(out / "runs")) if sams_config else None
    report = evaluate_run_task.options(executor=executor)(
        artifact,
        trained,
        to_dict(run_config.evaluation),
        str(out / "evaluation"),
        spec["summary_stats"],
        spec["summary_sheet"],
        network_files(networks),
        spec["network"],
        sams,
        dataset_slug(dataset),
    )
    return {
        "summary": summary,
        "artifact": artifact,
        "model": trained,
        "report": report,
        "headline": summarise_run(report),
        "inputs": read_files(config_files),
    }


# An entry point returns the files its body read by path (configs, sweep file, run records) as
# Files: redun re-runs the body when one of them changed and serves it from cache otherwise.
@task()
def sweep(
    dataset: str = "synthetic",
    sweep: str = "configs/sweeps/grn_loss.yaml",
    model: str = "gpo_vae",
    config: str | None = None,
    results_dir: str = "results",
    seed: int = 0,
    synthetic_preset: str = "default",
    data_dir: str | None = None,
    cache_dir: str | None = None,
    perturbation_key: str = "gene",
    control_label: str = "non-targeting",
    summary_stats: str | None = None,
    summary_sheet: str | None = None,
    networks: str | None = None,
    executor: str = "default",
    train_executor: str | None = None,
    max_concurrent: int | None = None,
    wandb_project: str | None = None,
) -> dict[str, Any]:
    """Run a sweep: every point trained and evaluated, then a leaderboard ranked by its metric.

    Options (default):
      --dataset (synthetic)        synthetic, rpe1, k562, adamson, or a path to your .h5ad
      --sweep (configs/sweeps/grn_loss.yaml)  the sweep file (configs/sweeps/*.yaml)
      --model (gpo_vae)            config family of the base config (gpo_vae, sams_vae)
      --config (none)              a base run config YAML instead of the family default
      --results-dir (results)      leaderboard in <results-dir>/<dataset>/sweeps/<name>/
      --seed (0)                   seed of the synthetic screen
      --synthetic-preset (default) default (laptop size) or rpe1 (RPE1 size)
      --data-dir (none)            folder holding downloaded archives or their files
      --cache-dir (none)           download cache ($GPO_VAE_CACHE or ~/.cache/gpo_vae)
      --perturbation-key (gene)    obs column naming each cell's perturbed gene (own .h5ad)
      --control-label (non-targeting)  label of control cells (own .h5ad)
      --summary-stats (none)       summary statistics file (own .h5ad; else computed from cells)
      --summary-sheet (none)       its sheet, for a workbook with several
      --networks (none)            comma-separated reference network files for the GRN benchmark
      --executor (default)         redun executor of preprocess, train and evaluate calls
      --train-executor (none)      executor of training only (none: --executor), e.g. a GPU one
      --max-concurrent (none)      points trained at once (none: the sweep file's max_concurrent);
                                   the points run in waves of this size, a wave after the last
      --wandb-project (none)       also log points and leaderboard to this wandb project (none:
                                   the sweep file's wandb_project; needs the wandb extra;
                                   $WANDB_MODE, default offline); the sweep never needs wandb

    Points share one preprocessed artifact per distinct ``preprocess`` section. Runs and
    evaluations are content-addressed and cached, so extending a sweep trains only new points.
    """
    spec: SweepSpec = load_sweep(sweep)
    points = expand_sweep(spec)
    base = config_path(dataset, model, config)
    run_configs = sweep_point_configs(base, sweep, points)
    width = max_concurrent or spec.max_concurrent
    project = wandb_project or spec.wandb_project
    if project:
        require_wandb("--wandb-project / the sweep's wandb_project is set")  # before any training
    if width < 1:
        raise ConfigError(f"--max-concurrent must be at least 1, got {width}")
    data = acquire(
        dataset,
        results_dir,
        seed,
        synthetic_preset,
        data_dir,
        cache_dir,
        perturbation_key,
        control_label,
        summary_stats,
        summary_sheet,
    )
    out = Path(results_dir, dataset_slug(dataset))
    summary = summarise_dataset(data, str(out / "dataset_summary.json"))
    groups = preprocess_groups(run_configs)  # one preprocessing per distinct preprocess section
    firsts = [groups.index(group) for group in range(max(groups) + 1)]
    group_artifacts = [
        preprocess_dataset.options(executor=executor)(
            data, to_dict(run_configs[first].preprocess), str(out / "preprocessed")
        )
        for first in firsts
    ]
    point_artifacts = [group_artifacts[group] for group in groups]
    evaluation_inputs = {
        "summary_stats": data["summary_stats"],
        "summary_sheet": data["summary_sheet"],
        "networks": network_files(networks),
        "true_network": data["network"],
        "dataset": dataset_slug(dataset),
    }
    results: list[Any] = []
    previous: Any = None
    for wave in chunks(list(range(len(points))), width):
        previous = sweep_wave(
            [point_artifacts[i] for i in wave],
            [training_sections(run_configs[i]) for i in wave],
            [to_dict(run_configs[i].evaluation) for i in wave],
            str(out / "runs"),
            str(out / "evaluation"),
            evaluation_inputs,
            executor,
            previous,
            train_executor,
        )
        results.append(previous)
    described = [{"id": point_id(p), "label": point_label(p), "parameters": p} for p in points]
    sweep_info = {
        "name": spec.name,
        "metric": spec.metric,
        "goal": spec.goal,
        "description": spec.description,
    }
    board = leaderboard(sweep_info, described, flatten(results), str(out / "sweeps" / spec.name), project)
    return {
        "points": len(points),
        "waves": len(results),
        "summary": summary,
        "leaderboard": board,
        "inputs": read_files([Path(sweep), base]),
    }


@task()
def flatten(waves: list[list[Any]]) -> list[Any]:
    """The points' results of every wave, in sweep order."""
    return [item for wave in waves for item in wave]


# An entry point returns the files its body read by path (configs, sweep file, run records) as
# Files: redun re-runs the body when one of them changed and serves it from cache otherwise.
@task()
def evaluate(
    run: str = "",
    config: str | None = None,
    artifact: str | None = None,
    networks: str | None = None,
    summary_stats: str | None = None,
    summary_sheet: str | None = None,
    true_network: str | None = None,
    results_dir: str | None = None,
    executor: str = "default",
) -> dict[str, Any]:
    """Re-evaluate a finished run (evaluation, GRN benchmark, report) without training.

    Options (default):
      --run ()                     the run directory (<results>/<dataset>/runs/<key>, with model.pt)
      --config (none)              run config whose evaluation section is used (none: the shipped
                                   configs/gpo_vae_<dataset>.yaml when there is one, else defaults)
      --artifact (none)            the artifact .h5ad it was trained on (none: the complete artifact
                                   under <results>/<dataset>/preprocessed/ whose checksum the
                                   run's config.json records)
      --networks (none)            comma-separated reference network files for the GRN benchmark
      --summary-stats (none)       summary statistics file (none: the one that main or sweep
                                   recorded in <results>/<dataset>/dataset_summary.json, if any)
      --summary-sheet (none)       its sheet (none: as recorded there)
      --true-network (none)        true network file (none: as recorded there; synthetic only)
      --results-dir (none)         evaluations go to <results-dir>/<dataset>/evaluation/
                                   (none: next to the run, <results>/<dataset>/evaluation/)
      --executor (default)         redun executor of the evaluation
    """
    from gpo_vae.evaluation.config import EvaluationConfig

    run_dir = Path(run).resolve()
    model_file = run_dir / "model.pt"
    if not run or not model_file.is_file() or not (run_dir / ".complete").exists():
        raise FileNotFoundError(f"--run {run!r}: not a finished run directory (model.pt and .complete)")
    recorded = json.loads((run_dir / "config.json").read_text())
    dataset = run_dir.parent.parent.name
    if artifact:
        artifact_file = Path(artifact).resolve()
    else:
        artifact_file = find_artifact(run_dir, recorded["artifact_sha256"])
    shipped = CONFIG_DIR / f"gpo_vae_{dataset}.yaml"
    config_file = Path(config) if config else shipped if shipped.exists() else None
    if config_file is not None:
        evaluation = to_dict(load_run_config(config_file).evaluation)
    else:
        evaluation = to_dict(EvaluationConfig())
    out = Path(results_dir, dataset) if results_dir else run_dir.parent.parent
    recorded_files = recorded_dataset_files(run_dir.parent.parent)
    if summary_stats is None:
        summary_stats = recorded_files.get("summary_stats")
        summary_sheet = summary_sheet or recorded_files.get("summary_sheet")
    true_network = true_network or recorded_files.get("network")

    def optional(path: str | None) -> File | None:
        return File(str(Path(path).resolve())) if path else None

    report = evaluate_run_task.options(executor=executor)(
        File(str(artifact_file)),
        File(str(model_file)),
        evaluation,
        str(out / "evaluation"),
        optional(summary_stats),
        summary_sheet,
        network_files(networks),
        optional(true_network),
        None,
        dataset,
    )
    inputs = [run_dir / "config.json", run_dir.parent.parent / "dataset_summary.json", config_file]
    return {"report": report, "headline": summarise_run(report), "inputs": read_files(inputs)}
