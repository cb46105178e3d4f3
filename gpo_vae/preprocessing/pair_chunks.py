"""OT pairing split into chunks of perturbations, each a unit of work a scheduler can spread.

:func:`~gpo_vae.preprocessing.pairing.pair_cells_ot` matches every (split, batch, perturbation)
group against the controls of its split and batch alone, in the cells' order, so pairing a chunk
of perturbations with every control gives those cells the partners the whole run gives (test).
The plan computes the pairing features once (the screen's filters, splits and features, as
:func:`~gpo_vae.preprocessing.from_file.build_artifact` computes them) and saves them beside the
chunks' specs. A chunk is named by a fingerprint of what its partners depend on: its cells'
names, labels, splits, batches and features, the controls' and the solver's settings; a
scheduler caching on it (the workflow's redun tasks) re-pairs, after the screen changed, only
the chunks whose cells changed. Partners are cell names, so a chunk's cached result stays right
when cells elsewhere in the file come or go.
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
from gpo_vae.data.on_disk import BLOCK_CELLS
from gpo_vae.io import temp_sibling
from gpo_vae.preprocessing.chunk_specs import load_spec, perturbation_chunks, save_spec
from gpo_vae.preprocessing.config import PreprocessConfig
from gpo_vae.preprocessing.pairing import pair_cells_ot

logger = logging.getLogger(__name__)

#: Part of every fingerprint: raise it when a change to the pairing changes its partners.
PAIR_CHUNK_VERSION = 1


@dataclass(frozen=True)
class PairChunk:
    """One chunk of the pairing: its perturbations and where the spec to run it is saved."""

    groups: tuple[str, ...]
    fingerprint: str
    spec: Path


@dataclass(frozen=True)
class PairingPlan:
    """The pairing of a screen as chunks, with the record of its features (``record.json``'s
    ``pairing``, as the unchunked run writes it). No chunks: preprocessing pairs the cells itself
    (partners shipped with a published file)."""

    chunks: tuple[PairChunk, ...]
    record: dict[str, Any]


def _update_with_cells(
    digest: Any, rows: np.ndarray, names: np.ndarray, where: np.ndarray, features: np.ndarray
) -> None:
    digest.update("\0".join(names[rows].tolist()).encode() + b"\1")
    digest.update("\0".join(where[rows].tolist()).encode() + b"\1")
    digest.update(np.ascontiguousarray(features[rows]).tobytes())


def plan_pair_chunks(
    features: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    split: Sequence[str] | np.ndarray,
    batches: Sequence[str] | np.ndarray | None,
    names: Sequence[str] | pd.Index,
    settings: dict[str, Any],
    perturbations_per_chunk: int,
    out_dir: str | Path,
    control_label: str = CONTROL_LABEL,
) -> list[PairChunk]:
    """Split the pairing of the cells into chunks of ``perturbations_per_chunk`` perturbations
    (sorted by label); save the features to ``out_dir/features-<digest>.npy`` and each chunk's
    spec to ``out_dir/<fingerprint>.pkl``.

    ``features``, ``labels``, ``split``, ``batches`` and ``names`` are per kept cell, as
    :func:`~gpo_vae.preprocessing.pairing.pair_cells_ot` takes them; ``settings`` its
    ``method``, ``reg``, ``cost_scale``, ``max_controls`` and ``seed``.
    """
    if perturbations_per_chunk < 1:
        raise ValueError(f"perturbations_per_chunk must be ≥ 1, got {perturbations_per_chunk}")
    labels = np.asarray(labels).astype(str)
    names = np.asarray(names).astype(str)
    split = np.asarray(split).astype(str)
    where = (
        split if batches is None else np.char.add(np.char.add(split, "\0"), np.asarray(batches).astype(str))
    )
    features = np.ascontiguousarray(features)  # its own dtype: the solver sees the same values
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stored = hashlib.sha256(features.tobytes()).hexdigest()[:24]
    features_path = out_dir / f"features-{stored}.npy"
    if not features_path.is_file():  # named by content: a plan made again writes the same file
        partial = temp_sibling(features_path, is_dir=False)
        try:
            with partial.open("wb") as handle:
                np.save(handle, features)
            partial.replace(features_path)
        finally:
            partial.unlink(missing_ok=True)

    is_control = labels == control_label
    controls = np.flatnonzero(is_control)
    shared = hashlib.sha256()
    shared.update(
        repr((PAIR_CHUNK_VERSION, control_label, batches is None, sorted(settings.items()))).encode()
    )
    _update_with_cells(shared, controls, names, where, features)
    chunks = []
    fingerprinted = perturbation_chunks(
        labels,
        control_label,
        perturbations_per_chunk,
        shared,
        lambda digest, cells: _update_with_cells(digest, cells, names, where, features),
    )
    for chunk, fingerprint in fingerprinted:
        rows = np.flatnonzero(is_control | labels_in(labels, chunk))
        spec = {
            "features": str(features_path),
            "rows": rows,
            "names": names[rows],
            "labels": labels[rows],
            "split": split[rows],
            "batches": None if batches is None else np.asarray(batches).astype(str)[rows],
            "groups": chunk,
            "control_label": control_label,
            "settings": dict(settings),
        }
        chunks.append(PairChunk(tuple(chunk), fingerprint, save_spec(spec, out_dir, fingerprint)))
    logger.info("OT pairing planned as %d chunks of ≤ %d perturbations", len(chunks), perturbations_per_chunk)
    return chunks


def pair_chunk_partners(spec_path: str | Path) -> dict[str, str]:
    """The partner of every perturbed cell of one chunk: cell name → its control's name."""
    spec = load_spec(spec_path, "pairing")
    if not Path(spec["features"]).is_file():
        raise FileNotFoundError(
            f"{spec['features']}: the pairing features of this chunk are gone; run the same command "
            "again with `redun run --no-cache ...`"
        )
    features = np.load(spec["features"], mmap_mode="r")[spec["rows"]]
    settings = spec["settings"]
    partner = pair_cells_ot(
        features,
        spec["labels"],
        spec["split"],
        spec["control_label"],
        method=settings["method"],
        reg=settings["reg"],
        cost_scale=settings["cost_scale"],
        progress=False,
        max_controls=settings["max_controls"],
        seed=settings["seed"],
        batches=spec["batches"],
    )
    names = spec["names"]
    perturbed = np.flatnonzero(spec["labels"] != spec["control_label"])
    return dict(zip(names[perturbed].tolist(), names[partner[perturbed]].tolist(), strict=True))


