"""Obtain a dataset's files: find them locally, or download and extract the published archives."""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import pandas as pd

from gpo_vae.data.contract import CONTROL_LABEL, PERTURBATION_KEY, DataContractError
from gpo_vae.data.download import DownloadError, default_cache_dir, download_file, extract_tarball
from gpo_vae.data.layout import ScreenLayout
from gpo_vae.data.registry import Archive, DatasetRecord
from gpo_vae.errors import InputFileError
from gpo_vae.io import FileMemo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetFiles:
    """The files that make up one dataset, as later stages read them."""

    name: str
    counts: Path
    summary_stats: Path | None = None
    summary_sheet: str | None = None
    network: Path | None = None
    #: Why the summary statistics are missing (a failed download's message), or None.
    summary_stats_problem: str | None = None
    perturbation_key: str = PERTURBATION_KEY
    control_label: str = CONTROL_LABEL

    def to_dict(self) -> dict[str, str | None]:
        """JSON-friendly form (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def _find_file(filename: str, roots: list[Path]) -> Path | None:
    for root in roots:
        if not root.is_dir():
            continue
        direct = root / filename
        if direct.is_file():
            return direct
        found = sorted(p for p in root.rglob(filename) if p.is_file() and ".partial" not in str(p))
        if found:
            return found[0]
    return None


def _extracted(cache_dir: Path, archive: Archive) -> Path:
    return cache_dir / "extracted" / archive.filename.removesuffix(".tar.gz")


def _fetch_member(
    filename: str,
    archive: Archive,
    data_dir: Path | None,
    cache_dir: Path,
    mirror: str | None,
    quiet: bool,
    beside: tuple[Path, ...] = (),
) -> Path:
    """Path of ``filename``: found in ``data_dir``, ``beside`` (other folders to look in) or the
    cache, else downloaded and extracted."""
    extracted = _extracted(cache_dir, archive)
    roots = ([data_dir] if data_dir is not None else []) + [*beside, extracted]
    if (found := _find_file(filename, roots)) is not None:
        return found
    local_archive = _find_file(archive.filename, [*roots[:-1], cache_dir / "archives"])
    if local_archive is None:
        local_archive = download_file(
            archive.url(mirror),
            cache_dir / "archives" / archive.filename,
            archive.sha256,
            quiet=quiet,
            searched=data_dir,
        )
    extract_tarball(local_archive, extracted)
    if (found := _find_file(filename, [extracted])) is None:
        raise DownloadError(
            f"{local_archive} was extracted to {extracted} but holds no {filename}. The archive may be "
            f"a different release; put {filename} in a folder and pass it with --data-dir."
        )
    return found


def acquire_published_dataset(
    record: DatasetRecord,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    mirror: str | None = None,
    quiet: bool = False,
) -> DatasetFiles:
    """Locate or download the counts file and summary statistics of a published dataset.

    Search order for each file: ``data_dir`` (recursively), the extracted archives in
    ``cache_dir``, an archive already in ``data_dir`` or the cache, and finally a download
    (Google Drive through gdown, or ``mirror``/``$GPO_VAE_MIRROR`` when set). The summary
    statistics are also looked for beside the counts file and in the counts archive (the
    authors' configs keep them in ``datasets/`` beside the counts). They are optional: the
    authors' processed files need none (:mod:`gpo_vae.preprocessing.published`), so a failed
    download leaves ``summary_stats`` None and says why in ``summary_stats_problem``; our own
    preprocessing stops with that message.
    """
    if record.simulated or record.counts_file is None or record.counts_archive is None:
        raise ValueError(f"dataset {record.name!r} is not a downloadable dataset")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    root = Path(data_dir).expanduser() if data_dir else None
    if root is not None and not root.is_dir():
        problem = "a file, not a folder" if root.exists() else "no such folder"
        raise InputFileError(
            f"--data-dir {data_dir}: {problem}; give the folder that holds the downloaded "
            f"{record.counts_archive.filename} or its extracted files, or leave --data-dir out to download"
        )
    counts = _fetch_member(record.counts_file, record.counts_archive, root, cache, mirror, quiet)
    stats, problem = None, None
    if record.stats_file is not None and record.stats_archive is not None:
        beside = (counts.parent, _extracted(cache, record.counts_archive))
        try:
            stats = _fetch_member(record.stats_file, record.stats_archive, root, cache, mirror, quiet, beside)
        except DownloadError as err:
            problem = str(err)
            logger.warning("no summary statistics for %s: %s", record.name, problem)
    return DatasetFiles(
        name=record.name,
        counts=counts,
        summary_stats=stats,
        summary_sheet=record.stats_sheet,
        perturbation_key=record.perturbation_key,
        control_label=record.control_label,
        summary_stats_problem=problem,
    )


#: :func:`describe_counts` of files unchanged since this process read them, with the file's layers:
#: main's check and the dataset summary (which gets the resolved counts layer) read a screen's
#: labels once per run.
_DESCRIBED = FileMemo(max_files=64)


def describe_counts(path: str | Path, layout: ScreenLayout | None = None) -> dict[str, Any]:
    """Cells, genes, perturbations (canonical labels), combinations, control cells and batches
    of a counts ``.h5ad`` (reads obs and var only; a file unchanged since this process described
    it, :func:`~gpo_vae.io.file_identity`, is not read again)."""
    layout = layout or ScreenLayout()
    # the description does not depend on which element holds the counts, once it exists
    known = _DESCRIBED.recall(
        path,
        lambda: _read_description(Path(path), layout),
        variant=dataclasses.replace(layout, counts_layer="auto"),
    )
    summary, layers = known
    if layout.counts_layer not in ("auto", "X", "raw") and layout.counts_layer not in layers:
        raise DataContractError(
            f"{path}: --counts-layer {layout.counts_layer!r}: no such layer (layers: {layers or 'none'})."
        )
    return copy.deepcopy(summary)


def _read_description(path: Path, layout: ScreenLayout) -> tuple[dict[str, Any], list[str]]:
    from gpo_vae.data.contract import control_cells_by_batch, screen_batches, screen_labels
    from gpo_vae.data.gene_columns import normalise_var_names

    try:
        adata = ad.read_h5ad(path, backed="r")
    except Exception as err:
        raise DataContractError(f"{path}: not a readable .h5ad file ({type(err).__name__}: {err}).") from err
    try:
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise DataContractError(
                f"{path}: the dataset is empty ({adata.n_obs} cells × {adata.n_vars} genes); "
                "give the file that holds the screen's cells."
            )
        var = adata.var.copy()
        light = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names[:0]), var=var)
        normalise_var_names(light)
        labels, _ = screen_labels(adata.obs, light.var, light.var_names, layout, path)
        batches = screen_batches(adata.obs, layout, path)
        layers = list(adata.layers.keys())
        is_control = labels == CONTROL_LABEL
        perturbations = pd.Series(labels[~is_control]).unique()
        summary: dict[str, Any] = {
            "cells": int(adata.n_obs),
            "genes": int(adata.n_vars),
            "perturbations": len(perturbations),
            "combinations": int(sum("+" in str(p) for p in perturbations)),
            "control_cells": int(is_control.sum()),
        }
        if batches is not None:
            summary["batches"] = sorted(set(batches.tolist()))
        summary["control_cells_by_batch"] = control_cells_by_batch(labels, batches)
        return summary, layers
    finally:
        adata.file.close()
