"""The preprocessing stage on a counts file (design §2–§5): the screen read from disk, filtered,
then preprocessed in memory (:func:`preprocess_files`) or straight into an artifact directory with
memory bounded by a block of cells (:func:`build_artifact`, what ``main`` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad
import h5py

from gpo_vae.data.contract_on_disk import open_counts_h5ad
from gpo_vae.data.layout import ScreenLayout
from gpo_vae.data.on_disk import BLOCK_CELLS
from gpo_vae.io import sha256_of
from gpo_vae.preprocessing.config import PreprocessConfig
from gpo_vae.preprocessing.filter_table import format_table
from gpo_vae.preprocessing.published import ShippedProcessing
from gpo_vae.preprocessing.steps import _timed, filter_screen, preprocess_filtered, read_screen_stats
from gpo_vae.runtime import in_background


def filtered_file(
    counts_path: str | Path,
    stats_path: str | Path | None,
    sheet: str | None,
    config: PreprocessConfig,
    layout: ScreenLayout | None,
    print_table: bool,
    missing_stats: str | None,
    block_cells: int | None = None,
) -> tuple[ad.AnnData, Any, dict[str, Any], dict[str, Any], dict[str, float], ShippedProcessing | None]:
    """The filters on a counts file left on disk: (kept cells without X, their counts on disk,
    filter record, inputs, timings, shipped)."""
    timings: dict[str, float] = {}
    adata, counts = open_counts_h5ad(counts_path, layout or ScreenLayout())
    if block_cells:
        counts = counts.with_fields(block_cells=block_cells)
    # the screen's digest (seconds for a multi-GB file) is read on the other core while the
    # filters read the cells on this one
    counts_digest = in_background(lambda: sha256_of(Path(counts_path)))
    stats = read_screen_stats(stats_path, sheet, adata)
    with _timed(timings, "filters"):
        mask, filter_record, table, shipped = filter_screen(
            adata, stats, config, counts_path, missing_stats, counts=counts
        )
    inputs = {
        "cells": adata.n_obs,
        "genes": adata.n_vars,
        "counts_sha256": counts_digest(),
        "summary_stats_sha256": sha256_of(Path(stats_path)) if stats_path else None,
    }
    if print_table:
        print("\n".join(format_table(table, modality=filter_record["modality"]["resolved"])), flush=True)
    return adata[mask].copy(), counts.subset(mask), filter_record, inputs, timings, shipped


def preprocess_files(
    counts_path: str | Path,
    stats_path: str | Path | None,
    sheet: str | None,
    config: PreprocessConfig,
    layout: ScreenLayout | None = None,
    progress: bool = True,
    print_table: bool = True,
    missing_stats: str | None = None,
) -> ad.AnnData:
    """Read a raw counts file (in ``layout``) and its summary statistics, then preprocess.

    ``missing_stats``: why a published dataset has no summary statistics (:func:`filter_screen`).

    The counts stay on disk (:func:`~gpo_vae.data.contract_on_disk.open_counts_h5ad`) while the filters
    read them a block of cells at a time; then the kept cells are read into memory and the
    artifact is returned in memory. :func:`build_artifact` writes the same artifact with memory
    bounded by a block of cells instead. ``print_table`` prints the perturbation table.
    """
    kept, counts, filter_record, inputs, timings, shipped = filtered_file(
        counts_path, stats_path, sheet, config, layout, print_table, missing_stats
    )
    kept.X = counts.to_memory()
    return preprocess_filtered(kept, filter_record, inputs, config, progress, timings, shipped)


def build_artifact(
    counts_path: str | Path,
    stats_path: str | Path | None,
    sheet: str | None,
    config: PreprocessConfig,
    out_dir: str | Path,
    layout: ScreenLayout | None = None,
    progress: bool = True,
    print_table: bool = True,
    missing_stats: str | None = None,
    block_cells: int = BLOCK_CELLS,
    deg_picks: dict[str, str] | None = None,
    pairing: dict[str, Any] | None = None,
    doublets: list[str] | None = None,
) -> Path:
    """:func:`preprocess_files` written straight to the artifact directory ``out_dir``, reading
    the counts from disk a block of cells at a time in every stage; return ``out_dir``.

    The kept cells' counts are first copied, a block at a time, into a scratch file beside
    ``out_dir`` (contiguous rows, so each later pass reads only them); every stage then reads
    that file, and the artifact's X is copied from it, after which it is removed (ΔX and the
    medians, in a second scratch file, are written to the artifact after it). Peak memory is set
    by the genes, the perturbations and ``block_cells`` (cells read at a time), not by the
    number of cells. The
    artifact has the same bytes as ``write_artifact(preprocess_files(...))``. ``deg_picks``: the
    DE test's picks computed beforehand (:func:`~gpo_vae.preprocessing.deg_chunks.plan_deg_of_file`),
    ``pairing`` the OT partners (:func:`~gpo_vae.preprocessing.pair_chunks.plan_pairing_of_file`),
    ``doublets`` the cells scrublet called doublets
    (:func:`~gpo_vae.preprocessing.doublet_chunks.plan_doublets_of_file`), as
    :func:`preprocess_filtered` takes them.
    """
    from gpo_vae.data.on_disk import CountsOnDisk, stored_values, write_counts
    from gpo_vae.io import full_disk_as_error, remove_stale_temps, require_space, temp_sibling
    from gpo_vae.preprocessing.artifact import write_artifact
    from gpo_vae.preprocessing.derived import DELTA_X_ELEMENT

    kept, counts, filter_record, inputs, timings, shipped = filtered_file(
        counts_path, stats_path, sheet, config, layout, print_table, missing_stats, block_cells
    )
    out_dir = Path(out_dir)
    remove_stale_temps(out_dir.parent)
    # the scratch copy and the artifact (the counts, then about a third of them again in the
    # counterfactual medians, twice: scratch and artifact), before HDF5 meets a full disk
    values = stored_values(counts)
    require_space(out_dir.parent, int(values * 8 * 2 * 1.5) + (1 << 20), "the preprocessed artifact")
    # removed by remove_stale_temps if we are killed; the counts in a file of their own, so that
    # their space is freed once the artifact holds them
    kept_file = temp_sibling(out_dir, is_dir=False)
    scratch = temp_sibling(out_dir, is_dir=False)
    try:
        with _timed(timings, "copy_kept"), full_disk_as_error(out_dir, (OSError, RuntimeError)):
            with h5py.File(kept_file, "w") as file:
                write_counts(file, "X", counts)
            h5py.File(scratch, "w").close()  # ΔX and the medians are appended to it
        kept_counts = CountsOnDisk(kept_file, "X", block_cells=block_cells)
        artifact = preprocess_filtered(
            kept,
            filter_record,
            inputs,
            config,
            progress,
            timings,
            shipped,
            counts=kept_counts,
            scratch=scratch,
            deg_picks=deg_picks,
            pairing=pairing,
            doublets=doublets,
        )
        on_disk_dx = CountsOnDisk(scratch, DELTA_X_ELEMENT, block_cells=block_cells)
        return write_artifact(
            artifact, out_dir, counts=kept_counts, delta_x=on_disk_dx, counts_scratch=kept_file
        )
    finally:
        kept_file.unlink(missing_ok=True)
        scratch.unlink(missing_ok=True)


__all__ = ["build_artifact", "filtered_file", "preprocess_files"]
