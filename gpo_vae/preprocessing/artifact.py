"""The preprocessed artifact: the one file training and evaluation read (issue: preprocessing §7).

An ``.h5ad`` with

- ``X``: CSR float32 raw UMI counts, cells × all measured genes;
- ``obs``: ``gene`` (perturbation label, ``non-targeting`` for controls), ``split``
  (``train``/``val``/``test``), ``partner`` (int64 row of the OT-matched control of the same
  split; a control is its own partner), ``library_size`` (total counts), ``total_qc`` (int 0/1,
  QC-fail at t = 3), ``qc_fail_t3``/``qc_fail_t4``/``qc_fail_t5`` and the per-metric flags, the
  QC metrics, and ``cf_row`` (row of ``uns["cf_medians"]`` holding the cell's counterfactual
  cfX, −1 when it has none);
- ``obsm``: ``D`` (CSR float32 N × T dosage), ``delta_x`` (float32 N × T, |ΔX| on node genes),
  ``cf_index`` (int64 N × C rows of QC-fail cells of the same perturbation and split, −1 padded);
- ``var``: ``gene_id``, ``FC3`` (bool), ``node_index`` (int, the node a gene is, −1 if none),
  training-cell statistics ``mean_x``, ``std_x``, ``mean_log``, ``std_log`` (of x and log(x+1));
- ``uns``: ``nodes`` (T node names, P perturbed first), ``n_perturbed`` (P), ``qc_thresholds``
  (dict), ``control_label``, ``cf_medians`` (CSR U × G: each distinct counterfactual median
  once, so cfX is never an N × G copy), ``record`` (JSON string: config, QC thresholds, filter
  counts, split sizes, timings, versions).

On disk an artifact is a directory: ``artifact.h5ad``, ``record.json`` and a ``.complete``
marker holding the SHA-256 of the ``.h5ad``, written last; readers refuse a directory without
a matching marker, so a half-written artifact is never taken as complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import numpy as np
import scipy.sparse as sp

from gpo_vae.data.on_disk import CountsOnDisk, stored_values, write_counts, write_dense
from gpo_vae.errors import UserError
from gpo_vae.io import (
    estimated_bytes,
    folder_swapped_in,
    full_disk_as_error,
    remove_stale_temps,
    require_space,
    sha256_of,
)

OBS_COLUMNS = (
    "gene",
    "split",
    "partner",
    "library_size",
    "total_qc",
    "qc_fail_t3",
    "qc_fail_t4",
    "qc_fail_t5",
    "cf_row",
)
OBSM_KEYS = ("D", "delta_x", "cf_index")
VAR_COLUMNS = ("FC3", "node_index", "mean_x", "std_x", "mean_log", "std_log")
UNS_KEYS = ("nodes", "n_perturbed", "qc_thresholds", "control_label", "cf_medians", "record")
ARTIFACT_FILE = "artifact.h5ad"
RECORD_FILE = "record.json"
MARKER_FILE = ".complete"
SPLITS = ("train", "val", "test")


class ArtifactError(UserError, ValueError):
    """A preprocessed artifact is missing a field or is inconsistent; the message names it."""


@dataclass(frozen=True)
class ArtifactOnDisk:
    """The artifact's matrices that grow with the cells, left in its file and read a block of
    rows at a time (:func:`read_artifact_on_disk`).

    Attributes
    ----------
    counts
        ``X``: N × G raw counts.
    delta_x
        ``obsm/delta_x``: N × T |ΔX| (dense in the file; its rows are read as CSR).
    cf_medians
        ``uns/cf_medians``: U × G distinct counterfactual medians.
    """

    counts: CountsOnDisk
    delta_x: CountsOnDisk
    cf_medians: CountsOnDisk


def validate_artifact(
    adata: ad.AnnData,
    source: str | Path | None = None,
    counts: Any = None,
    on_disk: ArtifactOnDisk | None = None,
) -> None:
    """Check the fields and shapes listed in the module docstring; raise :class:`ArtifactError`.

    ``counts``: the counts when ``adata`` holds none (in memory or on disk); ``on_disk``: the
    matrices left in the file, in place of ``adata``'s X, ``obsm['delta_x']`` and
    ``uns['cf_medians']``."""
    where = f"{source}: " if source is not None else ""
    obsm_keys, uns_keys = set(adata.obsm), set(adata.uns)
    if on_disk is not None:
        obsm_keys.add("delta_x")
        uns_keys.add("cf_medians")
    missing = (
        [f"obs[{c!r}]" for c in OBS_COLUMNS if c not in adata.obs.columns]
        + [f"obsm[{k!r}]" for k in OBSM_KEYS if k not in obsm_keys]
        + [f"var[{c!r}]" for c in VAR_COLUMNS if c not in adata.var.columns]
        + [f"uns[{k!r}]" for k in UNS_KEYS if k not in uns_keys]
    )
    if missing:
        raise ArtifactError(
            f"{where}not a gpo-vae preprocessed artifact: missing {', '.join(missing)}. "
            "Rebuild it with the preprocessing stage."
        )
    n_nodes = len(adata.uns["nodes"])
    delta_x = adata.obsm["delta_x"] if on_disk is None else on_disk.delta_x
    if adata.obsm["D"].shape[1] != n_nodes or delta_x.shape[1] != n_nodes:
        raise ArtifactError(f"{where}obsm['D']/obsm['delta_x'] do not have one column per node ({n_nodes}).")
    if on_disk is not None:
        counts = on_disk.counts
        rows = {"X": counts.shape[0], "obsm['delta_x']": delta_x.shape[0]}
        if any(n != adata.n_obs for n in rows.values()):
            raise ArtifactError(
                f"{where}{rows} rows where obs has {adata.n_obs} cells; rebuild the artifact."
            )
        if on_disk.cf_medians.shape[1] != counts.shape[1]:
            raise ArtifactError(
                f"{where}uns['cf_medians'] has {on_disk.cf_medians.shape[1]} genes and X "
                f"{counts.shape[1]}; rebuild the artifact."
            )
    X = adata.X if counts is None else counts
    if not (sp.issparse(X) or isinstance(X, CountsOnDisk)):
        raise ArtifactError(f"{where}X must be sparse counts.")
    splits = set(adata.obs["split"].astype(str).unique())
    if not splits <= set(SPLITS):
        raise ArtifactError(f"{where}unknown split labels {sorted(splits - set(SPLITS))}.")
    partner = np.asarray(adata.obs["partner"])
    if partner.min(initial=0) < 0 or partner.max(initial=0) >= adata.n_obs:
        raise ArtifactError(f"{where}obs['partner'] holds rows outside 0..{adata.n_obs - 1}.")


#: Record fields that differ between two preprocessings of the same cells with the same config:
#: kept in ``record.json`` beside the ``.h5ad`` but not in it, so that the same input always
#: gives the same bytes (and checksum: a rebuilt artifact then keys the same training runs).
VOLATILE_RECORD_KEYS = ("timings", "platform")


def write_artifact(
    adata: ad.AnnData,
    out_dir: str | Path,
    counts: Any = None,
    delta_x: Any = None,
    counts_scratch: Path | None = None,
) -> Path:
    """Write ``adata`` as an artifact directory atomically; return the directory.

    The counts (``adata.X``, or ``counts`` where ``adata`` has no X: a
    :class:`~gpo_vae.data.on_disk.CountsOnDisk` the preprocessing read from) are written a block
    of cells at a time, so the same artifact has the same bytes whichever held them; so are ΔX
    (``adata.obsm['delta_x']``, or ``delta_x`` where the preprocessing wrote it to disk) and the
    counterfactual medians.

    The ``.h5ad`` holds the record without its :data:`VOLATILE_RECORD_KEYS` (``record.json``
    beside it has them), so two builds of the same input are byte-identical. Everything is
    written into a temporary sibling directory, the completeness marker last,
    and the directory is renamed into place; an existing complete artifact is replaced. The
    space it needs is checked first (a full disk is an :class:`~gpo_vae.io.OutputSpaceError`
    naming the folder and the sizes, before HDF5 starts writing), and temporaries that a killed
    run left beside it are removed. ``counts_scratch``: a scratch file that holds only the
    ``counts`` (the preprocessing's copy of the kept cells): it is removed as soon as X is
    written, and the space it frees counts for what is written after X, so the disk holds the
    counts twice, not twice plus ΔX and the medians.
    """
    X = adata.X if adata.X is not None else counts
    if X is None:
        raise ArtifactError("the artifact has no counts: pass them as adata.X or counts=")
    # the three matrices that grow with the cells are written a block at a time, after the rest
    obsm = dict(adata.obsm)
    dx = obsm.pop("delta_x", None) if delta_x is None else delta_x
    shell = ad.AnnData(obs=adata.obs, var=adata.var, obsm=obsm, uns=dict(adata.uns))
    medians = shell.uns.pop("cf_medians", None)
    absent = [
        name for name, value in (("obsm['delta_x']", dx), ("uns['cf_medians']", medians)) if value is None
    ]
    if absent:
        raise ArtifactError(
            f"not a gpo-vae preprocessed artifact: missing {', '.join(absent)}. "
            "Rebuild it with the preprocessing stage."
        )
    validate_artifact(shell, counts=X, on_disk=ArtifactOnDisk(X, dx, medians))
    out_dir = Path(out_dir)
    remove_stale_temps(out_dir.parent)
    after_counts = int(stored_values(medians) * 8 * 1.1) + dx.shape[0] * dx.shape[1] * 4
    freed = counts_scratch.stat().st_size if counts_scratch is not None else 0
    need = estimated_bytes(shell) + int(stored_values(X) * 8 * 1.1) + max(0, after_counts - freed)
    require_space(out_dir.parent, need, "the preprocessed artifact")
    full_record = adata.uns["record"]
    record = json.loads(full_record)
    stable = {key: value for key, value in record.items() if key not in VOLATILE_RECORD_KEYS}
    with folder_swapped_in(out_dir) as tmp:
        shell.uns["record"] = json.dumps(stable, sort_keys=True)
        try:
            with full_disk_as_error(out_dir, (OSError, RuntimeError)):
                shell.write_h5ad(tmp / ARTIFACT_FILE)
                with h5py.File(tmp / ARTIFACT_FILE, "a") as file:
                    write_counts(file, "X", X)
                    if counts_scratch is not None:
                        counts_scratch.unlink(missing_ok=True)
                    write_counts(file, "uns/cf_medians", medians)
                    write_dense(file, "obsm/delta_x", dx)
        finally:
            shell.uns["record"] = full_record
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        (tmp / MARKER_FILE).write_text(sha256_of(tmp / ARTIFACT_FILE) + "\n")
    return out_dir


def artifact_path(out_dir: str | Path, verify: bool = True) -> Path:
    """The ``.h5ad`` of a complete artifact directory (checksum verified when ``verify``)."""
    out_dir = Path(out_dir)
    path, marker = out_dir / ARTIFACT_FILE, out_dir / MARKER_FILE
    if not path.exists() or not marker.exists():
        raise ArtifactError(
            f"{out_dir}: not a complete artifact (missing {ARTIFACT_FILE} or its {MARKER_FILE} marker); "
            "it was probably interrupted while being written. Delete it and rerun the preprocessing stage."
        )
    if verify and marker.read_text().strip() != sha256_of(path):
        raise ArtifactError(
            f"{path}: checksum differs from {marker}; the file changed or is truncated. Rerun preprocessing."
        )
    return path


def read_artifact(path: str | Path, verify: bool = True) -> ad.AnnData:
    """Read and validate a preprocessed artifact (its directory or its ``.h5ad``)."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such artifact; run the preprocessing stage first.")
    path = artifact_path(path if path.is_dir() else path.parent, verify)
    adata = ad.read_h5ad(path)
    validate_artifact(adata, path)
    return adata


