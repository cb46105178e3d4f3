"""Stage 2, preprocessing: QC, filters, DE nodes, splits, OT pairing, ΔX, cfX → one artifact."""

import hashlib
import json
from pathlib import Path
from typing import Any

from redun import File, task

from tasks.acquire import DatasetSpec

redun_namespace = "gpo_vae"


def artifact_key(dataset: DatasetSpec, config: dict[str, Any]) -> str:
    """Content address of an artifact: the SHA-256 of the input files' contents and the config.

    Contents rather than redun's file hashes (path, size, modification time): a dataset folder
    re-written with the same bytes, e.g. after redun's database was lost, keeps its artifact.
    """
    from gpo_vae.io import sha256_of

    stats = dataset["summary_stats"]
    parts = {
        "counts": sha256_of(Path(dataset["counts"].path)),
        "summary_stats": sha256_of(Path(stats.path)) if stats else None,
        "summary_sheet": dataset["summary_sheet"],
        "layout": dataset["layout"],
        "config": config,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def screen_inputs(dataset: DatasetSpec, config: dict[str, Any]) -> tuple[Any, ...]:
    """(counts path, statistics path or None, sheet, validated preprocess config, layout, why the
    statistics are missing or None) of a dataset."""
    from gpo_vae.config import from_dict
    from gpo_vae.data.layout import ScreenLayout
    from gpo_vae.preprocessing.config import PreprocessConfig

    stats = dataset["summary_stats"]
    return (
        dataset["counts"].path,
        stats.path if stats is not None else None,
        dataset["summary_sheet"],
        from_dict(PreprocessConfig, config, "preprocess"),
        ScreenLayout.from_dict(dataset["layout"]),
        dataset.get("summary_stats_problem"),
    )


@task(version="4", cache=True)
def preprocess_dataset(dataset: DatasetSpec, config: dict[str, Any], out_root: str) -> File:
    """Build (or reuse, when a complete copy exists) the preprocessed artifact of ``dataset``."""
    from gpo_vae.io import exclusive_lock
    from gpo_vae.preprocessing.artifact import ArtifactError, artifact_path
    from gpo_vae.preprocessing.pipeline import build_artifact

    out_dir = Path(out_root) / artifact_key(dataset, config)
    with exclusive_lock(out_dir):  # a concurrent run of the same artifact waits, then reuses it
        try:
            # A complete artifact with the same content address needs no recomputation, even
            # when redun's database is gone.
            return File(str(artifact_path(out_dir)))
        except ArtifactError:
            pass
        counts, stats, sheet, preprocess_config, layout, missing = screen_inputs(dataset, config)
        built = build_artifact(
            counts, stats, sheet, preprocess_config, out_dir, layout, progress=False, missing_stats=missing
        )
        return File(str(artifact_path(built, verify=False)))


@task(version="2", cache=False)
def inspect_dataset(dataset: DatasetSpec, config: dict[str, Any]) -> str:
    """Print what preprocessing would do with ``dataset`` (never cached: it prints); return its
    last line (what ``main`` would train on), so redun's printed result does not repeat it all."""
    from gpo_vae.preprocessing.inspect import inspect_screen

    lines = inspect_screen(*screen_inputs(dataset, config))
    print("\n".join(lines), flush=True)
    return lines[-1]
