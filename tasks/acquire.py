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


@task(version="2", cache=True)
def simulate_dataset(out_dir: str, preset: str = "default", seed: int = 0) -> DatasetSpec:
    """Simulate the synthetic screen into ``out_dir`` (atomically) and describe its files.

    A folder that already holds this screen (same config and simulator version) is reused, so
    its files keep their bytes and everything downstream its cache, even without redun's database.
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
    }


@task(version="1", cache=True)
def fetch_published_dataset(
    name: str, data_dir: str | None = None, cache_dir: str | None = None
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
    }


@task(version="1", cache=True)
def prepare_local_dataset(
    counts: File,
    out_dir: str,
    perturbation_key: str,
    control_label: str,
    summary_stats: File | None = None,
    summary_sheet: str | None = None,
) -> DatasetSpec:
    """Validate a user's counts file; compute summary statistics from its cells when none are given."""
    from gpo_vae.data.contract import read_counts_h5ad
    from gpo_vae.data.summary_stats import compute_summary_stats, write_summary_stats_xlsx

    adata = read_counts_h5ad(counts.path, perturbation_key, control_label)
    if summary_stats is None:
        stats = compute_summary_stats(adata)
        summary_sheet = "computed_summary_stat"
        path = write_summary_stats_xlsx(stats, Path(out_dir) / "summary_stats.xlsx", summary_sheet)
        summary_stats = File(str(path))
    return {
        "name": Path(counts.path).stem,
        "counts": counts,
        "summary_stats": summary_stats,
        "summary_sheet": summary_sheet,
        "network": None,
        "perturbation_key": perturbation_key,
        "control_label": control_label,
    }


@task(version="1", cache=True)
def summarise_dataset(dataset: DatasetSpec, out_path: str) -> File:
    """Write cells, genes, perturbations and controls of the dataset (with provenance) as JSON."""
    from gpo_vae.data.acquire import describe_counts
    from gpo_vae.io import provenance, sha256_of, write_json_atomic

    counts: File = dataset["counts"]
    summary = describe_counts(counts.path, dataset["perturbation_key"], dataset["control_label"])
    files = {k: (v.path if isinstance(v, File) else v) for k, v in dataset.items()}
    payload = {
        "dataset": files,
        "summary": summary,
        "counts_sha256": sha256_of(Path(counts.path)),
        **provenance(),
    }
    return File(str(write_json_atomic(payload, out_path)))
