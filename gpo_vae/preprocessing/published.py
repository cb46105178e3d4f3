"""Screens the GPO-VAE authors already processed: recognise them and keep what they ship.

The authors publish ``{rpe1,k562,adamson}_qc_deg_matched_ctrl_idx_all_ot.h5ad``: raw counts
(dense) that their data modules already QC-annotated (rapids-singlecell metrics and scrublet
calls in ``obs``), filtered (strong perturbations, on-target cells, more than 100 cells),
DE-annotated (``var["FC3"]``; ``var["FC2"]`` for Adamson), split (``obs["split"]``) and paired
(``obs["matched_ctrl_idx_<seed>_ot"]``, the control each cell was matched to). Their code sees
``qc`` in the file name and skips its preprocessing: it trains on every cell and perturbation of
the file, with the file's DE genes as GRN nodes, the split drawn with seed 0 and the stored
pairing. Filtering such a file again (MAD thresholds on an already-filtered population, a cell
count near the 101-cell edge) would train on other cells than the paper did.

``preprocess.mode`` decides: ``published`` keeps the file's cells, perturbations, DE genes,
split and pairing (and its doublet calls, from which our QC flags are set); ``ours`` runs every
step of our own pipeline on it as on a raw file; ``auto`` (the default) is ``published`` when
:func:`shipped_processing` recognises the file and ``ours`` otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, get_args

import numpy as np
import pandas as pd

from gpo_vae.errors import UserError
from gpo_vae.preprocessing.config import PreprocessMode
from gpo_vae.preprocessing.splits import SPLITS

#: var columns of the authors' DE-gene flags (the extra GRN nodes): FC3 (RPE1, K562), FC2 (Adamson).
DEG_FLAG_COLUMNS = ("FC3", "FC2")
#: obs columns their QC annotation leaves (scrublet's call, their per-cell metrics and verdict).
DOUBLET_COLUMN = "predicted_doublet"
QC_ANNOTATION_COLUMNS = (DOUBLET_COLUMN, "total_qc", "UMI_count", "ngenes")
SPLIT_COLUMN = "split"
#: The pairing column their OT matching writes for a seed (``get_pair_mode: ot``).
PAIR_COLUMN = "matched_ctrl_idx_{seed}_ot"

MODES = get_args(PreprocessMode)


class ShippedProcessingError(UserError, ValueError):
    """``preprocess.mode: published`` on a file that holds no processing to keep."""


@dataclass(frozen=True)
class ShippedProcessing:
    """What an already-processed file holds (a column name, or None where it has none)."""

    deg_column: str
    doublet_column: str | None
    split_column: str | None
    pair_column: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """The file's processing in a phrase naming its columns."""
        parts = [f"var[{self.deg_column!r}] DE genes"]
        parts.append(f"obs[{self.doublet_column!r}] doublets" if self.doublet_column else "its QC annotation")
        if self.split_column:
            parts.append(f"obs[{self.split_column!r}]")
        if self.pair_column:
            parts.append(f"obs[{self.pair_column!r}] pairing")
        return ", ".join(parts)


def _flag_column(values: pd.Series) -> bool:
    """Whether a column holds booleans (True/False, 0/1, or their text)."""
    found = set(pd.Series(values).dropna().astype(str).str.lower().unique())
    return bool(found) and found <= {"true", "false", "0", "1", "0.0", "1.0"}


def as_flags(values: pd.Series) -> np.ndarray:
    """A boolean array from a column of True/False, 0/1 or their text (missing = False)."""
    text = pd.Series(values).astype(str).str.lower()
    return text.isin(("true", "1", "1.0")).to_numpy(dtype=bool)


def shipped_processing(obs: pd.DataFrame, var: pd.DataFrame, seed: int = 0) -> ShippedProcessing | None:
    """What processing the file ships, or None for a raw file.

    A file counts as processed when ``var`` holds a DE-gene flag column (:data:`DEG_FLAG_COLUMNS`)
    and ``obs`` a QC annotation (:data:`QC_ANNOTATION_COLUMNS`); the split and pairing columns
    are taken when present (the pairing of ``seed``, as the reference data module reads it).
    """
    deg = next((c for c in DEG_FLAG_COLUMNS if c in var.columns and _flag_column(var[c])), None)
    if deg is None or not any(column in obs.columns for column in QC_ANNOTATION_COLUMNS):
        return None
    doublet = DOUBLET_COLUMN if DOUBLET_COLUMN in obs.columns and _flag_column(obs[DOUBLET_COLUMN]) else None
    split = None
    if SPLIT_COLUMN in obs.columns and set(obs[SPLIT_COLUMN].astype(str).unique()) <= set(SPLITS):
        split = SPLIT_COLUMN
    pair = PAIR_COLUMN.format(seed=seed)
    return ShippedProcessing(
        deg_column=deg,
        doublet_column=doublet,
        split_column=split,
        pair_column=pair if pair in obs.columns else None,
    )