def read_artifact_on_disk(path: str | Path, verify: bool = True) -> tuple[ad.AnnData, ArtifactOnDisk]:
    """:func:`read_artifact` with the matrices that grow with the cells left on disk: (the
    artifact without X, ``obsm['delta_x']`` and ``uns['cf_medians']``; those three as
    :class:`ArtifactOnDisk`).

    obs, var, the rest of obsm and uns are read into memory; each matrix left in the file is a
    :class:`~gpo_vae.data.on_disk.CountsOnDisk`, read a block of rows at a time.
    """
    from anndata.io import read_elem

    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such artifact; run the preprocessing stage first.")
    path = artifact_path(path if path.is_dir() else path.parent, verify)
    left = {element: field for field, element in _ON_DISK.items()}
    with h5py.File(path, "r") as file:
        parts = {key: read_elem(file[key]) for key in ("obs", "var") if key in file}
        for key in ("obsm", "uns"):
            if key in file:
                group = file[key]
                parts[key] = {name: read_elem(group[name]) for name in group if f"{key}/{name}" not in left}
        present = [element for element in left if element in file]
    adata = ad.AnnData(**parts)
    if len(present) < len(left):
        # a file without them: the usual message names what is missing
        validate_artifact(adata, path)
    on_disk = ArtifactOnDisk(**{field: CountsOnDisk(path, element) for element, field in left.items()})
    validate_artifact(adata, path, on_disk=on_disk)
    return adata, on_disk


