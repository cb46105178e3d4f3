"""The doublet calls split into scrublet's own chunks of cells, each a unit of work a scheduler
can spread.

QC runs scrublet on chunks of cells (:func:`~gpo_vae.preprocessing.doublets.detect_doublets_report`:
within each batch, every chunk a stratified slice of every perturbation, chunk ``k`` seeded
``seed + k``), and each chunk's calls depend on its cells alone. The plan deals the cells into
the same chunks and saves each chunk's spec; a job runs scrublet on one chunk and returns the
names of the cells it calls doublets, so the artifact built from the jobs' calls is the one QC
builds itself (test). A chunk is named by a fingerprint of its cells' names and counts, the
genes, its seed and the backend: a scheduler caching on it (the workflow's redun tasks) runs
scrublet again only on chunks whose cells changed. Every perturbation is spread over every
chunk of its batch, so new cells for one perturbation rerun its batch's chunks; a corrected cell
reruns its own chunk.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpo_vae.data.contract import PERTURBATION_KEY
from gpo_vae.data.layout import ScreenLayout
from gpo_vae.data.on_disk import BLOCK_CELLS, CountsOnDisk
from gpo_vae.preprocessing.chunk_specs import counts_spec, load_spec, save_spec
from gpo_vae.preprocessing.config import PreprocessConfig
from gpo_vae.preprocessing.deg_chunks import row_fingerprints
from gpo_vae.preprocessing.doublets import scrublet_chunk, stratified_chunks

logger = logging.getLogger(__name__)

#: Part of every fingerprint: raise it when a change to the doublet calls changes them.
DOUBLET_CHUNK_VERSION = 1
#: The doublet rate scrublet expects (``detect_doublets_report``'s default, as QC calls it).
EXPECTED_DOUBLET_RATE = 0.05


@dataclass(frozen=True)
class DoubletChunk:
    """One scrublet chunk: its batch, its index within the batch, its cells, its spec."""

    batch: str | None
    index: int
    n_cells: int
    fingerprint: str
    spec: Path


def plan_doublet_chunks(
    counts: CountsOnDisk,
    labels: np.ndarray,
    batches: np.ndarray | None,
    names: np.ndarray,
    genes: list[str],
    seed: int,
    max_cells_per_chunk: int,
    backend: str,
    out_dir: str | Path,
) -> list[DoubletChunk]:
    """Deal the kept cells into QC's scrublet chunks (per batch, ``ceil(cells / max_cells_per_chunk)``
    stratified chunks seeded as QC seeds them) and save each chunk's spec to
    ``out_dir/<fingerprint>.pkl``. One pass over the counts computes the fingerprints."""
    labels = np.asarray(labels).astype(str)
    names = np.asarray(names).astype(str)
    hashes = row_fingerprints(counts)
    shared = hashlib.sha256()
    shared.update(repr((DOUBLET_CHUNK_VERSION, EXPECTED_DOUBLET_RATE, backend)).encode())
    shared.update("\0".join(genes).encode())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = [(None, np.arange(labels.size))]
    if batches is not None:
        batches = np.asarray(batches).astype(str)
        groups = [(name, np.flatnonzero(batches == name)) for name in sorted(set(batches.tolist()))]
    chunks = []
    for batch, rows in groups:
        n_chunks = max(1, -(-rows.size // max_cells_per_chunk))
        assignment = stratified_chunks(labels[rows], n_chunks, seed)
        for k in range(n_chunks):
            cells = rows[assignment == k]
            digest = shared.copy()
            digest.update(repr((seed + k, batch)).encode())
            digest.update("\0".join(names[cells].tolist()).encode() + b"\1")
            digest.update(hashes[cells].tobytes())
            fingerprint = digest.hexdigest()[:24]
            spec = {
                "counts": counts_spec(counts.subset(cells)),
                "names": names[cells],
                "seed": seed + k,
                "backend": backend,
            }
            chunks.append(
                DoubletChunk(batch, k, int(cells.size), fingerprint, save_spec(spec, out_dir, fingerprint))
            )
    logger.info("doublet calls planned as %d scrublet chunks of ≤ %d cells", len(chunks), max_cells_per_chunk)
    return chunks


def doublet_chunk_calls(spec_path: str | Path) -> dict[str, Any]:
    """Scrublet on one chunk: ``{"doublets": names of the cells called doublets, "cells": how
    many cells, "skipped": why scrublet skipped the chunk, or None}``."""
    spec = load_spec(spec_path, "doublet")
    counts = CountsOnDisk(**spec["counts"])
    predicted, _, reason = scrublet_chunk(
        counts.to_memory(), spec["seed"], EXPECTED_DOUBLET_RATE, spec["backend"]
    )
    if reason is not None:
        logger.warning(
            "scrublet skipped a chunk (%d cells): %s; its cells count as singlets", counts.shape[0], reason
        )
    return {"doublets": spec["names"][predicted].tolist(), "cells": int(counts.shape[0]), "skipped": reason}


def plan_doublets_of_file(
    counts_path: str | Path,
    stats_path: str | Path | None,
    sheet: str | None,
    config: PreprocessConfig,
    out_dir: str | Path,
    layout: ScreenLayout | None = None,
    missing_stats: str | None = None,
    block_cells: int = BLOCK_CELLS,
) -> list[DoubletChunk]:
    """The doublet calls of a counts file as scrublet's chunks (:func:`plan_doublet_chunks`) on
    the cells the filters keep; empty when QC calls no doublets (``qc.doublets: false``) or takes
    them as a published file ships them."""
    from gpo_vae.preprocessing.from_file import filtered_file
    from gpo_vae.preprocessing.steps import cell_batches

    kept, counts, _, _, _, shipped = filtered_file(
        counts_path, stats_path, sheet, config, layout, False, missing_stats, block_cells
    )
    if not config.qc.doublets or (shipped is not None and shipped.doublet_column is not None):
        return []
    return plan_doublet_chunks(
        counts,
        kept.obs[PERTURBATION_KEY].astype(str).to_numpy(),
        cell_batches(kept),
        kept.obs_names.to_numpy(),
        [str(g) for g in kept.var_names],
        config.seed,
        config.qc.max_cells_per_chunk,
        config.qc.backend,
        out_dir,
    )


__all__ = [
    "DOUBLET_CHUNK_VERSION",
    "DoubletChunk",
    "doublet_chunk_calls",
    "plan_doublet_chunks",
    "plan_doublets_of_file",
]
