"""The gpo-vae workflow: ``redun run workflow.py main --dataset NAME``.

redun imports the module named ``workflow``; this package answers that import. Each line of
``main`` is one pipeline stage; the stages live in ``tasks/``.
"""

from pathlib import Path
from typing import Any

from redun import task

from gpo_vae.config import ConfigError, to_dict
from gpo_vae.run_config import RunConfig
from tasks.acquire import summarise_dataset
from tasks.evaluate import evaluate_run_task, summarise_run
from tasks.preprocess import preprocessed
from tasks.sweep import leaderboard, sweep_wave
from tasks.train import train_run
from workflow.datasets import (
    Screen,
    check_chunk_size,
    check_devices,
    check_executors,
    config_path,
    dataset_slug,
    debug_mode,
    entry_run_config,
    network_files,
    read_files,
    shared_options_doc,
)
from workflow.review import evaluate, inspect
from workflow.sweep_support import (
    SweepPlan,
    chunks,
)

redun_namespace = "gpo_vae"
#: The entry points: ``redun run workflow.py <name>``.
__all__ = ["evaluate", "inspect", "main", "sweep"]


def training_sections(run_config: RunConfig) -> dict[str, Any]:
    """The ``model`` and ``training`` sections that ``train_run`` takes."""
    return {"model": to_dict(run_config.model), "training": to_dict(run_config.training)}


