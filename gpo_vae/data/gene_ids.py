"""Ensembl gene ids as screens store them: which column holds them, and a symbol for every id.

Summary statistics may name perturbations by Ensembl id (Adamson's do), while a screen's genes are
symbols: the measured genes' ids sit in a var column (``gene_id``, 10x's ``gene_ids``, the GPO-VAE
authors' ``ensemble_id`` …), and the ids of targets that are not measured only in obs (Replogle and
Adamson: ``gene_id``, per cell). :func:`gene_id_lookup` joins both.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from gpo_vae.data.layout import CANONICAL_SEPARATOR, CONTROL_LABEL

GENE_ID_KEY = "gene_id"
#: var columns that hold Ensembl ids beside a symbol index (10x ``gene_ids``; the GPO-VAE authors'
#: files rename Replogle's ``gene_id`` to ``ensemble_id``).
GENE_ID_COLUMNS = (GENE_ID_KEY, "gene_ids", "ensembl_id", "ensemble_id", "ensembl_gene_id", "gene_ensembl_id")
#: ``uns`` key of the contract (and the artifact): target label → Ensembl id, from obs.
TARGET_IDS_KEY = "target_gene_ids"
#: obs columns holding the Ensembl id of each cell's target (Replogle and Adamson: ``gene_id``).
TARGET_ID_COLUMNS = (GENE_ID_KEY, "target_gene_id", "ensembl_id", "ensemble_id", "target_id")

#: An Ensembl gene id (human ENSG, other species ENS<species>G) at the start of a name.
ENSEMBL_ID_PATTERN = r"^ENS[A-Z]*G\d{6,}"


def mostly_ensembl_ids(index: pd.Index) -> bool:
    """Whether more than 90 % of the gene names are Ensembl ids."""
    return bool(len(index)) and index.astype(str).str.match(ENSEMBL_ID_PATTERN).mean() > 0.9


def id_column(frame: pd.DataFrame, candidates: tuple[str, ...]) -> str | None:
    """The first of ``candidates`` in ``frame`` whose values are mostly Ensembl ids."""
    return next(
        (c for c in candidates if c in frame.columns and mostly_ensembl_ids(pd.Index(frame[c].astype(str)))),
        None,
    )


def target_gene_ids(obs: pd.DataFrame, labels: np.ndarray) -> dict[str, str]:
    """Ensembl id of each single-gene label's target, from the first obs column of
    :data:`TARGET_ID_COLUMNS` that holds ids for the perturbed cells, where the label has exactly
    one id in it (a target that is not measured has no id in ``var``; summary statistics may name
    it by id, as Adamson's do)."""
    labels = np.asarray(labels).astype(str)
    single = (labels != CONTROL_LABEL) & (np.char.find(labels, CANONICAL_SEPARATOR) < 0)
    perturbed = obs.iloc[np.flatnonzero(single)]
    column = id_column(perturbed, TARGET_ID_COLUMNS)
    if column is None:
        return {}
    pairs = pd.DataFrame({"label": labels[single], "id": perturbed[column].astype(str).to_numpy()})
    pairs = pairs[pairs["id"].str.match(ENSEMBL_ID_PATTERN)].drop_duplicates()
    unique = pairs[~pairs["label"].duplicated(keep=False)]
    return dict(zip(unique["label"], unique["id"], strict=True))


def gene_id_lookup(
    var: pd.DataFrame, var_names: pd.Index, target_ids: Mapping[str, str] | None = None
) -> pd.Series | None:
    """Gene symbol by Ensembl id (unversioned): the measured genes' ``var["gene_id"]``, then the
    targets' ids from obs (:func:`target_gene_ids`); None when neither names an id."""
    parts = []
    if GENE_ID_KEY in var.columns:
        parts.append(
            pd.Series(
                pd.Index(var_names).astype(str).to_numpy(), index=var[GENE_ID_KEY].astype(str).to_numpy()
            )
        )
    if target_ids:
        parts.append(pd.Series(list(target_ids.keys()), index=list(target_ids.values())))
    if not parts:
        return None
    lookup = pd.concat(parts)
    lookup.index = lookup.index.str.replace(r"\.\d+$", "", regex=True)
    return lookup[~lookup.index.duplicated()]
