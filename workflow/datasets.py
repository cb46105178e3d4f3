"""Datasets for the entry points: configs, layouts, the quick input check, acquisition (no tasks).

Everything here runs in an entry point's body, before any task is scheduled, so a wrong
option, a missing file or a screen whose labels cannot be read stops the run in seconds with
one line naming the fix.
"""

import dataclasses
import os
from pathlib import Path
from typing import Any, get_args, get_type_hints

from redun import File

from gpo_vae.config import ConfigError
from gpo_vae.data.layout import ScreenLayout
from gpo_vae.data.registry import get_dataset_record, is_local_dataset
from gpo_vae.errors import InputFileError
from gpo_vae.preprocessing.config import PreprocessMode, SplitConfig
from gpo_vae.run_config import RunConfig, load_run_config
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
        require_file("--config", config)
        return Path(config)
    if not is_local_dataset(dataset):
        get_dataset_record(dataset)  # an unknown name fails here, listing the choices
    from gpo_vae.presets import CUSTOM_DATASET, preset_path

    return preset_path(model, CUSTOM_DATASET if is_local_dataset(dataset) else dataset, CONFIG_DIR)


def require_file(option: str, value: str | Path) -> Path:
    """``value`` as a Path when it is a file; else an :class:`InputFileError` naming the option
    and why (a folder, a missing file or folder)."""
    from gpo_vae.io import file_problem

    problem = file_problem(value)
    if problem:
        raise InputFileError(f"{option} {value}: {problem}; give the path of a file")
    return Path(value)


def read_files(paths: list[Path | None]) -> list[File]:
    """The existing files among ``paths`` as redun Files (for an entry point's result)."""
    return [File(str(Path(path).resolve())) for path in paths if path is not None and Path(path).is_file()]


def dataset_slug(dataset: str) -> str:
    """Folder name of a dataset's results: its registry name or its file's stem (leading dots
    dropped, so that a file named ``...h5ad`` cannot name ``..``, the folder above)."""
    if not is_local_dataset(dataset):
        return dataset
    return Path(dataset).stem.lstrip(".") or "screen"


def network_files(networks: str | None) -> list[File]:
    """Reference network files from a comma-separated list of paths (none when empty), each read
    once here so that a file in an unknown format fails before preprocessing, not after."""
    paths = [Path(item.strip()) for item in (networks or "").split(",") if item.strip()]
    for path in paths:
        require_file("--networks", path)
    if paths:
        from gpo_vae.data.networks import read_network

        for path in paths:
            read_network(path)
    return [File(str(path.resolve())) for path in paths]


