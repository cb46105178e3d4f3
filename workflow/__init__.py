"""The gpo-vae workflow: ``redun run workflow.py main --dataset NAME``.

redun imports the module named ``workflow``; this package answers that import. Each line of
``main`` is one pipeline stage; the stages live in ``tasks/``.
"""

from pathlib import Path
from typing import Any

from redun import File, task

from gpo_vae.config import ConfigError, to_dict
from gpo_vae.data.registry import get_dataset_record, is_local_dataset
from gpo_vae.run_config import RunConfig, load_run_config
from tasks.acquire import fetch_published_dataset, prepare_local_dataset, simulate_dataset, summarise_dataset
from tasks.evaluate import evaluate_run_task, summarise_run
from tasks.preprocess import preprocess_dataset
from tasks.train import train_run

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

    The result lists the report and its headline table.
    """
    run_config = load_run_config(config_path(dataset, model, config))
    sams_config = None
    if compare_sams_vae:
        if model == "sams_vae":
            raise ConfigError("--compare-sams-vae compares a GPO-VAE run with SAMS-VAE; --model is sams_vae")
        sams_config = load_run_config(config_path(dataset, "sams_vae", None))
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
    artifact = preprocess_dataset(spec, to_dict(run_config.preprocess), str(out / "preprocessed"))
    trained = train_run(artifact, training_sections(run_config), str(out / "runs"))
    sams = train_run(artifact, training_sections(sams_config), str(out / "runs")) if sams_config else None
    report = evaluate_run_task(
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
    }
