"""Perturbation prediction (design §7): test IWELBO, data/model/baseline ATEs and their metrics.

The data's ATE is computed against two references (``heldout_test``: test cells only, controls
included; ``all_cells``: every cell, the published reference), each on all cells and on QC-pass
cells (``subset``). The model's ATE comes from generated cells (good-QC branch, fixed library
size) against generated controls (as :func:`~gpo_vae.evaluation.ate.ate_from_generated`
without a ``control_mean``), one perturbation at a time, so no more than one perturbation's
cells are ever held in memory (:mod:`gpo_vae.evaluation.generation`). The data's side (references, ``mean_baseline``,
``noncontrol_mean``, ``split_half_ceiling``) is :mod:`gpo_vae.evaluation.observed`;
``control_baseline`` predicts no effect.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from gpo_vae.data.labels import label_genes
from gpo_vae.data.summary_stats import compute_summary_stats
from gpo_vae.data.summary_stats_io import (
    DEGS_COLUMN,
    IS_CONTROL_COLUMN,
    KNOCKDOWN_COLUMN,
    PERTURBATION_COLUMN,
    collapse_duplicates,
)
from gpo_vae.evaluation.ate import batch_shares
from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.evaluation.metrics import prediction_metrics, qc_pass_ratio, summary_stats_agreement
from gpo_vae.module import GPOVAE
from gpo_vae.preprocessing.artifact import ArtifactOnDisk
from gpo_vae.preprocessing.normalize import DEFAULT_TARGET_SUM, library_size, take_rows
from gpo_vae.preprocessing.qc import QC_METRICS, QCThresholds
from gpo_vae.training.data import ArtifactCells

logger = logging.getLogger(__name__)

HELDOUT, ALL_CELLS, QC_PASS = "heldout_test", "all_cells", "qc_pass"
REFERENCES = (HELDOUT, ALL_CELLS)
SUBSETS = (ALL_CELLS, QC_PASS)
KEY_COLUMNS = ["method", "reference", "subset", "perturbation"]
#: ``evaluation.ate_target_sum`` that scales the ATE to the screen's own depth.
MEDIAN_LIBRARY = "median_library"


@dataclass(frozen=True)
class EvaluationData:
    """What evaluation reads from a preprocessed artifact.

    Attributes
    ----------
    cells
        The artifact's arrays (counts, dosage, ΔX, splits, nodes, genes).
    labels
        (N,) perturbation label of each cell (``control_label`` for controls).
    qc_pass
        (N,) the cell passes QC (``total_qc == 0``).
    qc_metrics
        (N, 5) QC metrics of the cells (:data:`~gpo_vae.preprocessing.qc.QC_METRICS`).
    qc_thresholds
        The thresholds fitted by preprocessing (judge generated cells too).
    target_sum
        The ATE's scale: every cell is scaled to this many counts before ``log2(1 + x)``
        (``evaluation.ate_target_sum``, resolved by :func:`resolve_target_sum`).
    """

    cells: ArtifactCells
    labels: np.ndarray
    control_label: str
    qc_pass: np.ndarray
    qc_metrics: pd.DataFrame
    qc_thresholds: QCThresholds
    target_sum: float = DEFAULT_TARGET_SUM

    @property
    def batches(self) -> np.ndarray | None:
        """(N,) batch of every cell, or None for a screen of one batch."""
        if not self.cells.n_batches:
            return None
        return np.asarray(self.cells.batch_names, dtype=object)[self.cells.batch_codes]

    @classmethod
    def from_anndata(cls, adata: ad.AnnData, on_disk: ArtifactOnDisk | None = None) -> EvaluationData:
        """Take the fields of a (validated) artifact AnnData (``on_disk``: the matrices left in
        the file, for an AnnData read without them)."""
        return cls(
            cells=ArtifactCells.from_anndata(adata, on_disk=on_disk),
            labels=adata.obs["gene"].astype(str).to_numpy(),
            control_label=str(adata.uns["control_label"]),
            qc_pass=adata.obs["total_qc"].to_numpy() == 0,
            qc_metrics=adata.obs[list(QC_METRICS)].reset_index(drop=True),
            qc_thresholds=QCThresholds.from_dict(adata.uns["qc_thresholds"]),
        )

    def median_training_library(self) -> float:
        """Median UMIs per training cell."""
        return float(np.median(library_size(take_rows(self.cells.counts, self.cells.rows("train")))))

    @property
    def genes(self) -> pd.Index:
        return pd.Index(self.cells.genes, name="gene")

    def perturbations(self) -> list[str]:
        """Labels with at least one test cell, the rows of every table: the single perturbations
        in node order, then the combinations (``A+B``) sorted."""
        tested = set(self.labels[self.cells.rows("test")].tolist()) - {self.control_label}
        singles = [node for node in self.cells.nodes[: self.cells.n_perturbed] if node in tested]
        return singles + sorted(tested - set(singles))

    def training_controls(self, batch: int | None = None) -> sp.csr_matrix:
        """Counts of the training control cells (of one batch when ``batch`` is given)."""
        rows = self.cells.rows("train")
        rows = rows[self.labels[rows] == self.control_label]
        if batch is not None and self.cells.n_batches:
            rows = rows[self.cells.batch_codes[rows] == batch]
        return self.cells.counts[rows]

    def test_batch_shares(self, perturbations: Sequence[str]) -> pd.DataFrame | None:
        """Each perturbation's share of test cells per batch (None without batches): the weights
        that combine per-batch effects into one ATE, for the data and the model alike."""
        batches = self.batches
        if batches is None:
            return None
        test = self.cells.rows("test")
        return batch_shares(self.labels[test], batches[test], perturbations, self.cells.batch_names)


def library_setting(setting: float | str, median_library: float) -> float:
    """The counts ``evaluation.ate_target_sum`` or ``evaluation.generated_library_size`` stand
    for: a number, or (``median_library``) the training cells' median library size."""
    return float(median_library) if setting == MEDIAN_LIBRARY else float(setting)