def resolve_mode(
    requested: str, shipped: ShippedProcessing | None, source: str | None = None
) -> tuple[str, str]:
    """``(mode, why)``: ``published`` or ``ours`` for ``preprocess.mode`` ``requested``."""
    if requested not in MODES:
        raise ValueError(f"preprocess.mode must be one of {', '.join(MODES)}, got {requested!r}")
    if requested == "ours":
        return "ours", "every step of our pipeline, as on a raw file (preprocess.mode: ours)"
    if shipped is None:
        if requested == "published":
            where = f"{source}: " if source else ""
            raise ShippedProcessingError(
                f"{where}preprocess.mode is published, but the file holds no processing to keep: it needs "
                f"a DE-gene flag column in var ({' or '.join(DEG_FLAG_COLUMNS)}) and a QC annotation in obs "
                f"({', '.join(QC_ANNOTATION_COLUMNS)}), as the GPO-VAE authors' files have. Run our own "
                "preprocessing on it instead: --preprocess-mode ours (preprocess.mode: ours)."
            )
        return (
            "ours",
            "a raw file, not one the GPO-VAE authors processed (no DE-gene flags and QC annotation)",
        )
    return "published", (
        f"a file the GPO-VAE authors processed ({shipped.describe()}); every cell and perturbation is "
        "kept as shipped (--preprocess-mode ours runs our own preprocessing instead)"
    )


def shipped_split(obs: pd.DataFrame, shipped: ShippedProcessing) -> np.ndarray | None:
    """The file's split per cell (``train``/``val``/``test``), or None when it has none."""
    if shipped.split_column is None:
        return None
    return obs[shipped.split_column].astype(str).to_numpy()


def shipped_partners(
    obs: pd.DataFrame,
    shipped: ShippedProcessing,
    labels: np.ndarray,
    split: np.ndarray,
    control_label: str,
    batches: np.ndarray | None = None,
) -> tuple[np.ndarray | None, str]:
    """Each cell's partner row from the file's pairing column, and what was decided.

    A perturbed cell's partner is the control the file names; a control is its own partner (our
    convention: its ΔX is 0; the reference paired controls with controls, which its GRN loss
    never reads since a control's dosage row is zero). Returns ``(None, why)`` when the column is
    absent or does not fit this split: a name that is no cell of the file, a partner that is no
    control, or one in another split or batch.
    """
    if shipped.pair_column is None:
        return None, "the file has no pairing column"
    column = shipped.pair_column
    names = pd.Index(obs.index.astype(str))
    position = pd.Series(np.arange(len(names)), index=names)
    if not names.is_unique:
        return None, f"obs[{column!r}] names cells, but the cell names are not unique"
    perturbed = np.flatnonzero(np.asarray(labels).astype(str) != control_label)
    wanted = obs[column].astype(str).to_numpy()[perturbed]
    rows = position.reindex(wanted).to_numpy()
    missing = np.isnan(rows)
    if missing.any():
        return None, (
            f"obs[{column!r}] names {int(missing.sum())} partners that are no cell of the file "
            f"(e.g. {wanted[missing][0]!r})"
        )
    rows = rows.astype(np.int64)
    is_control = np.asarray(labels).astype(str) == control_label
    problems = []
    if not is_control[rows].all():
        problems.append(f"{int((~is_control[rows]).sum())} partners are not control cells")
    if (split[rows] != split[perturbed]).any():
        problems.append(f"{int((split[rows] != split[perturbed]).sum())} partners lie in another split")
    if batches is not None and (batches[rows] != batches[perturbed]).any():
        problems.append(f"{int((batches[rows] != batches[perturbed]).sum())} partners lie in another batch")
    if problems:
        return None, f"obs[{column!r}] does not fit this split: " + "; ".join(problems)
    partner = np.arange(len(names), dtype=np.int64)
    partner[perturbed] = rows
    return partner, f"as shipped in obs[{column!r}]"
