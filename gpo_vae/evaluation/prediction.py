"""Perturbation prediction (design §7): test IWELBO, data/model/baseline ATEs and their metrics.

The data's ATE is computed against two references (``heldout_test``: test cells only, controls
included; ``all_cells``: every cell, the published reference), each on all cells and on QC-pass
cells (``subset``). The model's ATE comes from generated cells (good-QC branch, fixed library
size) against generated controls (as :func:`~gpo_vae.evaluation.ate.ate_from_generated`
without a ``control_mean``), one perturbation at a time, so no more than one perturbation's
cells are ever held in memory. The data's side (references, ``mean_baseline``,
``noncontrol_mean``, ``split_half_ceiling``) is :mod:`gpo_vae.evaluation.observed`;
``control_baseline`` predicts no effect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from gpo_vae.data.labels import label_genes
from gpo_vae.data.summary_stats import compute_summary_stats
from gpo_vae.data.summary_stats_io import (
    DEGS_COLUMN,
    IS_CONTROL_COLUMN,
    KNOCKDOWN_COLUMN,
    PERTURBATION_COLUMN,
    collapse_duplicates,
)
from gpo_vae.evaluation.ate import batch_shares, mean_log2_expression
from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.evaluation.metrics import prediction_metrics, qc_pass_ratio, summary_stats_agreement
from gpo_vae.models import GPOVAE
from gpo_vae.models.generate import encode_basal, sample_cells
from gpo_vae.preprocessing.normalize import DEFAULT_TARGET_SUM
from gpo_vae.preprocessing.qc import QC_METRICS, QCThresholds, compute_qc_metrics
from gpo_vae.training.data import ArtifactCells

logger = logging.getLogger(__name__)

HELDOUT, ALL_CELLS, QC_PASS = "heldout_test", "all_cells", "qc_pass"
REFERENCES = (HELDOUT, ALL_CELLS)
SUBSETS = (ALL_CELLS, QC_PASS)
KEY_COLUMNS = ["method", "reference", "subset", "perturbation"]
#: compute_summary_stats tests every perturbation against at most this many control cells.
SUMMARY_CONTROL_CELLS = 1000
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
    def from_anndata(cls, adata: ad.AnnData) -> EvaluationData:
        """Take the fields of a (validated) artifact AnnData."""
        return cls(
            cells=ArtifactCells.from_anndata(adata),
            labels=adata.obs["gene"].astype(str).to_numpy(),
            control_label=str(adata.uns["control_label"]),
            qc_pass=adata.obs["total_qc"].to_numpy() == 0,
            qc_metrics=adata.obs[list(QC_METRICS)].reset_index(drop=True),
            qc_thresholds=QCThresholds.from_dict(adata.uns["qc_thresholds"]),
        )

    def median_training_library(self) -> float:
        """Median UMIs per training cell."""
        counts = self.cells.counts[self.cells.rows("train")]
        return float(np.median(np.asarray(counts.sum(axis=1)).ravel()))

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


def resolve_library_setting(setting: float | str, data: EvaluationData, key: str) -> tuple[float, str]:
    """(counts, where they came from) for ``evaluation.ate_target_sum`` or
    ``evaluation.generated_library_size`` (``key``): a number, or the training cells' median."""
    if setting == MEDIAN_LIBRARY:
        return data.median_training_library(), "the median library size of the training cells"
    return float(setting), f"evaluation.{key}"


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


def generation_seed(seed: int, node: int | Sequence[int] | None, batch: int | None = None) -> int:
    """Seed of one perturbation's generated cells (``node`` None: the controls; a list of nodes:
    a combination; ``batch``: the cells of one batch).

    A function of the evaluation seed, the node(s) and the batch alone, so a perturbation's
    cells do not depend on which others are evaluated, nor in which order.
    """
    if node is None:
        entropy = [seed, 0]
    elif isinstance(node, int | np.integer):
        entropy = [seed, int(node) + 1]
    else:
        entropy = [seed, 0x636F6D62, *(int(n) + 1 for n in node)]  # "comb": apart from the singles
    if batch is not None:
        entropy.append(0x62617463 + int(batch))  # "batc"
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@dataclass(frozen=True)
class GeneratedSummary:
    """What evaluation keeps of a model's generated cells (never the cells themselves).

    Attributes
    ----------
    means
        Perturbations × genes mean ``log2(1 + 1e4·x/library)`` of each perturbation's cells.
    control_mean
        The same over the generated controls (zero dosage), (G,).
    qc_pass_ratio
        Fraction of all generated cells (controls included) passing QC at each ``t``; None
        when not computed.
    kept
        The first cells of every perturbation and of the controls (``obs["gene"]``; the batch
        code in ``obs["batch_index"]``, -1 without batches), for the predicted summary statistics
        and ``predictions.h5ad``; None when none were kept.
    control_reference
        With batches: each perturbation's control mean, the generated controls of every batch
        weighted by its batch shares (perturbations × genes); None otherwise.
    """

    means: pd.DataFrame
    control_mean: np.ndarray
    qc_pass_ratio: pd.Series | None
    kept: ad.AnnData | None
    control_reference: pd.DataFrame | None = None

    def ate(self) -> pd.DataFrame:
        """The model's ATE: each perturbation's mean minus the generated controls' mean (of the
        same batches, in the same shares, when the screen has batches)."""
        if self.control_reference is not None:
            return self.means - self.control_reference
        return self.means - self.control_mean


