"""The DE test split into chunks of perturbations, each a unit of work a scheduler can spread.

The Wilcoxon test of one perturbation against the controls needs only that perturbation's
training cells and the training controls, and Benjamini–Hochberg adjusts each perturbation's
p-values on their own, so the FC3 pick of every perturbation computed chunk by chunk is the one
the whole test gives (test). A chunk is named by a fingerprint of what its picks depend on: the
counts of its cells and of the controls, its labels, the genes and the test's settings. A
scheduler that caches on that fingerprint (the workflow's redun tasks) recomputes, after the
screen changed, only the chunks whose cells changed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpo_vae.data.contract import CONTROL_LABEL, PERTURBATION_KEY
from gpo_vae.data.labels import labels_in
from gpo_vae.data.layout import ScreenLayout
from gpo_vae.data.on_disk import BLOCK_CELLS, CountsOnDisk
from gpo_vae.preprocessing.chunk_specs import counts_spec, load_spec, perturbation_chunks, save_spec
from gpo_vae.preprocessing.config import PreprocessConfig
from gpo_vae.preprocessing.deg import rank_genes_on_disk

logger = logging.getLogger(__name__)

#: Part of every fingerprint: raise it when a change to the test changes its picks.
DEG_CHUNK_VERSION = 1
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def row_fingerprints(counts: CountsOnDisk) -> np.ndarray:
    """A 64-bit content hash of every row's (column, value) pairs, read a block of cells at a time.

    Each stored entry is mixed (splitmix64 of its column and its value's float64 bits) and a
    row's hash is the sum of its entries' (zeros are not stored, so equal rows hash equal however
    they were saved).
    """
    hashes = np.zeros(counts.shape[0], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for start, stop, block in counts.row_blocks():
            block = block.tocsr()
            block.eliminate_zeros()
            values = np.ascontiguousarray(block.data, dtype=np.float64).view(np.uint64)
            mixed = _splitmix(block.indices.astype(np.uint64) * _MIX[0] ^ _splitmix(values))
            per_row = np.zeros(stop - start, dtype=np.uint64)
            filled = np.diff(block.indptr) > 0
            if filled.any():
                per_row[filled] = np.add.reduceat(mixed, block.indptr[:-1][filled])
            hashes[start:stop] = per_row
    return hashes


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = (x + _MIX[0]).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * _MIX[1]
    x = (x ^ (x >> np.uint64(27))) * _MIX[2]
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class DegChunk:
    """One chunk of the DE test: its perturbations and where the spec to run it is saved."""

    groups: tuple[str, ...]
    fingerprint: str
    spec: Path


def plan_deg_chunks(
    counts: CountsOnDisk,
    labels: np.ndarray,
    train: np.ndarray,
    control_label: str,
    genes: Sequence[str] | pd.Index,
    settings: dict[str, Any],
    perturbations_per_chunk: int,
    out_dir: str | Path,
) -> list[DegChunk]:
    """Split the DE test of the training cells into chunks of ``perturbations_per_chunk``
    perturbations (sorted by label) and save each chunk's spec to ``out_dir/<fingerprint>.pkl``.

    ``counts`` are the kept cells' counts (on disk), ``labels`` and ``train`` their labels and
    training mask; ``settings`` are :func:`deg_chunk_picks`' ``target_sum``, ``tie_correct``,
    ``lfc`` and ``pval_adj``. One pass over the training cells computes the fingerprints.
    """
    if perturbations_per_chunk < 1:
        raise ValueError(f"perturbations_per_chunk must be ≥ 1, got {perturbations_per_chunk}")
    train_positions = np.flatnonzero(np.asarray(train, dtype=bool))
    train_labels = np.asarray(labels).astype(str)[train_positions]
    train_counts = counts.subset(train_positions)
    hashes = row_fingerprints(train_counts)
    genes = [str(g) for g in genes]
    shared = hashlib.sha256()
    shared.update(repr((DEG_CHUNK_VERSION, control_label, sorted(settings.items()))).encode())
    shared.update("\0".join(genes).encode())
    shared.update(hashes[train_labels == control_label].tobytes())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunks = []
    fingerprinted = perturbation_chunks(
        train_labels,
        control_label,
        perturbations_per_chunk,
        shared,
        lambda digest, cells: digest.update(hashes[cells].tobytes()),
    )
    for chunk, fingerprint in fingerprinted:
        rows = labels_in(train_labels, [control_label, *chunk])
        cells = train_counts.subset(np.flatnonzero(rows))
        spec = {
            "counts": counts_spec(cells),
            "labels": train_labels[rows],
            "groups": chunk,
            "control_label": control_label,
            "genes": genes,
            "settings": dict(settings),
        }
        chunks.append(DegChunk(tuple(chunk), fingerprint, save_spec(spec, out_dir, fingerprint)))
    logger.info("DE test planned as %d chunks of ≤ %d perturbations", len(chunks), perturbations_per_chunk)
    return chunks


def deg_chunk_picks(spec_path: str | Path) -> dict[str, str]:
    """The FC3 pick of every perturbation of one chunk (those without a pick are absent)."""
    spec = load_spec(spec_path, "DE")
    counts = CountsOnDisk(**spec["counts"])
    settings = spec["settings"]
    scores = rank_genes_on_disk(
        counts,
        spec["labels"],
        spec["control_label"],
        spec["genes"],
        settings["target_sum"],
        tie_correct=settings["tie_correct"],
        table=False,
    )
    picks = scores.fc3_picks(lfc=settings["lfc"], pval_adj=settings["pval_adj"])
    return {str(group): str(gene) for group, gene in picks.items()}


def plan_deg_of_file(
    counts_path: str | Path,
    stats_path: str | Path | None,
    sheet: str | None,
    config: PreprocessConfig,
    perturbations_per_chunk: int,
    out_dir: str | Path,
    layout: ScreenLayout | None = None,
    missing_stats: str | None = None,
    block_cells: int = BLOCK_CELLS,
) -> list[DegChunk]:
    """The DE test of a counts file as chunks of perturbations (:func:`plan_deg_chunks`), their
    specs saved in ``out_dir``.

    The filters and splits are those
    :func:`~gpo_vae.preprocessing.from_file.build_artifact` computes. Empty when the DE genes are
    not tested here: shipped with a published file, or ``deg.restrict_to_hvg`` (its HVGs need
    every training cell at once); ``build_artifact`` then runs its own test.
    """
    from gpo_vae.preprocessing.from_file import filtered_file
    from gpo_vae.preprocessing.split_plan import screen_splits
    from gpo_vae.preprocessing.steps import cell_batches

    kept, counts, _, _, _, shipped = filtered_file(
        counts_path, stats_path, sheet, config, layout, False, missing_stats, block_cells
    )
    if (shipped is not None and shipped.deg_column is not None) or config.deg.restrict_to_hvg:
        return []
    labels = kept.obs[PERTURBATION_KEY].astype(str).to_numpy()
    split = screen_splits(kept, labels, cell_batches(kept), config, shipped)[0]
    settings = {
        "target_sum": float(config.target_sum),
        "tie_correct": bool(config.deg.tie_correct),
        "lfc": float(config.deg.lfc),
        "pval_adj": float(config.deg.pval_adj),
    }
    return plan_deg_chunks(
        counts,
        labels,
        split == "train",
        CONTROL_LABEL,
        kept.var_names,
        settings,
        perturbations_per_chunk,
        out_dir,
    )
