"""The preprocessed artifact: the one file training and evaluation read (issue: preprocessing §7).

An ``.h5ad`` with

- ``X``: CSR float32 raw UMI counts, cells × all measured genes;
- ``obs``: ``gene`` (perturbation label, ``non-targeting`` for controls), ``split``
  (``train``/``val``/``test``), ``partner`` (int64 row of the OT-matched control of the same
  split; a control is its own partner), ``library_size`` (total counts), ``total_qc`` (int 0/1,
  QC-fail at t = 3) and ``qc_fail_t3``/``qc_fail_t4``/``qc_fail_t5``;
- ``obsm``: ``D`` (CSR float32 N × T dosage), ``delta_x`` (float32 N × T, |ΔX| on node genes),
  ``cf_index`` (int64 N × C rows of QC-fail cells of the same perturbation and split, −1 padded);
- ``var``: ``gene_id``, ``FC3`` (bool), ``node_index`` (int, the node a gene is, −1 if none),
  training-cell statistics ``mean_x``, ``std_x``, ``mean_log``, ``std_log`` (of x and log(x+1));
- ``uns``: ``nodes`` (T node names, P perturbed first), ``n_perturbed`` (P), ``qc_thresholds``
  (dict), ``control_label``, ``record`` (JSON string: config, filter counts, versions).
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

OBS_COLUMNS = ("gene", "split", "partner", "library_size", "total_qc", "qc_fail_t3", "qc_fail_t4", "qc_fail_t5")
OBSM_KEYS = ("D", "delta_x", "cf_index")
VAR_COLUMNS = ("FC3", "node_index", "mean_x", "std_x", "mean_log", "std_log")
UNS_KEYS = ("nodes", "n_perturbed", "qc_thresholds", "control_label")
SPLITS = ("train", "val", "test")


class ArtifactError(ValueError):
    """A preprocessed artifact is missing a field or is inconsistent; the message names it."""


def validate_artifact(adata: ad.AnnData, source: str | Path | None = None) -> None:
    """Check the fields and shapes listed in the module docstring; raise :class:`ArtifactError`."""
    where = f"{source}: " if source is not None else ""
    missing = (
        [f"obs[{c!r}]" for c in OBS_COLUMNS if c not in adata.obs.columns]
        + [f"obsm[{k!r}]" for k in OBSM_KEYS if k not in adata.obsm]
        + [f"var[{c!r}]" for c in VAR_COLUMNS if c not in adata.var.columns]
        + [f"uns[{k!r}]" for k in UNS_KEYS if k not in adata.uns]
    )
    if missing:
        raise ArtifactError(
            f"{where}not a gpo-vae preprocessed artifact: missing {', '.join(missing)}. "
            "Rebuild it with the preprocessing stage."
        )
    n_nodes = len(adata.uns["nodes"])
    if adata.obsm["D"].shape[1] != n_nodes or adata.obsm["delta_x"].shape[1] != n_nodes:
        raise ArtifactError(f"{where}obsm['D']/obsm['delta_x'] do not have one column per node ({n_nodes}).")
    if not sp.issparse(adata.X):
        raise ArtifactError(f"{where}X must be sparse counts.")
    splits = set(adata.obs["split"].astype(str).unique())
    if not splits <= set(SPLITS):
        raise ArtifactError(f"{where}unknown split labels {sorted(splits - set(SPLITS))}.")
    partner = np.asarray(adata.obs["partner"])
    if partner.min(initial=0) < 0 or partner.max(initial=0) >= adata.n_obs:
        raise ArtifactError(f"{where}obs['partner'] holds rows outside 0..{adata.n_obs - 1}.")


def read_artifact(path: str | Path) -> ad.AnnData:
    """Read and validate a preprocessed artifact."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such artifact; run the preprocessing stage first.")
    adata = ad.read_h5ad(path)
    validate_artifact(adata, path)
    return adata