def label_dosage(label: str, node_index: Mapping[str, int], n_nodes: int) -> tuple[torch.Tensor, list[int]]:
    """The multi-hot dosage of a label over the nodes (one 1 per gene of ``A+B``) and its nodes."""
    genes = label_genes(label)
    missing = [g for g in genes if g not in node_index]
    if missing:
        raise ValueError(f"{label!r}: {missing[:5]} are not nodes of the model")
    nodes = [node_index[g] for g in genes]
    dosage = torch.zeros(n_nodes)
    dosage[nodes] = 1.0
    return dosage, nodes


def basal_draws(
    model: GPOVAE,
    batches: Sequence[int | None],
    n_cells: int,
    seed: int,
    control_counts: Callable[[int | None], sp.csr_matrix] | None,
) -> dict[int | None, torch.Tensor | None]:
    """z_basal of the generated cells of each batch: None (the prior) unless the model predicts
    from encoded control cells (``prediction_basal: encoded_controls``), then ``n_cells`` draws
    from ``control_counts(b)`` (the training controls of batch ``b``), from ``seed`` alone."""
    basal: dict[int | None, torch.Tensor | None] = dict.fromkeys(batches)
    if model.config.prediction_basal != "encoded_controls":
        return basal
    if control_counts is None:
        raise ValueError("this model predicts from encoded control cells: pass control_counts")
    for b in batches:
        cells = control_counts(b)
        if cells.shape[0] == 0:
            raise ValueError(f"no training control cells{'' if b is None else f' in batch {b}'} to encode")
        draw_seed = generation_seed(seed, None, b) ^ 0x62617361  # "basa"
        # at most n of them are densified: memory stays at the generated cells' own size
        chosen = np.sort(np.random.default_rng(draw_seed).permutation(cells.shape[0])[:n_cells])
        dense = torch.as_tensor(cells[chosen].toarray(), dtype=torch.float32)
        basal[b] = encode_basal(model, dense, n_cells, draw_seed, b)
    return basal


def generate_label_cells(
    model: GPOVAE,
    dosage: torch.Tensor,
    nodes: Sequence[int],
    n_cells: int,
    library_size: float,
    seed: int,
    batch: int | None,
    basal: torch.Tensor | None,
) -> np.ndarray:
    """(n_cells, G) counts of one label (``nodes`` its dosed nodes; none: the controls) in one
    batch, good-QC branch, seeded by :func:`generation_seed` so that evaluation and
    :meth:`gpo_vae.GPOVAEModel.predict` draw the same cells."""
    seed_nodes = None if not nodes else (int(nodes[0]) if len(nodes) == 1 else list(nodes))
    counts = sample_cells(
        model,
        dosage,
        n_cells,
        library_size,
        "good",
        "sample",
        generation_seed(seed, seed_nodes, batch),
        batch,
        basal,
    )
    return counts.cpu().numpy()


