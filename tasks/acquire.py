"""Stage 1, acquisition: simulate, download or validate a dataset; files travel as redun Files.

The library is imported inside task bodies: redun imports this module on every run (and in
every worker process), and the scientific stack would add seconds to a fully cached rerun.
"""

import dataclasses
from pathlib import Path
from typing import Any

from redun import File, task

redun_namespace = "gpo_vae"

#: What the acquisition tasks return: a plain dict so that it pickles across executors.
DatasetSpec = dict[str, Any]


def _file_or_none(path: Path | str | None) -> File | None:
    return File(str(path)) if path else None


@task(version="3", cache=True)
def simulate_dataset(
    out_dir: str, preset: str = "default", seed: int = 0, layout: dict[str, Any] | None = None
) -> DatasetSpec:
    """Simulate the synthetic screen into ``out_dir`` (atomically) and describe its files.

    A folder that already holds this screen (same config and simulator version) is reused, so
    its files keep their bytes and everything downstream its cache, even without redun's database.
    ``layout`` (a :class:`~gpo_vae.data.layout.ScreenLayout` as a dict) is how later stages read
    the counts file (e.g. ``batch_key`` for the ``batches`` preset).
    """
    from gpo_vae.data.registry import DATASETS
    from gpo_vae.data.synthetic import SyntheticConfig, existing_synthetic_dataset, write_synthetic_dataset
    from gpo_vae.io import exclusive_lock

    config = dataclasses.replace(SyntheticConfig.preset(preset), seed=seed)
    with exclusive_lock(out_dir):
        paths = existing_synthetic_dataset(out_dir, config) or write_synthetic_dataset(
            out_dir, config, overwrite=True
        )
    record = DATASETS["synthetic"]
    return {
        "name": "synthetic",
        "counts": File(str(paths["counts"])),
        "summary_stats": File(str(paths["summary_stats"])),
        "summary_sheet": record.stats_sheet,
        "network": File(str(paths["network"])),
        "perturbation_key": record.perturbation_key,
        "control_label": record.control_label,
        "layout": _layout(layout, record.perturbation_key, record.control_label),
    }


def _layout(options: dict[str, Any] | None, perturbation_key: str, control_label: str) -> dict[str, Any]:
    from gpo_vae.data.layout import ScreenLayout

    merged = {**(options or {}), "perturbation_key": perturbation_key, "control_label": control_label}
    return ScreenLayout.from_dict(merged).to_dict()


@task(version="3", cache=True)
def fetch_published_dataset(
    name: str, data_dir: str | None = None, cache_dir: str | None = None, layout: dict[str, Any] | None = None
) -> DatasetSpec:
    """Find (``data_dir``, cache) or download the published files of dataset ``name``."""
    from gpo_vae.data.acquire import acquire_published_dataset
    from gpo_vae.data.registry import get_dataset_record

    files = acquire_published_dataset(get_dataset_record(name), data_dir=data_dir, cache_dir=cache_dir)
    return {
        "name": files.name,
        "counts": File(str(files.counts)),
        "summary_stats": _file_or_none(files.summary_stats),
        "summary_sheet": files.summary_sheet,
        "network": None,
        "perturbation_key": files.perturbation_key,
        "control_label": files.control_label,
        "layout": _layout(layout, files.perturbation_key, files.control_label),
        "summary_stats_problem": files.summary_stats_problem,
    }


#: The summary statistics computed from a user's cells (csv: byte-reproducible, see write_summary_stats_csv).
COMPUTED_STATS_FILE = "summary_stats.csv"


@task(version="3", cache=True)
def prepare_local_dataset(
    counts: File,
    out_dir: str,
    layout: dict[str, Any],
    summary_stats: File | None = None,
    summary_sheet: str | None = None,
) -> DatasetSpec:
    """Read a user's counts file in its ``layout``; compute summary statistics from its cells when
    none are given (the same file gives the same bytes, so a touched input keeps its artifacts),
    reading the counts a batch of perturbations at a time (the same numbers as in memory)."""
    from gpo_vae.data.contract_on_disk import open_counts_h5ad
    from gpo_vae.data.layout import ScreenLayout
    from gpo_vae.data.on_disk import fits_in_memory
    from gpo_vae.data.summary_stats import compute_summary_stats, write_summary_stats_csv

    screen_layout = ScreenLayout.from_dict(layout)
    adata, on_disk = open_counts_h5ad(counts.path, screen_layout)  # the counts stay on disk
    resolved = dict(adata.uns["layout"])
    if summary_stats is None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        # counts that fit are read whole; larger ones a batch of perturbations at a time (the
        # same numbers), through a grouped copy in out_dir
        cells = on_disk.to_memory() if fits_in_memory(on_disk) else on_disk
        stats = compute_summary_stats(adata, progress=False, counts=cells, scratch_dir=out_dir)
        path = write_summary_stats_csv(stats, Path(out_dir) / COMPUTED_STATS_FILE)
        summary_stats, summary_sheet = File(str(path)), None
    return {
        "name": Path(counts.path).stem,
        "counts": counts,
        "summary_stats": summary_stats,
        "summary_sheet": summary_sheet,
        "network": None,
        "perturbation_key": screen_layout.perturbation_key,
        "control_label": screen_layout.control_label,
        "layout": resolved,
    }


@task(version="2", cache=True)
def summarise_dataset(dataset: DatasetSpec, out_path: str) -> File:
    """Write cells, genes, perturbations and controls of the dataset (with provenance) as JSON."""
    from gpo_vae.data.acquire import describe_counts
    from gpo_vae.data.layout import ScreenLayout
    from gpo_vae.io import provenance, sha256_of, write_json_atomic

    counts: File = dataset["counts"]
    summary = describe_counts(counts.path, ScreenLayout.from_dict(dataset["layout"]))
    files = {k: (v.path if isinstance(v, File) else v) for k, v in dataset.items()}
    payload = {
        "dataset": files,
        "summary": summary,
        "counts_sha256": sha256_of(Path(counts.path)),
        **provenance(),
    }
    return File(str(write_json_atomic(payload, out_path)))