def resolve_library_setting(setting: float | str, data: EvaluationData, key: str) -> tuple[float, str]:
    """(counts, where they came from) for ``evaluation.ate_target_sum`` or
    ``evaluation.generated_library_size`` (``key``): a number, or the training cells' median."""
    if setting == MEDIAN_LIBRARY:
        return library_setting(setting, data.median_training_library()), (
            "the median library size of the training cells"
        )
    return library_setting(setting, 0.0), f"evaluation.{key}"


def test_iwelbo(
    model: GPOVAE, cells: ArtifactCells, n_particles: int, batch_size: int, seed: int = 0
) -> float:
    """Mean IWELBO per test cell; one draw of the global variables is shared by every batch."""
    rows = cells.rows("test")
    if rows.size == 0:
        raise ValueError("the artifact has no test cells: the test IWELBO is undefined")
    device = model.guide.mask_logits.device
    total = 0.0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        plated = model.sample_plated(n_particles)
        for start in range(0, rows.size, batch_size):
            batch = {
                key: value.to(device) for key, value in cells.batch(rows[start : start + batch_size]).items()
            }
            total += float(model.iwelbo(batch, n_particles, plated=plated).sum())
    return total / rows.size


def _keyed(metrics: pd.DataFrame, method: str, reference: str, subset: str) -> pd.DataFrame:
    frame = metrics.rename_axis("perturbation").reset_index()
    frame.insert(0, "subset", subset)
    frame.insert(0, "reference", reference)
    frame.insert(0, "method", method)
    return frame


def prediction_table(
    references: Mapping[tuple[str, str], pd.DataFrame],
    predictions: Mapping[str, Mapping[str, pd.DataFrame]],
    ceilings: Mapping[str, pd.DataFrame],
    config: EvaluationConfig,
    shared_shifts: Mapping[str, pd.Series] | None = None,
) -> pd.DataFrame:
    """The long ``prediction_metrics.csv`` table.

    Parameters
    ----------
    references
        (reference, subset) → observed ATE.
    predictions
        method → subset → predicted ATE.
    ceilings
        subset → split-half metrics; reported under the ``heldout_test`` reference only (they
        are computed from test cells).
    shared_shifts
        subset → the non-control mean's ATE: adds ``pearson_specific`` to every method.
    """
    frames = []
    for (reference, subset), observed in references.items():
        shift = None if shared_shifts is None else shared_shifts.get(subset)
        for method, by_subset in predictions.items():
            metrics = prediction_metrics(
                observed,
                by_subset[subset],
                config.top_de,
                config.jaccard_ks,
                shared_shift=shift,
                across=reference == HELDOUT,
            )
            if method == "control_baseline":
                # a constant prediction ranks no gene above another: its top-k sets are arbitrary
                metrics[[c for c in metrics.columns if c.startswith("jaccard")]] = np.nan
            frames.append(_keyed(metrics, method, reference, subset))
        if reference == HELDOUT:
            frames.append(_keyed(ceilings[subset], "split_half_ceiling", reference, subset))
    return pd.concat(frames, ignore_index=True)


def ate_scatter_table(
    observed: pd.DataFrame, predicted: pd.DataFrame, mean_baseline: pd.DataFrame | None, n: int
) -> pd.DataFrame:
    """Every gene of ``n`` perturbations spread over the model's held-out Pearson r, best first:
    the best, the worst and evenly between (not only the easiest), with each gene's target flag."""
    r = pd.Series(
        {label: _pearson(observed.loc[label], predicted.loc[label]) for label in observed.index}
    ).dropna()
    ranked = r.sort_values(ascending=False, kind="stable").index
    positions = np.unique(np.round(np.linspace(0, len(ranked) - 1, min(n, len(ranked)))).astype(int))
    chosen = ranked[positions] if len(ranked) else ranked
    columns = {"observed": observed, "predicted": predicted}
    if mean_baseline is not None:
        columns["mean_baseline"] = mean_baseline
    stacked = {
        name: frame.loc[chosen, observed.columns].stack(future_stack=True) for name, frame in columns.items()
    }
    table = pd.DataFrame(stacked)
    table.index = table.index.set_names(["perturbation", "gene"])
    table = table.reset_index()
    targets = {(label, gene) for label in chosen for gene in label_genes(label)}
    table["target"] = [pair in targets for pair in zip(table["perturbation"], table["gene"], strict=True)]
    return table