# An entry point returns the files its body read by path (configs, sweep file, run records) as
# Files: redun re-runs the body when one of them changed and serves it from cache otherwise.
@task()
@shared_options_doc
def main(
    dataset: str = "synthetic",
    model: str = "gpo_vae_plus",
    config: str | None = None,
    results_dir: str = "results",
    seed: int = 0,
    synthetic_preset: str = "default",
    split: str | None = None,
    min_perturbations: int | None = None,
    preprocess_mode: str | None = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    perturbation_key: str = "gene",
    control_label: str = "non-targeting",
    counts_layer: str = "auto",
    batch_key: str | None = None,
    guide_pattern: str = "auto",
    combination_separator: str = "+",
    duplicate_genes: str = "sum",
    summary_stats: str | None = None,
    summary_sheet: str | None = None,
    networks: str | None = None,
    compare_sams_vae: bool = False,
    executor: str = "default",
    train_executor: str | None = None,
    deg_chunk_size: int = 0,
    pairing_chunk_size: int = 0,
    doublet_chunks: bool = False,
    debug: bool = False,
) -> dict[str, Any]:
    """Run the pipeline: acquire → preprocess → train → evaluate (+ GRN benchmark) → report.

    Options (default):
      --dataset (synthetic)        synthetic, rpe1, k562, adamson, or a path to your .h5ad
      --model (gpo_vae_plus)       config family: configs/<model>_<dataset>.yaml (gpo_vae_plus: ours,
                                   the best measured; gpo_vae: the published model; sams_vae)
      --config (none)              a run config YAML instead of the family default
      --results-dir (results)      results go to <results-dir>/<dataset>/
      --seed (0)                   seed of the synthetic screen (training seeds are in the config)
      --synthetic-preset (default) a simulated screen: default, rpe1, panel, crispra,
                                   combinatorial, nonadditive, batches, counts_layer, guides,
                                   low_cells, glioma, crispra_panel, cascade, feedback
      --split (none)               preprocess.split.mode (none: the config's): random,
                                   heldout_perturbations (genes never seen in training) or
                                   heldout_combinations (A+B pairs never seen, their singles seen)
      --min-perturbations (none)   preprocess.filters.min_perturbations (none: the config's, 3):
                                   fewer kept perturbations stop the run; 1 proceeds with any
      --preprocess-mode (none)     preprocess.mode (none: the config's, auto): published keeps
                                   the cells, perturbations, DE genes, split and pairing of a
                                   file the GPO-VAE authors processed (auto does so when it
                                   recognises one); ours runs our own preprocessing on any file
      {screen_options}
      --networks (none)            comma-separated reference network files for the GRN benchmark
      --compare-sams-vae (false)   also train configs/sams_vae_<dataset>.yaml and compare it
      --executor (default)         redun executor of the heavy stages (preprocess, train,
                                   evaluate): default (threads), process, or one of redun.ini
      --train-executor (none)      executor of training only (none: --executor), e.g. a GPU one
      --deg-chunk-size (0)         0: the DE test runs inside preprocessing; N: as redun jobs of N
                                   perturbations each on --executor (the same artifact; a rerun
                                   tests again only the chunks whose cells changed)
      --pairing-chunk-size (0)     0: the OT pairing runs inside preprocessing; N: as redun jobs of
                                   N perturbations each on --executor (the same artifact; a rerun
                                   pairs again only the chunks whose cells changed)
      --doublet-chunks (false)     true: scrublet's chunks of cells (qc.max_cells_per_chunk) run
                                   as redun jobs on --executor, one per chunk (the same artifact;
                                   a rerun calls again only chunks whose cells changed)
      --debug (false)              show the task traceback of an input error too

    The run ends with the headline table and its verdict, the report's path and the next commands.
    """
    debug_mode(debug)
    screen = Screen.from_options(
        dataset, results_dir, seed, synthetic_preset, data_dir, cache_dir, perturbation_key, control_label,
        counts_layer, batch_key, guide_pattern, combination_separator, duplicate_genes, summary_stats,
        summary_sheet,
    )  # fmt: skip
    check_executors(executor=executor, train_executor=train_executor)
    check_chunk_size("--deg-chunk-size", deg_chunk_size)
    check_chunk_size("--pairing-chunk-size", pairing_chunk_size)
    config_file, run_config = entry_run_config(
        dataset, model, config, split, min_perturbations, preprocess_mode
    )
    config_files = [config_file]
    check_devices(run_config, config_file)
    sams_config = None
    if compare_sams_vae:
        if model == "sams_vae":
            raise ConfigError("--compare-sams-vae compares a GPO-VAE run with SAMS-VAE; --model is sams_vae")
        sams_file, sams_config = entry_run_config(dataset, "sams_vae", None, split, None, preprocess_mode)
        config_files.append(sams_file)
    references = network_files(networks)
    spec = screen.acquire()
    out = screen.out
    summary = summarise_dataset(spec, str(out / "dataset_summary.json"))
    preprocess = to_dict(run_config.preprocess)
    artifact = preprocessed(
        spec,
        preprocess,
        str(out / "preprocessed"),
        deg_chunk_size,
        executor,
        pairing_chunk_size,
        doublet_chunks,
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
        references,
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
@shared_options_doc
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
    counts_layer: str = "auto",
    batch_key: str | None = None,
    guide_pattern: str = "auto",
    combination_separator: str = "+",
    duplicate_genes: str = "sum",
    summary_stats: str | None = None,
    summary_sheet: str | None = None,
    networks: str | None = None,
    executor: str = "default",
    train_executor: str | None = None,
    max_concurrent: int | None = None,
    deg_chunk_size: int = 0,
    pairing_chunk_size: int = 0,
    doublet_chunks: bool = False,
    wandb_project: str | None = None,
    debug: bool = False,
) -> dict[str, Any]:
    """Run a sweep: every point trained and evaluated, then a leaderboard ranked by its metric.

    Options (default):
      --dataset (synthetic)        synthetic, rpe1, k562, adamson, or a path to your .h5ad
      --sweep (configs/sweeps/grn_loss.yaml)  the sweep file (configs/sweeps/*.yaml)
      --model (gpo_vae)            config family of the base config (gpo_vae, gpo_vae_plus, sams_vae)
      --config (none)              a base run config YAML instead of the family default
      --results-dir (results)      leaderboard in <results-dir>/<dataset>/sweeps/<name>/
      --seed (0)                   seed of the synthetic screen
      --synthetic-preset (default) a simulated screen: default, rpe1, panel, crispra,
                                   combinatorial, nonadditive, batches, counts_layer, guides,
                                   low_cells, glioma, crispra_panel, cascade, feedback
      {screen_options}
      --networks (none)            comma-separated reference network files for the GRN benchmark
      --executor (default)         redun executor of preprocess, train and evaluate calls
      --train-executor (none)      executor of training only (none: --executor), e.g. a GPU one
      --max-concurrent (none)      points trained at once (none: the sweep file's max_concurrent);
                                   the points run in waves of this size, a wave after the last
      --deg-chunk-size (0)         0: the DE test runs inside preprocessing; N: as redun jobs of N
                                   perturbations each on --executor (as main's option)
      --pairing-chunk-size (0)     0: the OT pairing runs inside preprocessing; N: as redun jobs
                                   of N perturbations each on --executor (as main's option)
      --doublet-chunks (false)     true: scrublet's chunks of cells as redun jobs on --executor
                                   (as main's option)
      --wandb-project (none)       also log points and leaderboard to this wandb project (none:
                                   the sweep file's wandb_project; needs the wandb extra;
                                   $WANDB_MODE, default offline); the sweep never needs wandb
      --debug (false)              show the task traceback of an input error too

    Points share one preprocessed artifact per distinct ``preprocess`` section. Runs and
    evaluations are content-addressed and cached, so extending a sweep trains only new points.
    """
    debug_mode(debug)
    screen = Screen.from_options(
        dataset, results_dir, seed, synthetic_preset, data_dir, cache_dir, perturbation_key, control_label,
        counts_layer, batch_key, guide_pattern, combination_separator, duplicate_genes, summary_stats,
        summary_sheet,
    )  # fmt: skip
    check_executors(executor=executor, train_executor=train_executor)
    check_chunk_size("--deg-chunk-size", deg_chunk_size)
    check_chunk_size("--pairing-chunk-size", pairing_chunk_size)
    plan = SweepPlan.from_options(sweep, config_path(dataset, model, config), max_concurrent, wandb_project)
    references = network_files(networks)
    data = screen.acquire()
    out = screen.out
    summary = summarise_dataset(data, str(out / "dataset_summary.json"))
    sections, groups = plan.preprocess_sections()  # one preprocessing per distinct section
    artifacts = [
        preprocessed(
            data,
            section,
            str(out / "preprocessed"),
            deg_chunk_size,
            executor,
            pairing_chunk_size,
            doublet_chunks,
        )
        for section in sections
    ]
    evaluation_inputs = {
        "summary_stats": data["summary_stats"],
        "summary_sheet": data["summary_sheet"],
        "networks": references,
        "true_network": data["network"],
        "dataset": dataset_slug(dataset),
    }
    results: list[Any] = []
    previous: Any = None
    for wave in chunks(list(range(len(plan.points))), plan.width):
        previous = sweep_wave(
            [artifacts[groups[i]] for i in wave],
            [training_sections(plan.run_configs[i]) for i in wave],
            [to_dict(plan.run_configs[i].evaluation) for i in wave],
            str(out / "runs"),
            str(out / "evaluation"),
            evaluation_inputs,
            executor,
            previous,
            train_executor,
        )
        results.append(previous)
    board = leaderboard(
        plan.info(),
        plan.described_points(),
        flatten(results),
        str(out / "sweeps" / plan.spec.name),
        plan.project,
    )
    return {
        "points": len(plan.points),
        "waves": len(results),
        "summary": summary,
        "leaderboard": board,
        "inputs": read_files([Path(sweep), plan.base]),
    }


@task()
def flatten(waves: list[list[Any]]) -> list[Any]:
    """The points' results of every wave, in sweep order."""
    return [item for wave in waves for item in wave]
