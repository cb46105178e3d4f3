"""A synthetic CRISPRi Perturb-seq screen with a known gene-regulatory network (design §9).

Generative model, per measured gene g and cell c (all effects in log space):

- Genes and GRN: drawn first, with each target's knockdown class and efficiency
  (:mod:`gpo_vae.data.synthetic_design`): a DAG regulators → hubs → leaves whose total effects
  ``R = (I − W)⁻¹`` let a knockdown move grandchildren too.
- Perturbations: per-perturbation CRISPRi efficiency (most ~0.9; a ``poor_knockdown_fraction``
  0.15–0.55), per-cell efficiency Beta around it, and ``escape_fraction`` of cells where the
  guide barely works. The target's own log-rate moves by ``log(1 − e)``; every other gene by
  ``R[p, g] · max(log(1 − e), log 0.02)``, clipped to ±4. "Weak" perturbations are the poor
  knockdowns plus targets without outgoing edges (``strong`` is False for both).
- Cells: basal variation from ``n_basal_factors`` latent factors; log-normal library size with
  a shift per perturbation that has effects (cell size); per-cell ``MT-`` share noise. Rates
  are ``library × softmax(basal profile) × exp(effect)``: a perturbation changes the total,
  unreached genes keep their rate.
- Counts: negative binomial (gamma-Poisson) with a per-gene dispersion.
- QC failures (exclusive, truth in ``obs``): low-UMI cells (library × 0.05–0.25), high-``MT-``
  cells (``MT-`` rates × 3–8), doublets (the counts of a second, random cell added; the label
  of the first is kept).

Determinism: the design and the per-cell draws each take one child stream of
``SeedSequence(seed)``; counts are drawn in fixed chunks of cells, each with its own child seed,
so threads do not change the output.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpo_vae.data.contract import CONTROL_LABEL, GENE_ID_KEY, PERTURBATION_KEY, validate_counts_adata
from gpo_vae.data.layout import CANONICAL_SEPARATOR
from gpo_vae.data.summary_stats import compute_summary_stats, write_summary_stats_xlsx
from gpo_vae.data.synthetic_cells import assemble_csr, draw_cells, sample_chunk
from gpo_vae.data.synthetic_config import BATCH_NAMES, LAYOUTS, PRESETS, SyntheticConfig
from gpo_vae.data.synthetic_design import draw_design, read_gene_symbols
from gpo_vae.data.synthetic_interactions import interaction_truth, true_interactions
from gpo_vae.io import estimated_bytes, folder_swapped_in, require_space
from gpo_vae.version import __version__

__all__ = [
    "PRESETS",
    "SUMMARY_SHEET",
    "SyntheticConfig",
    "SyntheticScreen",
    "read_gene_symbols",
    "report_unmeasured_knockdown",
    "save_synthetic_dataset",
    "simulate_perturbseq",
    "true_interactions",
    "write_synthetic_dataset",
]

SUMMARY_SHEET = "TabS_synthetic_summary_stat"
_CHUNK_CELLS = 2048  # fixed: chunk boundaries decide the random streams


@dataclass(frozen=True)
class SyntheticScreen:
    """A simulated screen: counts, the true GRN and the per-perturbation truth.

    ``adata`` meets the raw contract; ``obs`` also holds the truth ``sim_knockdown_efficiency``,
    ``sim_low_umi``, ``sim_high_mt``, ``sim_doublet``, ``sim_qc_fail``; ``var["sim_role"]`` is
    regulator / hub / leaf / unreached. ``network`` lists the direct edges (``source, target,
    weight``, signed, log scale), including those from unmeasured targets. ``perturbations``:
    one row per target with ``gene, gene_id, strong, measured, efficiency`` (design value),
    ``mean_efficiency`` (over its cells), ``n_cells``, ``n_direct_targets``, ``n_reached_genes``.
    """

    adata: ad.AnnData
    network: pd.DataFrame
    perturbations: pd.DataFrame
    config: SyntheticConfig
    combinations: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)


def simulate_perturbseq(
    config: SyntheticConfig | None = None, n_threads: int | None = None
) -> SyntheticScreen:
    """Simulate a CRISPRi Perturb-seq screen; identical output for the same ``config``.

    Parameters
    ----------
    config
        Sizes and knobs; ``SyntheticConfig.preset("default")`` when omitted.
    n_threads
        Threads drawing counts (numpy releases the GIL); does not change the result.
        Defaults to the CPU count, at most 4.
    """
    plan = _plan(config or SyntheticConfig.preset("default"))
    counts = assemble_csr(_count_pieces(plan, n_threads), plan.n_cells, len(plan.design.genes))
    screen = _screen_without_counts(plan)
    screen.adata.X = counts
    validate_counts_adata(screen.adata, "simulated screen")
    return screen


@dataclass(frozen=True)
class _Plan:
    """What every chunk of counts is drawn from: the design, the per-cell draws and the seeds."""

    config: SyntheticConfig
    design: object
    cells: object
    n_cells: int
    is_mt: np.ndarray
    chunks: list[np.ndarray]
    seeds: list[np.random.SeedSequence]


def _plan(config: SyntheticConfig) -> _Plan:
    design = draw_design(config)
    cells = draw_cells(config, design)
    n_cells = cells.qc_kind.size
    is_mt = np.asarray(design.genes.index.str.startswith("MT-"))
    chunks = [np.arange(s, min(s + _CHUNK_CELLS, n_cells)) for s in range(0, n_cells, _CHUNK_CELLS)]
    seeds = np.random.SeedSequence(config.seed).spawn(3)[2].spawn(len(chunks))
    return _Plan(config, design, cells, n_cells, is_mt, chunks, seeds)


def _count_pieces(plan: _Plan, n_threads: int | None) -> Iterator[tuple[np.ndarray, ...]]:
    """Each chunk's counts as CSR pieces (values, columns, per-row counts), in order."""
    workers = n_threads or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(
            lambda a: sample_chunk(plan.design, plan.cells, a[0], plan.is_mt, a[1]),
            zip(plan.chunks, plan.seeds, strict=True),
        )


