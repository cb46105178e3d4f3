"""Tiny screens laid out as the GPO-VAE authors ship ``rpe1``, ``k562`` and ``adamson``.

What their data modules read from ``./datasets/`` (README of their repository and
``gpo_vae/data/*/data_module.py``): ``<name>_qc_deg_matched_ctrl_idx_all_ot.h5ad`` with dense raw
counts in X; obs holding the cell's target (``gene``; Adamson also ``gene_id``, the target's
Ensembl id), the rapids-singlecell QC metrics and scrublet calls their ``get_qc_annotation``
adds, the flags of their MAD rule (``qc_*``, ``num_qc``, ``total_qc``), ``split`` (two
``train_test_split`` calls, seed 0), ``T`` and the OT pairing ``matched_ctrl_idx_0_ot`` (the obs
name of each cell's control); var indexed by symbols named ``gene_name`` with Ensembl ids in
``ensemble_id`` (their rename of ``gene_id``), the per-gene QC columns, ``highly_variable`` and
the DE-gene flags (``FC3``; ``FC2`` for Adamson). Summary statistics: ``summary_stats.xlsx``
(Replogle's sheets, names ``<i>_<GENE>_P1P2_<ENSG…>``) and ``summary_stats_adamson.csv``
(``genetic perturbation`` holds Ensembl ids). Their archives are ``datasets.tar.gz`` and
``summary_stats.tar.gz``.

The cells come from our simulator (small, so a whole run takes a minute); the layout is theirs.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from sklearn.model_selection import train_test_split

from gpo_vae.data.registry import DATASETS
from gpo_vae.data.summary_stats import compute_summary_stats, write_summary_stats_xlsx
from gpo_vae.data.synthetic import SyntheticConfig, simulate_perturbseq
from gpo_vae.preprocessing.pairing import pair_cells_ot

#: The DE-gene flag column of each dataset's file (Adamson's data module names it FC2).
DEG_COLUMN = {"rpe1": "FC3", "k562": "FC3", "adamson": "FC2"}
CONTROL = "non-targeting"


def _ensembl(index: int) -> str:
    return f"ENSG{index:011d}"


def _mad_flags(values: pd.Series, nmads: float) -> pd.Series:
    """Their MAD rule: below median − t·MAD for t < 0, above median + t·MAD for t > 0."""
    median = values.median()
    threshold = median + nmads * (values - median).abs().median()
    return ((values < threshold) if nmads < 0 else (values > threshold)).astype(int)


def authors_screen(dataset: str, seed: int = 0) -> tuple[ad.AnnData, ad.AnnData]:
    """(the processed file, the raw screen it came from) for ``dataset`` in the authors' layout.

    Perturbations keep between 101 and 160 cells (their files keep those with more than 100);
    one sits at 102, at the edge our own filters judge again.
    """
    config = SyntheticConfig.preset(
        "default",
        seed=seed,
        n_perturbations=9,
        n_genes=400,
        cells_per_perturbation=150.0,
        control_fraction=0.22,
        unmeasured_fraction=0.2,
        weak_fraction=0.2,
    )
    raw = simulate_perturbseq(config).adata
    ids = {gene: _ensembl(i + 1) for i, gene in enumerate(sorted(set(raw.var_names) | set(raw.obs["gene"])))}
    raw.var["gene_id"] = [ids[g] for g in raw.var_names]
    raw.obs["gene_id"] = [CONTROL if g == CONTROL else ids[g] for g in raw.obs["gene"].astype(str)]
    rng = np.random.default_rng(seed)
    keep = []
    labels = raw.obs["gene"].astype(str).to_numpy()
    for i, label in enumerate(sorted(set(labels))):
        rows = np.flatnonzero(labels == label)
        if label != CONTROL:
            if rows.size < 102:
                continue
            rows = rng.choice(rows, size=102 if i == 1 else min(rows.size, 160), replace=False)
        keep.append(np.sort(rows))
    cells = raw[np.sort(np.concatenate(keep))].copy()

    obs = pd.DataFrame(index=cells.obs_names.astype(str))
    obs["gene"] = cells.obs["gene"].astype(str).to_numpy()
    obs["gene_id"] = cells.obs["gene_id"].astype(str).to_numpy()
    if dataset != "adamson":  # a few of Replogle's own obs columns
        obs["gem_group"] = 1
        obs["sgID_AB"] = [f"{g}_sg1|{g}_sg2" for g in obs["gene"]]
    X = np.asarray(cells.X.todense(), dtype=np.float32)
    var = pd.DataFrame(index=pd.Index(cells.var_names.astype(str), name="gene_name"))
    var["ensemble_id"] = cells.var["gene_id"].astype(str).to_numpy()
    var["ncounts"] = X.sum(axis=0)
    var["ncells"] = (X > 0).sum(axis=0)
    var["mt"] = var.index.str.startswith("MT-")
    var["ribo"] = var.index.str.startswith(("RPS", "RPL"))
    var["hb"] = var.index.str.contains("^HB[^(P)]")
    obs["UMI_count"] = X.sum(axis=1)
    obs["ngenes"] = (X > 0).sum(axis=1)
    processed = ad.AnnData(X=X, obs=obs, var=var)
    sc.pp.calculate_qc_metrics(
        processed, qc_vars=["mt", "ribo", "hb"], percent_top=None, log1p=True, inplace=True
    )
    # scrublet's calls, standing in: the simulated doublets (what the file ships is what counts)
    processed.obs["doublet_score"] = np.where(cells.obs["sim_doublet"].to_numpy(), 0.6, 0.05)
    processed.obs["predicted_doublet"] = cells.obs["sim_doublet"].to_numpy(dtype=bool)

    # DE flags: each perturbation's most changed gene (by |log2 fold change| of means)
    normalised = np.log1p(X / X.sum(axis=1, keepdims=True) * 1e4)
    control = normalised[obs["gene"].to_numpy() == CONTROL].mean(axis=0)
    flagged = set()
    for label in sorted(set(obs["gene"]) - {CONTROL}):
        change = np.abs(normalised[obs["gene"].to_numpy() == label].mean(axis=0) - control)
        flagged.add(processed.var_names[int(np.argmax(change))])
    processed.var["highly_variable"] = False
    processed.var[DEG_COLUMN[dataset]] = processed.var_names.isin(sorted(flagged))

    for column, nmads in (
        ("UMI_count", -3),
        ("ngenes", -3),
        ("pct_counts_mt", 3),
        ("pct_counts_ribo", 3),
        ("pct_counts_hb", 3),
    ):
        processed.obs[f"qc_{column}"] = _mad_flags(processed.obs[column], nmads)
    processed.obs["qc_predicted_doublet"] = processed.obs["predicted_doublet"].astype(int)
    qc_columns = [c for c in processed.obs.columns if "qc_" in c]
    processed.obs["num_qc"] = processed.obs[qc_columns].sum(axis=1)
    processed.obs["total_qc"] = (processed.obs["num_qc"] > 0).astype(int)

    index = np.arange(processed.n_obs)
    rest, test = train_test_split(index, train_size=0.8, random_state=0)
    train, val = train_test_split(rest, train_size=0.8, random_state=0)
    split = np.empty(processed.n_obs, dtype=object)
    split[train], split[val], split[test] = "train", "val", "test"
    processed.obs["split"] = split
    processed.obs["T"] = processed.obs["gene"]

    # their OT pairing on the measured targets; controls too are matched to (other) controls
    targets = [g for g in sorted(set(obs["gene"]) - {CONTROL}) if g in processed.var_names]
    features = np.log1p(X / X.sum(axis=1, keepdims=True) * 1e4)[:, processed.var_names.get_indexer(targets)]
    partner = pair_cells_ot(features, obs["gene"].to_numpy(), split, CONTROL, progress=False)
    names = processed.obs_names.to_numpy()
    is_control = obs["gene"].to_numpy() == CONTROL
    for part in ("train", "val", "test"):
        controls = np.flatnonzero(is_control & (split == part))
        partner[controls] = np.roll(controls, 1)
    processed.obs["matched_ctrl_idx_0"] = "-1"
    processed.obs["matched_ctrl_idx_0_ot"] = names[partner]
    for column in ("gene", "T", "split"):
        processed.obs[column] = processed.obs[column].astype("category")
    return processed, cells


def authors_summary_stats(raw: ad.AnnData, dataset: str) -> pd.DataFrame:
    """Summary statistics of the raw screen, in the authors' file for ``dataset``."""
    stats = compute_summary_stats(raw, progress=False)
    if dataset == "adamson":
        names = stats["genetic perturbation"].astype(str)
        stats["genetic perturbation"] = names.where(names == CONTROL, names.str.split("_").str[-1])
    return stats


def write_authors_files(folder: Path, dataset: str, seed: int = 0) -> dict[str, Path]:
    """``datasets/`` as the authors' README leaves it after extracting both archives, and the
    two archives themselves (``archives/``). Returns the paths by role."""
    record = DATASETS[dataset]
    processed, raw = authors_screen(dataset, seed)
    datasets = folder / "datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    counts = datasets / record.counts_file
    processed.write_h5ad(counts)
    stats = authors_summary_stats(raw, dataset)
    stats_path = datasets / record.stats_file
    if dataset == "adamson":
        stats.to_csv(stats_path)
    else:
        write_summary_stats_xlsx(stats, stats_path, record.stats_sheet)
    archives = folder / "archives"
    archives.mkdir(exist_ok=True)
    for archive, members in (
        (record.counts_archive, {f"datasets/{counts.name}": counts}),
        (record.stats_archive, {stats_path.name: stats_path}),
    ):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, path in members.items():
                tar.add(path, arcname=name)
        (archives / archive.filename).write_bytes(buffer.getvalue())
    return {"counts": counts, "summary_stats": stats_path, "archives": archives}