def generate_and_summarise(
    model: GPOVAE,
    nodes: Sequence[str],
    perturbations: Sequence[str],
    genes: pd.Index,
    config: EvaluationConfig,
    control_label: str,
    qc_thresholds: QCThresholds | None = None,
    keep_cells: int = 0,
    progress: bool = False,
    batch_weights: pd.DataFrame | None = None,
    control_counts: Callable[[int | None], sp.csr_matrix] | None = None,
    dosages: Mapping[str, tuple[np.ndarray | torch.Tensor, list[int]]] | None = None,
    target_sum: float = DEFAULT_TARGET_SUM,
) -> GeneratedSummary:
    """Generate ``config.n_generated_cells`` cells per perturbation and for the controls.

    ``nodes`` are the module's node names (``info["node_names"]`` of the run); a perturbation
    is dosed as the multi-hot of its genes' nodes (a single node for a single perturbation).
    With ``batch_weights`` (perturbations × batches, rows summing to 1: the data's test shares),
    cells are generated in every batch a perturbation has cells in, and in every batch for the
    controls, and the per-batch means are combined with those weights.

    Good-QC branch, library size ``config.generated_library_size``, one guide draw of the
    global variables per cell. Each perturbation is generated, summarised (mean expression,
    QC pass counts when ``qc_thresholds`` is given, ``keep_cells`` cells kept sparse) and
    dropped before the next one. The controls keep up to ``max(keep_cells, 1000)`` cells: the
    largest control subsample that ``compute_summary_stats`` tests against.

    A model with ``prediction_basal: encoded_controls`` takes z_basal from ``control_counts(b)``
    (the training control cells of batch ``b``, or of the screen for None): the same draws for
    the controls and for every perturbation of a batch, so an ATE compares the same cells with
    and without the perturbation's latent offset. Means are of ``log2(1 + target_sum·x/library)``.
    """
    node_index = {str(node): i for i, node in enumerate(nodes)}
    if len(node_index) != model.n_nodes:
        raise ValueError(f"{len(node_index)} node names for a module with {model.n_nodes} nodes")
    given = dosages or {}
    dosages = {
        p: (torch.as_tensor(given[p][0], dtype=torch.float32), list(given[p][1]))
        if p in given
        else label_dosage(p, node_index, model.n_nodes)
        for p in perturbations
    }
    n_batch = 0 if batch_weights is None else batch_weights.shape[1]
    batch_list: list[int | None] = [None] if n_batch == 0 else list(range(n_batch))
    weights = None if batch_weights is None else batch_weights.reindex(list(perturbations)).fillna(0.0)
    jobs: list[tuple[str, int, int | None]] = [(control_label, -1, b) for b in batch_list]
    for i, p in enumerate(perturbations):
        jobs += [(p, i, b) for b in batch_list if b is None or weights.iloc[i, b] > 0]
    n = config.n_generated_cells
    means = np.zeros((len(perturbations), len(genes)))
    control_by_batch = np.zeros((max(n_batch, 1), len(genes)))
    passed: pd.Series | None = None
    kept_blocks: list[sp.csr_matrix] = []
    kept_labels: list[np.ndarray] = []
    kept_batches: list[np.ndarray] = []
    var = pd.DataFrame(index=genes.astype(str))
    kept_controls = 0
    basal = basal_draws(model, batch_list, n, config.seed, control_counts)
    for label, i, b in tqdm(jobs, desc="generating", disable=not progress):
        if i < 0:
            dosage, node_list = torch.zeros(model.n_nodes), []
        else:
            dosage, node_list = dosages[label]
        counts = generate_label_cells(
            model, dosage, node_list, n, config.generated_library_size, config.seed, b, basal[b]
        )
        if counts.shape[1] != len(genes):
            raise ValueError(f"the model generates {counts.shape[1]} genes, the artifact has {len(genes)}")
        mean = mean_log2_expression(counts, target_sum)
        if i < 0:
            control_by_batch[0 if b is None else b] = mean
        else:
            means[i] += mean if b is None else weights.iloc[i, b] * mean
        if qc_thresholds is None and keep_cells == 0:
            continue
        sparse = sp.csr_matrix(counts)
        del counts
        if qc_thresholds is not None:
            metrics = compute_qc_metrics(ad.AnnData(X=sparse, var=var))
            ratio = qc_pass_ratio(metrics, qc_thresholds) * sparse.shape[0]
            passed = ratio if passed is None else passed + ratio
        if keep_cells:
            if i < 0:
                n_keep = min(n, max(keep_cells, SUMMARY_CONTROL_CELLS) - kept_controls)
                kept_controls += n_keep
            else:
                n_keep = min(n, keep_cells)
            kept_blocks.append(sparse[:n_keep])
            kept_labels.append(np.full(n_keep, label, dtype=object))
            kept_batches.append(np.full(n_keep, -1 if b is None else b))
    kept = None
    if kept_blocks:
        obs = pd.DataFrame({"gene": np.concatenate(kept_labels), "batch_index": np.concatenate(kept_batches)})
        obs.index = obs.index.astype(str)
        kept = ad.AnnData(X=sp.vstack(kept_blocks, format="csr"), obs=obs, var=var)
    ratio = None if passed is None else (passed / (n * len(jobs))).rename("qc_pass_ratio")
    index = pd.Index(list(perturbations), name="perturbation")
    reference = None
    if weights is not None:
        reference = pd.DataFrame(weights.to_numpy() @ control_by_batch, index=index, columns=genes)
    control_mean = control_by_batch.mean(axis=0)
    return GeneratedSummary(
        pd.DataFrame(means, index=index, columns=genes), control_mean, ratio, kept, reference
    )


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
                observed, by_subset[subset], config.top_de, config.jaccard_ks, shared_shift=shift
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
    """Every gene of the ``n`` perturbations with the largest held-out effect (sum of squared ATE)."""
    effect = (observed**2).sum(axis=1, min_count=1).dropna()
    chosen = effect.sort_values(ascending=False, kind="stable").index[:n]
    columns = {"observed": observed, "predicted": predicted}
    if mean_baseline is not None:
        columns["mean_baseline"] = mean_baseline
    stacked = {
        name: frame.loc[chosen, observed.columns].stack(future_stack=True) for name, frame in columns.items()
    }
    table = pd.DataFrame(stacked)
    table.index = table.index.set_names(["perturbation", "gene"])
    return table.reset_index()


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