def _screen_without_counts(plan: _Plan) -> SyntheticScreen:
    """The screen's obs, var, network and truth tables; its AnnData has no X yet."""
    config, design, cells, n_cells = plan.config, plan.design, plan.cells, plan.n_cells

    targets = design.targets
    groups = cells.group[:n_cells]
    pairs = design.combinations
    genes, ids = targets.gene.to_numpy(dtype=object), targets[GENE_ID_KEY].to_numpy(dtype=object)
    combo_names = [CANONICAL_SEPARATOR.join(genes[pair]) for pair in pairs]
    combo_ids = [CANONICAL_SEPARATOR.join(ids[pair]) for pair in pairs]
    names = np.r_[genes, [CONTROL_LABEL], np.asarray(combo_names, dtype=object)]
    qc = cells.qc_kind
    columns = {
        PERTURBATION_KEY: pd.Categorical(names[groups]),
        GENE_ID_KEY: pd.Categorical(np.r_[ids, [CONTROL_LABEL], np.asarray(combo_ids, dtype=object)][groups]),
        "sim_knockdown_efficiency": cells.efficiency[:n_cells].astype(np.float32),
        "sim_low_umi": qc == 1,
        "sim_high_mt": qc == 2,
        "sim_doublet": qc == 3,
        "sim_qc_fail": qc > 0,
    }
    if len(pairs):
        columns["sim_second_efficiency"] = cells.second_efficiency[:n_cells].astype(np.float32)
    if config.n_batches > 1:
        columns[config.batch_column] = pd.Categorical(
            np.asarray(BATCH_NAMES)[cells.batch[:n_cells]], categories=list(BATCH_NAMES[: config.n_batches])
        )
    obs = pd.DataFrame(columns, index=pd.Index([f"cell{i:07d}" for i in range(n_cells)]))
    adata = ad.AnnData(obs=obs, var=design.genes.copy())
    adata.uns["synthetic_config"] = dataclasses.asdict(config)

    per_target = (
        pd.DataFrame({"code": groups, "efficiency": cells.efficiency[:n_cells]}).groupby("code").efficiency
    )
    truth = targets.copy()
    truth["mean_efficiency"] = per_target.mean().reindex(np.arange(len(targets))).to_numpy()
    truth["n_cells"] = per_target.size().reindex(np.arange(len(targets))).fillna(0).astype(int).to_numpy()
    counts_per_group = np.bincount(groups, minlength=len(names))
    combinations = pd.DataFrame(
        {
            "label": combo_names,
            "first": genes[pairs[:, 0]] if len(pairs) else [],
            "second": genes[pairs[:, 1]] if len(pairs) else [],
            "n_cells": counts_per_group[len(genes) + 1 :],
        }
    )
    if len(pairs):
        combinations = combinations.assign(**interaction_truth(design))
    return SyntheticScreen(
        adata=adata, network=design.network, perturbations=truth, config=config, combinations=combinations
    )