def check_results_dir(results_dir: str) -> None:
    """The results folder takes files: a file in its place or a read-only filesystem fails
    here, naming the option, not halfway through a stage. Nothing is created: a run that stops
    on a later check leaves no empty results folder behind (the stages make it when they write)."""
    import tempfile

    if not str(results_dir).strip():
        raise InputFileError("--results-dir '': give a folder for the results (default: results)")
    path = Path(results_dir)
    if path.is_symlink() and not path.exists():
        raise InputFileError(
            f"--results-dir {results_dir}: a link to {os.readlink(path)}, which does not exist; create "
            "that folder or choose another --results-dir"
        )
    if path.exists() and not path.is_dir():
        raise InputFileError(
            f"--results-dir {results_dir}: a file, not a folder; choose another --results-dir"
        )
    existing = next(folder for folder in (path, *path.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise InputFileError(
            f"--results-dir {results_dir}: {existing} is a file, not a folder; choose another --results-dir"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputFileError(
            f"--results-dir {results_dir}: cannot write there ({err.strerror}); choose another --results-dir"
        ) from None


def check_synthetic_preset(preset: str) -> None:
    """An unknown ``--synthetic-preset`` names the presets (checked whatever the dataset, so a
    typo is not silently ignored on a rerun that switches to the synthetic screen)."""
    from gpo_vae.data.synthetic_config import PRESETS

    if preset not in PRESETS:
        raise ConfigError(
            f"--synthetic-preset {preset!r}: no such preset; choose one of {', '.join(PRESETS)}"
        )


_CHUNKED_WORK = {"--deg-chunk-size": "the DE test", "--pairing-chunk-size": "the OT pairing"}


def check_chunk_size(option: str, size: int) -> None:
    """``--deg-chunk-size`` and ``--pairing-chunk-size`` are 0 (off) or a number of
    perturbations per job."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        work = _CHUNKED_WORK[option]
        raise ConfigError(
            f"{option} {size!r}: give 0 ({work} inside preprocessing) or the number of "
            f"perturbations per job of {work}, e.g. 50"
        )


def check_executors(**options: str | None) -> None:
    """Every executor named on the command line (``executor="batch"``) is one the redun config
    defines: checked before any task, so a typo fails even when every stage is cached."""
    from tasks.scheduler import KNOWN_EXECUTORS

    if not KNOWN_EXECUTORS:  # another scheduler than ours: redun checks when it schedules
        return
    known = sorted(KNOWN_EXECUTORS)
    for option, name in options.items():
        if name is not None and name not in KNOWN_EXECUTORS:
            flag = "--" + option.replace("_", "-")
            raise ConfigError(
                f"{flag} {name!r}: the redun config defines no such executor; it defines "
                f"{', '.join(known)} (its [executors.NAME] sections, redun.ini)"
            )


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


def check_local_screen(dataset: str, layout: ScreenLayout, summary_stats: str | None) -> dict[str, Any]:
    """Read the labels of a user's screen (obs and var only, seconds) before anything runs.

    Raises the contract's error (no such column, no controls with the label's suggestion, a
    missing batch column, a label that names no gene), a :class:`SplitError` for a batch with fewer
    control cells than any run needs, and checks ``--summary-stats`` exists.
    Returns what :func:`gpo_vae.data.acquire.describe_counts` reports.
    """
    from gpo_vae.data.acquire import describe_counts
    from gpo_vae.preprocessing.split_plan import too_few_controls

    path = require_file("--dataset", dataset)
    if summary_stats:
        require_file("--summary-stats", summary_stats)
    summary = describe_counts(path, layout)
    error = too_few_controls(summary["control_cells_by_batch"], layout.batch_key is not None)
    if error is not None:
        raise error
    return summary


SPLIT_MODES = get_args(get_type_hints(SplitConfig)["mode"])
PREPROCESS_MODES = get_args(PreprocessMode)


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices``; else a :class:`ConfigError` naming the option."""
    if value not in choices:
        raise ConfigError(f"{flag} {value!r}: choose one of {', '.join(choices)}")
    return value


def _with_preprocess(run_config: RunConfig, dotted: str, value: Any) -> RunConfig:
    """``run_config`` with ``preprocess.<dotted>`` (``key`` or ``section.key``) set to ``value``."""
    *section, key = dotted.split(".")
    preprocess = run_config.preprocess
    if section:
        inner = dataclasses.replace(getattr(preprocess, section[0]), **{key: value})
        preprocess = dataclasses.replace(preprocess, **{section[0]: inner})
    else:
        preprocess = dataclasses.replace(preprocess, **{key: value})
    return dataclasses.replace(run_config, preprocess=preprocess)


def with_split(run_config: RunConfig, mode: str | None) -> RunConfig:
    """``run_config`` with ``preprocess.split.mode`` set to ``mode`` (None: as configured)."""
    return (
        run_config
        if mode is None
        else _with_preprocess(run_config, "split.mode", _choice("--split", mode, SPLIT_MODES))
    )


def with_preprocess_mode(run_config: RunConfig, mode: str | None) -> RunConfig:
    """``run_config`` with ``preprocess.mode`` set to ``mode`` (None: as configured)."""
    return (
        run_config
        if mode is None
        else _with_preprocess(run_config, "mode", _choice("--preprocess-mode", mode, PREPROCESS_MODES))
    )


def with_min_perturbations(run_config: RunConfig, minimum: int | None) -> RunConfig:
    """``run_config`` with ``preprocess.filters.min_perturbations`` set (None: as configured)."""
    if minimum is None:
        return run_config
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
        raise ConfigError(f"--min-perturbations {minimum!r}: give a whole number of at least 1")
    return _with_preprocess(run_config, "filters.min_perturbations", minimum)


@dataclasses.dataclass(frozen=True)
class Screen:
    """The screen an entry point was asked for, resolved once from its options.

    ``main``, ``sweep`` and ``inspect`` build it first (:meth:`from_options`: the layout and the
    results folder checked before anything runs) and read the dataset through it.
    """

    dataset: str
    results_dir: str
    seed: int
    synthetic_preset: str
    data_dir: str | None
    cache_dir: str | None
    layout: ScreenLayout
    summary_stats: str | None
    summary_sheet: str | None

    @classmethod
    def from_options(
        cls,
        dataset: str,
        results_dir: str,
        seed: int,
        synthetic_preset: str,
        data_dir: str | None,
        cache_dir: str | None,
        perturbation_key: str,
        control_label: str,
        counts_layer: str,
        batch_key: str | None,
        guide_pattern: str,
        combination_separator: str,
        duplicate_genes: str,
        summary_stats: str | None,
        summary_sheet: str | None,
    ) -> "Screen":
        layout = ScreenLayout(  # validated: an impossible value names the option
            perturbation_key=perturbation_key,
            control_label=control_label,
            counts_layer=counts_layer,
            batch_key=batch_key or None,
            guide_pattern=guide_pattern,
            combination_separator=combination_separator,
            duplicate_genes=duplicate_genes,  # type: ignore[arg-type]
        )
        check_synthetic_preset(synthetic_preset)
        check_results_dir(results_dir)
        return cls(
            dataset,
            results_dir,
            seed,
            synthetic_preset,
            data_dir,
            cache_dir,
            layout,
            summary_stats,
            summary_sheet,
        )

    @property
    def out(self) -> Path:
        """``<results-dir>/<dataset>/``: where every stage of this screen writes."""
        return Path(self.results_dir, dataset_slug(self.dataset))

    def acquire(self) -> Any:
        """The dataset's files (a lazy redun value); a screen of the user's own is read first
        (labels, controls, batches: seconds), so a wrong option stops before any stage runs."""
        if is_local_dataset(self.dataset):
            check_local_screen(self.dataset, self.layout, self.summary_stats)
            return prepare_local_dataset(
                File(str(Path(self.dataset).resolve())),
                str(self.out / "data"),
                self.layout.to_dict(),
                File(str(Path(self.summary_stats).resolve())) if self.summary_stats else None,
                self.summary_sheet,
            )
        record = get_dataset_record(self.dataset)
        # a registered dataset names its own column and control label; the other options apply
        options = {
            **self.layout.to_dict(),
            "perturbation_key": record.perturbation_key,
            "control_label": record.control_label,
        }
        if record.simulated:
            out_dir = Path(self.results_dir, "synthetic", f"data-{self.synthetic_preset}-seed{self.seed}")
            return simulate_dataset(str(out_dir), self.synthetic_preset, self.seed, options)
        return fetch_published_dataset(self.dataset, self.data_dir, self.cache_dir, options)


def entry_run_config(
    dataset: str,
    model: str,
    config: str | None,
    split: str | None,
    min_perturbations: int | None,
    preprocess_mode: str | None,
) -> tuple[Path, RunConfig]:
    """The run config file of an entry point (``--config`` or the shipped one) and its validated
    contents with ``--split``, ``--min-perturbations`` and ``--preprocess-mode`` applied."""
    path = config_path(dataset, model, config)
    run_config = with_split(load_run_config(path), split)
    run_config = with_preprocess_mode(with_min_perturbations(run_config, min_perturbations), preprocess_mode)
    return path, run_config


#: The options ``main``, ``sweep`` and ``inspect`` share, as their docstrings list them
#: (:func:`shared_options_doc` puts them where a docstring says ``{screen_options}``).
SCREEN_OPTIONS = """\
      --data-dir (none)            folder holding downloaded archives or their files
      --cache-dir (none)           download cache ($GPO_VAE_CACHE or ~/.cache/gpo_vae)
      --perturbation-key (gene)    obs column naming each cell's perturbation (own .h5ad)
      --control-label (non-targeting)  label of control cells, matched ignoring case (own .h5ad)
      --counts-layer (auto)        where the raw counts are: auto (X if counts, else a counts
                                   layer, else .raw), X, raw, or a layer name
      --batch-key (none)           obs column of the batch / cell line: QC, pairing and ATEs
                                   within batch, the batch a covariate of the model
      --guide-pattern (auto)       regex mapping guide labels to genes (group 'gene'); auto
                                   maps GENE_1, GENE_2 when every label has such a suffix; none
      --combination-separator (+)  separates the genes of a multi-gene label (A+B)
      --duplicate-genes (sum)      a symbol on several columns: sum, first, or error
      --summary-stats (none)       summary statistics file (own .h5ad; else computed from cells)
      --summary-sheet (none)       its sheet, for a workbook with several
"""


def shared_options_doc(func: Any) -> Any:
    """``func`` with :data:`SCREEN_OPTIONS` in its docstring where it says ``{screen_options}``."""
    marker = "      {screen_options}\n"
    if marker not in (func.__doc__ or ""):
        raise ValueError(f"{func.__name__}'s docstring has no {marker.strip()} line")
    func.__doc__ = func.__doc__.replace(marker, SCREEN_OPTIONS)
    return func