def plan_pairing_of_file(
    counts_path: str | Path,
    stats_path: str | Path | None,
    sheet: str | None,
    config: PreprocessConfig,
    perturbations_per_chunk: int,
    out_dir: str | Path,
    layout: ScreenLayout | None = None,
    missing_stats: str | None = None,
    block_cells: int = BLOCK_CELLS,
) -> PairingPlan:
    """The OT pairing of a counts file as chunks of perturbations (:func:`plan_pair_chunks`),
    with the features' record; no chunks when the file ships usable partners (preprocessing then
    takes them)."""
    from gpo_vae.preprocessing.from_file import filtered_file
    from gpo_vae.preprocessing.nodes import single_genes
    from gpo_vae.preprocessing.pairing import pairing_feature_matrix
    from gpo_vae.preprocessing.published import shipped_partners
    from gpo_vae.preprocessing.split_plan import screen_splits
    from gpo_vae.preprocessing.steps import cell_batches

    kept, counts, _, _, _, shipped = filtered_file(
        counts_path, stats_path, sheet, config, layout, False, missing_stats, block_cells
    )
    labels = kept.obs[PERTURBATION_KEY].astype(str).to_numpy()
    batches = cell_batches(kept)
    split = screen_splits(kept, labels, batches, config, shipped)[0]
    shipped_pairs, why = (None, "")
    if shipped is not None:
        shipped_pairs, why = shipped_partners(kept.obs, shipped, labels, split, CONTROL_LABEL, batches)
    if shipped_pairs is not None:
        return PairingPlan((), {})
    pairing = config.pairing
    features, record = pairing_feature_matrix(
        counts,
        kept.var_names,
        single_genes(sorted(set(labels[labels != CONTROL_LABEL]))),
        split == "train",
        features=pairing.features,
        min_measured_targets=pairing.min_measured_targets,
        n_hvgs=pairing.n_hvgs,
        n_pcs=pairing.n_pcs,
        target_sum=config.target_sum,
        seed=config.seed,
    )
    if shipped is not None:
        record["shipped_not_used"] = why
    settings = {
        "method": pairing.method,
        "reg": float(pairing.reg),
        "cost_scale": float(pairing.cost_scale),
        "max_controls": pairing.max_controls,
        "seed": config.seed,
    }
    chunks = plan_pair_chunks(
        features, labels, split, batches, kept.obs_names, settings, perturbations_per_chunk, out_dir
    )
    return PairingPlan(tuple(chunks), record)


__all__ = [
    "PAIR_CHUNK_VERSION",
    "PairChunk",
    "PairingPlan",
    "pair_chunk_partners",
    "plan_pair_chunks",
    "plan_pairing_of_file",
]