def saved_layout(adata: ad.AnnData, layout: str, seed: int = 0) -> ad.AnnData:
    """The screen as another tool would have saved it (``adata`` is left as is).

    ``plain``: ``adata`` itself. ``counts_layer``: raw counts moved to ``layers["counts"]`` and ``X``
    holding ``log1p(counts / library · 1e4)`` (scanpy's ``normalize_total`` + ``log1p``), as
    most pipelines leave a file. ``guides``: every perturbed cell labelled by one of two guides
    of its target (``GENE_1``, ``GENE_2``) and every control by one of three non-targeting
    guides (``non-targeting_1`` …), drawn with ``seed``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if layout == "plain":
        return adata
    out = adata.copy()
    if layout == "counts_layer":
        counts = sp.csr_matrix(out.X, dtype=np.float32)
        library = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
        scale = np.divide(1e4, library, out=np.zeros_like(library), where=library > 0)
        normalised = counts.multiply(scale[:, None]).tocsr().astype(np.float32)
        np.log1p(normalised.data, out=normalised.data)
        out.layers["counts"] = counts
        out.X = normalised
    elif layout == "guides":
        labels = out.obs[PERTURBATION_KEY].astype(str).to_numpy()
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
        control = labels == CONTROL_LABEL
        guide = np.where(control, rng.integers(1, 4, labels.size), rng.integers(1, 3, labels.size))
        out.obs[PERTURBATION_KEY] = pd.Categorical(
            np.char.add(np.char.add(labels.astype(str), "_"), guide.astype(str))
        )
    return out


def write_synthetic_dataset(
    out_dir: str | Path,
    config: SyntheticConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = False,
    on_disk: bool = False,
    n_threads: int | None = None,
) -> dict[str, Path]:
    """Simulate a screen, compute its summary statistics from the cells and save it.

    See :func:`save_synthetic_dataset` for the files; the folder appears atomically.
    ``on_disk``: for screens larger than memory, each chunk of cells is written to the counts
    file as it is drawn and the statistics are read back from it
    (:func:`~gpo_vae.data.summary_stats.compute_summary_stats` on disk); the same files as in
    memory (the ``plain`` layout only).
    """
    config = config or SyntheticConfig.preset("default")
    _check_target(Path(out_dir), overwrite)
    if not on_disk:
        screen = simulate_perturbseq(config, n_threads)
        stats = report_unmeasured_knockdown(compute_summary_stats(screen.adata, progress=progress), screen)
        return save_synthetic_dataset(screen, stats, out_dir, overwrite=overwrite)
    if config.layout != "plain":
        raise ValueError(f"on_disk writes the plain layout only, not {config.layout!r}")
    plan = _plan(config)
    screen = _screen_without_counts(plan)

    def fill(folder: Path) -> pd.DataFrame:
        from gpo_vae.data.on_disk import CsrAppender

        path = folder / DATASET_FILES["counts"]
        screen.adata.write_h5ad(path)  # obs, var and uns; X is appended below
        with h5py.File(path, "a") as file:
            writer = CsrAppender(file, "X", len(plan.design.genes))
            for values, columns, per_row in _count_pieces(plan, n_threads):
                indptr = np.r_[0, np.cumsum(per_row)]
                writer.append(sp.csr_matrix((values, columns, indptr), shape=(per_row.size, writer.n_cols)))
            counts = writer.finish()
        stats = compute_summary_stats(screen.adata, progress=progress, counts=counts, scratch_dir=folder)
        return report_unmeasured_knockdown(stats, screen)

    n_values = int(config.n_genes * 0.5 * screen.adata.n_obs)  # at most half the entries stored
    require_space(Path(out_dir).parent, 8 * n_values, "the simulated screen")
    return _write_dataset_folder(screen, Path(out_dir), overwrite, fill)


def report_unmeasured_knockdown(stats: pd.DataFrame, screen: SyntheticScreen) -> pd.DataFrame:
    """Fill the knockdown of targets that the counts matrix does not measure.

    A published screen computes its statistics on the whole transcriptome, while the counts file
    released with it keeps only expressed genes: Replogle's sheets report a knockdown for targets
    absent from the matrix, and the §3 strong filter then keeps them. Here the realised knockdown of
    such a target is the mean simulated efficiency of its QC-passing cells (``fold = 1 − mean``).
    """
    obs = screen.adata.obs
    passing = ~obs["sim_qc_fail"].to_numpy(bool)
    efficiency = obs.loc[passing].groupby("gene", observed=True)["sim_knockdown_efficiency"].mean()
    unmeasured = screen.perturbations.loc[~screen.perturbations["measured"], "gene"]
    symbols = stats["genetic perturbation"].str.split("_").str[1]
    rows = symbols.isin(unmeasured).to_numpy()
    fold = 1.0 - efficiency.reindex(symbols[rows]).to_numpy()
    stats = stats.copy()
    stats.loc[rows, "fold knockdown"] = fold
    stats.loc[rows, "percent knockdown"] = fold - 1.0
    return stats


#: File role → name in a saved synthetic dataset folder.
DATASET_FILES = {
    "counts": "counts.h5ad",
    "summary_stats": "summary_stats.xlsx",
    "network": "true_network.csv",
    "perturbations": "perturbations.csv",
    "metadata": "dataset.json",
}


def existing_synthetic_dataset(out_dir: str | Path, config: SyntheticConfig) -> dict[str, Path] | None:
    """The files of ``out_dir`` when it already holds the dataset that ``config`` simulates.

    The folder only ever appears complete (it is renamed into place), so it matches when its
    ``dataset.json`` records the same config and the same gpo_vae version (the simulator's
    code) and every file is there; otherwise None.
    """
    out_dir = Path(out_dir)
    paths = {role: out_dir / name for role, name in DATASET_FILES.items()}
    if not all(path.is_file() for path in paths.values()):
        return None
    try:
        recorded = json.loads(paths["metadata"].read_text())
    except json.JSONDecodeError:
        return None
    wanted = json.loads(json.dumps(dataclasses.asdict(config), default=_json_default))
    same_code = recorded.get("versions", {}).get("gpo_vae") == __version__
    return paths if recorded.get("config") == wanted and same_code else None


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True to replace it")


def save_synthetic_dataset(
    screen: SyntheticScreen, summary_stats: pd.DataFrame, out_dir: str | Path, *, overwrite: bool = False
) -> dict[str, Path]:
    """Write a simulated screen as a dataset folder, atomically.

    Writes ``counts.h5ad`` (uncompressed: several times faster to write and read; in the
    config's :func:`saved_layout`), ``summary_stats.xlsx``
    (data sheet ``TabS_synthetic_summary_stat``), ``true_network.csv``, ``perturbations.csv`` and
    ``dataset.json`` (config, versions, sizes) into a temporary folder next to ``out_dir``, then
    renames it into place: a killed run leaves no partial dataset. An existing ``out_dir`` is an
    error unless ``overwrite``.

    Returns
    -------
    dict
        File role (``counts``, ``summary_stats``, ``network``, ``perturbations``, ``metadata``) to
        its final path.
    """
    _check_target(Path(out_dir), overwrite)
    saved = saved_layout(screen.adata, screen.config.layout, screen.config.seed)
    require_space(Path(out_dir).parent, estimated_bytes(saved), "the simulated screen")

    def fill(folder: Path) -> pd.DataFrame:
        saved.write_h5ad(folder / DATASET_FILES["counts"])
        return summary_stats

    return _write_dataset_folder(screen, Path(out_dir), overwrite, fill)


def _write_dataset_folder(
    screen: SyntheticScreen, out_dir: Path, overwrite: bool, fill: Callable[[Path], pd.DataFrame]
) -> dict[str, Path]:
    """Write the dataset folder through a temporary one: ``fill(folder)`` writes the counts file
    and returns the summary statistics; the other files follow from ``screen``."""
    _check_target(out_dir, overwrite)
    names = DATASET_FILES
    adata = screen.adata
    labels = adata.obs[PERTURBATION_KEY].astype(str)
    metadata = {
        "config": dataclasses.asdict(screen.config),
        "seed": screen.config.seed,
        "versions": {"gpo_vae": __version__}
        | {name: version(name) for name in ("numpy", "scipy", "anndata")},
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "n_perturbations": int(labels[labels != CONTROL_LABEL].nunique()),
        "n_controls": int((labels == CONTROL_LABEL).sum()),
        "n_edges": len(screen.network),
        "summary_stats_sheet": SUMMARY_SHEET,
    }
    with folder_swapped_in(out_dir) as tmp:
        summary_stats = fill(tmp)
        write_summary_stats_xlsx(summary_stats, tmp / names["summary_stats"], SUMMARY_SHEET)
        screen.network.to_csv(tmp / names["network"], index=False)
        screen.perturbations.to_csv(tmp / names["perturbations"], index=False)
        (tmp / names["metadata"]).write_text(json.dumps(metadata, indent=2, default=_json_default) + "\n")
    return {role: out_dir / name for role, name in names.items()}


def _json_default(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else str(value)
