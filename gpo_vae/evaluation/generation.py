"""The model's generated cells in evaluation: seeds, dosages, z_basal draws and the per-perturbation
summary (mean expression, QC pass counts, a few cells kept), one perturbation at a time.

:class:`gpo_vae.GPOVAEModel` generates through the same functions, so its cells and ATEs are the
evaluation's for the same settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from gpo_vae.data.labels import label_genes
from gpo_vae.evaluation.ate import mean_log2_expression
from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.evaluation.metrics import qc_pass_ratio
from gpo_vae.module import GPOVAE
from gpo_vae.module.generate import encode_basal, sample_cells
from gpo_vae.preprocessing.normalize import DEFAULT_TARGET_SUM
from gpo_vae.preprocessing.qc import QCThresholds, compute_qc_metrics

#: compute_summary_stats tests every perturbation against at most this many control cells.
SUMMARY_CONTROL_CELLS = 1000


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
        (``predictions.h5ad`` is streamed through ``export`` instead); None when none were kept.
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
    export: Callable[[str, int | None, sp.csr_matrix], None] | None = None,
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

    ``export(label, batch, counts)`` receives every generated block (sparse, the controls'
    label ``control_label``) as it is made, to stream cells to disk; none are kept for it.
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
        if qc_thresholds is None and keep_cells == 0 and export is None:
            continue
        sparse = sp.csr_matrix(counts)
        del counts
        if export is not None:
            export(label, b, sparse)
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


__all__ = [
    "SUMMARY_CONTROL_CELLS",
    "GeneratedSummary",
    "basal_draws",
    "generate_and_summarise",
    "generate_label_cells",
    "generation_seed",
    "label_dosage",
]
