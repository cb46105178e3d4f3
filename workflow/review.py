"""The entry points that look without training: ``inspect`` (a screen, before ``main``) and
``evaluate`` (a finished run, again). ``workflow/__init__.py`` imports them, so redun finds them
as ``redun run workflow.py inspect`` and ``… evaluate``."""

from pathlib import Path
from typing import Any

from redun import File, task

from gpo_vae.config import to_dict
from gpo_vae.errors import DamagedFileError, InputFileError
from gpo_vae.io import read_json
from gpo_vae.presets import find_preset
from gpo_vae.run_config import load_run_config
from tasks.evaluate import evaluate_run_task, summarise_run
from tasks.preprocess import inspect_dataset
from workflow.datasets import (
    CONFIG_DIR,
    Screen,
    check_executors,
    check_results_dir,
    debug_mode,
    entry_run_config,
    network_files,
    read_files,
    require_file,
    shared_options_doc,
)
from workflow.sweep_support import find_artifact, recorded_dataset_files

redun_namespace = "gpo_vae"


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

    check_executors(executor=executor)
    run_dir = Path(run).resolve()
    retrain = f"delete the run directory {run_dir} and train it again with main"
    if not run:
        raise InputFileError("--run: name a finished run directory (<results>/<dataset>/runs/<key>)")
    if not run_dir.is_dir():
        raise InputFileError(
            f"--run {run}: no such folder; name a run directory (<results>/<dataset>/runs/<key>)"
        )
    model_file = run_dir / "model.pt"
    missing = [name for name in ("model.pt", ".complete", "config.json") if not (run_dir / name).is_file()]
    if missing:
        raise InputFileError(
            f"--run {run}: not a finished run directory ({', '.join(missing)} missing); copy the whole "
            f"run folder, or {retrain}"
        )
    recorded = read_json(run_dir / "config.json", retrain)
    if not isinstance(recorded, dict) or "artifact_sha256" not in recorded:
        raise DamagedFileError(f"{run_dir / 'config.json'}: no artifact_sha256 recorded; {retrain}.")
    if run_dir.parent.name != "runs" and not results_dir:
        raise InputFileError(
            f"--run {run}: not inside a <results>/<dataset>/runs/ folder, so there is no results folder "
            "beside it for the evaluation; pass --results-dir (and --artifact, the artifact it was trained on)"
        )
    dataset = run_dir.parent.parent.name if run_dir.parent.name == "runs" else run_dir.name
    if artifact:
        artifact_file = require_file("--artifact", artifact).resolve()
    else:
        artifact_file = find_artifact(run_dir, recorded["artifact_sha256"])
    config_file = Path(config) if config else find_preset("gpo_vae", dataset, CONFIG_DIR)
    if config_file is not None:
        evaluation = to_dict(load_run_config(config_file).evaluation)
    else:
        evaluation = to_dict(EvaluationConfig())
    if results_dir:
        check_results_dir(results_dir)
    else:
        try:
            check_results_dir(str(run_dir.parent.parent))
        except InputFileError as err:
            raise InputFileError(
                f"--run {run}: the evaluation goes beside the run, in {run_dir.parent.parent / 'evaluation'}, and "
                f"{str(err).split(': ', 1)[-1].split(';')[0]}; pass --results-dir to write it elsewhere"
            ) from None
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


@task()
@shared_options_doc
def inspect(
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
    debug: bool = False,
) -> dict[str, Any]:
    """Show what ``main`` would do with a screen, in seconds: nothing is trained or written
    but the dataset's files (the summary statistics computed from the cells, as ``main`` does).

    Prints how the file is read, the modality, the batches, the pairing features, the test
    split's controls and the perturbation table (each perturbation: cells, target measured,
    on-target change, DEGs, kept or the filter that removed it with the value that failed).

    Options (default):
      --dataset (synthetic)        synthetic, rpe1, k562, adamson, or a path to your .h5ad
      --model (gpo_vae_plus)       config family: configs/<model>_<dataset>.yaml (gpo_vae_plus: ours,
                                   the best measured; gpo_vae: the published model; sams_vae)
      --config (none)              a run config YAML instead of the family default
      --results-dir (results)      computed summary statistics go to <results-dir>/<dataset>/data/
      --seed (0)                   seed of the synthetic screen
      --synthetic-preset (default) a simulated screen: default, rpe1, panel, crispra,
                                   combinatorial, nonadditive, batches, counts_layer, guides,
                                   low_cells, glioma, crispra_panel, cascade, feedback
      --split (none)               preprocess.split.mode (none: the config's): random,
                                   heldout_perturbations or heldout_combinations (lists what
                                   would be held out)
      --min-perturbations (none)   preprocess.filters.min_perturbations (none: the config's, 3):
                                   fewer kept perturbations stop the run; 1 proceeds with any
      --preprocess-mode (none)     preprocess.mode (none: the config's, auto): published keeps
                                   the cells, perturbations, DE genes, split and pairing of a
                                   file the GPO-VAE authors processed (auto does so when it
                                   recognises one); ours runs our own preprocessing on any file
      {screen_options}
      --debug (false)              show the task traceback of an input error too
    """
    debug_mode(debug)
    screen = Screen.from_options(
        dataset, results_dir, seed, synthetic_preset, data_dir, cache_dir, perturbation_key, control_label,
        counts_layer, batch_key, guide_pattern, combination_separator, duplicate_genes, summary_stats,
        summary_sheet,
    )  # fmt: skip
    config_file, run_config = entry_run_config(
        dataset, model, config, split, min_perturbations, preprocess_mode
    )
    spec = screen.acquire()
    return {
        "inspect": inspect_dataset(spec, to_dict(run_config.preprocess)),
        "inputs": read_files([config_file]),
    }