#: The fields of :class:`ArtifactOnDisk` and the elements of the file they read.
_ON_DISK = {"counts": "X", "delta_x": "obsm/delta_x", "cf_medians": "uns/cf_medians"}


def is_artifact(adata: ad.AnnData) -> bool:
    """``adata`` carries an artifact's fields (a preprocessed screen, not raw counts)."""
    return "record" in adata.uns and "nodes" in adata.uns and "D" in adata.obsm


def holds_same_artifact(artifact_dir: str | Path, adata: ad.AnnData) -> bool:
    """A complete artifact of the same preprocessing record as ``adata`` (config, inputs, every
    count and decision, code version; not the timings) is already at ``artifact_dir``: a notebook
    that prepares the screen again trains on, or reuses, the same run."""
    try:
        artifact_path(artifact_dir, verify=True)
        record = json.loads((Path(artifact_dir) / RECORD_FILE).read_text())
    except (UserError, OSError, ValueError):
        return False
    new = json.loads(adata.uns["record"])
    return all(record.get(k) == new.get(k) for k in set(record) | set(new) if k not in VOLATILE_RECORD_KEYS)


def artifact_checksum(artifact_dir: str | Path) -> str:
    """SHA-256 of a complete artifact's ``.h5ad``, as recorded by its completeness marker."""
    artifact_path(artifact_dir, verify=False)  # a clear error for an incomplete artifact
    return (Path(artifact_dir) / MARKER_FILE).read_text().strip()


def dataset_checksum(artifact_dir: str | Path) -> str | None:
    """SHA-256 of the counts file an artifact was built from (from its ``record.json``), or None."""
    record = Path(artifact_dir) / RECORD_FILE
    if not record.exists():
        return None
    return json.loads(record.read_text()).get("input", {}).get("counts_sha256")