def _pearson(x: pd.Series, y: pd.Series) -> float:
    a, b = x.to_numpy(dtype=np.float64), y.to_numpy(dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 2 or a[keep].std() == 0 or b[keep].std() == 0:
        return float("nan")
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


#: Each perturbation's held-out ATE at its own target, observed and per method.
ON_TARGET_FILE = "on_target.csv"


def on_target_table(observed: pd.DataFrame, predictions: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """``on_target.csv``: each perturbation's held-out ATE at its own target gene(s) when the target
    is measured (a pair: a row per gene), observed and per method (``predictions``: method → ATE)."""
    genes = observed.columns
    pairs = [(label, gene) for label in observed.index for gene in label_genes(label) if gene in genes]
    rows = observed.index.get_indexer([label for label, _ in pairs])
    columns = genes.get_indexer([gene for _, gene in pairs])
    table = pd.DataFrame(
        {
            "perturbation": [label for label, _ in pairs],
            "target": [gene for _, gene in pairs],
            "observed": observed.to_numpy()[rows, columns] if pairs else [],
        }
    )
    for method, frame in predictions.items():
        aligned = frame.reindex(index=observed.index, columns=genes)
        table[method] = aligned.to_numpy()[rows, columns] if pairs else []
    return table


def on_target_summary(table: pd.DataFrame, method: str) -> dict[str, float]:
    """A method's on-target change against the observed one: the median ratio predicted / observed
    and the share of targets whose sign it gets right (over targets with an observed change)."""
    moved = table[np.isfinite(table["observed"]) & (table["observed"] != 0) & np.isfinite(table[method])]
    if moved.empty:
        return {}
    ratio = moved[method] / moved["observed"]
    same_sign = np.sign(moved[method]) == np.sign(moved["observed"])
    return {
        f"{method}_on_target_ratio_median": float(ratio.median()),
        f"{method}_on_target_sign_agreement": float(same_sign.mean()),
        "on_target_n": len(moved),
    }


def qc_ratio_table(generated: pd.Series, data: EvaluationData) -> pd.DataFrame:
    """QC pass ratio of generated cells and of the data's test cells at each stored ``t``.

    Both sides are judged by the same stored metric thresholds and without the doublet flag
    (generated cells have no doublet call), so the two columns measure the same thing.
    """
    test = data.cells.rows("test")
    observed = qc_pass_ratio(data.qc_metrics.iloc[test], data.qc_thresholds, nmads=generated.index)
    return pd.DataFrame(
        {
            "t": generated.index.to_numpy(dtype=float),
            "pass_ratio_generated": generated.to_numpy(),
            "pass_ratio_data": observed.to_numpy(),
        }
    )


def summary_stats_tables(
    generated: ad.AnnData, reported: pd.DataFrame, control_label: str, seed: int = 0, progress: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predicted vs reported knockdown and number of DEGs.

    ``generated`` holds generated cells of every perturbation and of the controls
    (``obs["gene"]``); their statistics are computed exactly as the data's own
    (:func:`~gpo_vae.data.summary_stats.compute_summary_stats`). ``reported`` is
    :func:`~gpo_vae.data.summary_stats_io.read_summary_stats` output (one guide per gene kept,
    the strongest knockdown).

    Returns
    -------
    ``summary_stats_agreement.csv`` (``quantity``, ``spearman``, ``n``) and
    ``summary_stats_points.csv`` (``perturbation``, ``quantity``, ``predicted``, ``reported``:
    the perturbations behind each correlation).
    """
    stats = compute_summary_stats(generated, control_label=control_label, seed=seed, progress=progress)
    # compute_summary_stats writes one row per perturbation in sorted order, then the controls
    perturbations = sorted(set(generated.obs["gene"].astype(str)) - {control_label})
    predicted = stats.iloc[: len(perturbations)].set_axis(pd.Index(perturbations, name="perturbation"))
    table = collapse_duplicates(reported)
    table = table[~table[IS_CONTROL_COLUMN].astype(bool)].set_index(PERTURBATION_COLUMN)
    agreement = summary_stats_agreement(
        predicted[KNOCKDOWN_COLUMN], table[KNOCKDOWN_COLUMN], predicted[DEGS_COLUMN], table[DEGS_COLUMN]
    )
    rows, points = [], []
    for quantity, column in (("knockdown", KNOCKDOWN_COLUMN), ("n_degs", DEGS_COLUMN)):
        key = "ndeg" if quantity == "n_degs" else quantity
        rows.append(
            {"quantity": quantity, "spearman": agreement[f"{key}_spearman"], "n": agreement[f"{key}_n"]}
        )
        joined = pd.concat(
            [predicted[column].rename("predicted"), table[column].rename("reported")], axis=1, join="inner"
        ).dropna()
        points.append(joined.rename_axis("perturbation").reset_index().assign(quantity=quantity))
    columns = ["perturbation", "quantity", "predicted", "reported"]
    return pd.DataFrame(rows), pd.concat(points, ignore_index=True)[columns]
