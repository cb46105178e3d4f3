"""Datasets for the entry points: configs, layouts, the quick input check, acquisition (no tasks).

Everything here runs in an entry point's body, before any task is scheduled, so a wrong
option, a missing file or a screen whose labels cannot be read stops the run in seconds with
one line naming the fix.
"""

import dataclasses
import os
from pathlib import Path
from typing import Any

from redun import File

from gpo_vae.config import ConfigError
from gpo_vae.data.layout import ScreenLayout
from gpo_vae.data.registry import get_dataset_record, is_local_dataset
from gpo_vae.errors import InputFileError
from gpo_vae.run_config import RunConfig
from tasks.acquire import fetch_published_dataset, prepare_local_dataset, simulate_dataset

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def debug_mode(debug: bool) -> None:
    """``--debug true``: a failing run shows the task traceback of an input error too."""
    from tasks.scheduler import DEBUG_ENV

    if debug:
        os.environ[DEBUG_ENV] = "1"


def config_path(dataset: str, model: str, config: str | None) -> Path:
    """The run config: ``config`` when given, else ``configs/<model>_<dataset>.yaml``."""
    if config:
        if not Path(config).is_file():
            raise InputFileError(f"--config {config}: no such file")
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


def read_files(paths: list[Path | None]) -> list[File]:
    """The existing files among ``paths`` as redun Files (for an entry point's result)."""
    return [File(str(Path(path).resolve())) for path in paths if path is not None and Path(path).is_file()]


def dataset_slug(dataset: str) -> str:
    """Folder name of a dataset's results: its registry name or its file's stem."""
    return Path(dataset).stem if is_local_dataset(dataset) else dataset


def network_files(networks: str | None) -> list[File]:
    """Reference network files from a comma-separated list of paths (none when empty), each read
    once here so that a file in an unknown format fails before preprocessing, not after."""
    paths = [Path(item.strip()) for item in (networks or "").split(",") if item.strip()]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise InputFileError(f"--networks: no such file {', '.join(missing)}")
    if paths:
        from gpo_vae.data.networks import read_network

        for path in paths:
            read_network(path)
    return [File(str(path.resolve())) for path in paths]


def check_results_dir(results_dir: str) -> None:
    """The results folder exists (or can be made) and takes files: a file in its place or a
    read-only filesystem fails here, naming the option, not halfway through a stage."""
    import tempfile

    path = Path(results_dir)
    if path.exists() and not path.is_dir():
        raise InputFileError(
            f"--results-dir {results_dir}: a file, not a folder; choose another --results-dir"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputFileError(
            f"--results-dir {results_dir}: cannot write there ({err.strerror}); choose another --results-dir"
        ) from None


def check_devices(run_config: RunConfig, path: Path) -> None:
    """A config that asks for CUDA on a machine without it fails now, not after preprocessing."""
    asked = [name for name in ("training", "evaluation") if getattr(run_config, name).device == "cuda"]
    if not asked:
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"{path}: {' and '.join(f'{name}.device' for name in asked)} is 'cuda' but torch sees no CUDA "
            "device here; set it to auto (CUDA when available) or cpu"
        )


def screen_layout(
    perturbation_key: str,
    control_label: str,
    counts_layer: str,
    batch_key: str | None,
    guide_pattern: str,
    combination_separator: str,
    duplicate_genes: str,
) -> ScreenLayout:
    """The layout options of an entry point, validated (an impossible value names the option)."""
    return ScreenLayout(
        perturbation_key=perturbation_key,
        control_label=control_label,
        counts_layer=counts_layer,
        batch_key=batch_key or None,
        guide_pattern=guide_pattern,
        combination_separator=combination_separator,
        duplicate_genes=duplicate_genes,  # type: ignore[arg-type]
    )


def check_local_screen(dataset: str, layout: ScreenLayout, summary_stats: str | None) -> dict[str, Any]:
    """Read the labels of a user's screen (obs and var only, seconds) before anything runs.

    Raises the contract's error (no such column, no controls with the label's suggestion, a
    missing batch column, a label that names no gene) and checks ``--summary-stats`` exists.
    Returns what :func:`gpo_vae.data.acquire.describe_counts` reports.
    """
    from gpo_vae.data.acquire import describe_counts

    path = Path(dataset)
    if not path.is_file():
        raise InputFileError(f"--dataset {dataset}: no such file")
    if summary_stats and not Path(summary_stats).is_file():
        raise InputFileError(f"--summary-stats {summary_stats}: no such file")
    return describe_counts(path, layout)


def acquire(
    dataset: str,
    results_dir: str,
    seed: int,
    synthetic_preset: str,
    data_dir: str | None,
    cache_dir: str | None,
    layout: ScreenLayout,
    summary_stats: str | None,
    summary_sheet: str | None,
) -> Any:
    """The acquisition stage for any kind of dataset (a lazy redun expression)."""
    if is_local_dataset(dataset):
        return prepare_local_dataset(
            File(str(Path(dataset).resolve())),
            str(Path(results_dir, dataset_slug(dataset), "data")),
            layout.to_dict(),
            File(str(Path(summary_stats).resolve())) if summary_stats else None,
            summary_sheet,
        )
    record = get_dataset_record(dataset)
    # a registered dataset names its own column and control label; the other options apply
    options = {
        **layout.to_dict(),
        "perturbation_key": record.perturbation_key,
        "control_label": record.control_label,
    }
    if record.simulated:
        out_dir = Path(results_dir, "synthetic", f"data-{synthetic_preset}-seed{seed}")
        return simulate_dataset(str(out_dir), synthetic_preset, seed, options)
    return fetch_published_dataset(dataset, data_dir, cache_dir, options)


SPLIT_MODES = ("random", "heldout_perturbations", "heldout_combinations")


def with_split(run_config: RunConfig, mode: str | None) -> RunConfig:
    """``run_config`` with ``preprocess.split.mode`` set to ``mode`` (None: as configured)."""
    if mode is None:
        return run_config
    if mode not in SPLIT_MODES:
        raise ConfigError(f"--split {mode!r}: choose one of {', '.join(SPLIT_MODES)}")
    split = dataclasses.replace(run_config.preprocess.split, mode=mode)
    return dataclasses.replace(run_config, preprocess=dataclasses.replace(run_config.preprocess, split=split))


def with_min_perturbations(run_config: RunConfig, minimum: int | None) -> RunConfig:
    """``run_config`` with ``preprocess.filters.min_perturbations`` set (None: as configured)."""
    if minimum is None:
        return run_config
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
        raise ConfigError(f"--min-perturbations {minimum!r}: give a whole number of at least 1")
    filters = dataclasses.replace(run_config.preprocess.filters, min_perturbations=minimum)
    return dataclasses.replace(
        run_config, preprocess=dataclasses.replace(run_config.preprocess, filters=filters)
    )
