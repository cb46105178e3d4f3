"""Batches from the sparse preprocessed artifact, and the training statistics of the model.

Counts stay sparse: each batch densifies only its own rows, with one CSR row-slice of ``X`` and
one of ``cf_medians`` (cfX of a cell is row ``cf_row`` of the medians, zeros when −1). The
sampler yields index arrays, so a batch is built in one call instead of one ``__getitem__`` per
cell, and its order is a function of (seed, epoch) alone: a resumed run sees the same batches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import pytorch_lightning as pl
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gpo_vae.data.on_disk import MEMORY_SHARE, CountsOnDisk, fits_in_memory
from gpo_vae.preprocessing.artifact import (
    ArtifactOnDisk,
    artifact_path,
    read_artifact,
    read_artifact_on_disk,
)

logger = logging.getLogger(__name__)


CountsPlace = Literal["auto", "memory", "disk"]


def counts_place(artifact_dir: str | Path, share: float = MEMORY_SHARE) -> Literal["memory", "disk"]:
    """``memory`` when the artifact's counts take at most ``share`` of the memory available now
    (:func:`~gpo_vae.data.on_disk.fits_in_memory`), else ``disk``."""
    counts = CountsOnDisk(artifact_path(Path(artifact_dir), verify=False), "X")
    place = "memory" if fits_in_memory(counts, share) else "disk"
    logger.info("the counts are read from %s", place)
    return place


@dataclass(frozen=True)
class ArtifactCells:
    """The per-cell arrays of an artifact that training reads (no dense cell × gene copy).

    Attributes
    ----------
    counts
        (N, G) CSR float32 raw counts, or a :class:`~gpo_vae.data.on_disk.CountsOnDisk` over
        the artifact's X (:meth:`read` with ``counts="disk"``; then ``delta_x`` and
        ``cf_medians`` are left in the file too).
    dosage
        (N, T) CSR float32 dosage D.
    delta_x
        (N, T) float32 |ΔX| on the node genes (or on disk: :meth:`delta_x_rows` reads either).
    qc, library_size
        (N,) float32 QC-fail flag (``total_qc``) and total counts.
    cf_row
        (N,) int64 row of ``cf_medians`` holding the cell's cfX, −1 when it has none.
    cf_medians
        (U, G) CSR float32 distinct counterfactual medians (or on disk).
    split
        (N,) ``train`` / ``val`` / ``test``.
    nodes, n_perturbed, genes
        Node names (P perturbed first), P, and gene names.
    mean_log, std_log
        (G,) training-cell statistics of log(x + 1) from the artifact.
    node_measured
        (T,) whether each node's gene is measured (all True for an artifact without the field).
    batch_codes, batch_names
        (N,) batch index of every cell and the batch names ([] and zeros without batches).
    """

    counts: sp.csr_matrix | CountsOnDisk
    dosage: sp.csr_matrix
    delta_x: np.ndarray | CountsOnDisk
    qc: np.ndarray
    library_size: np.ndarray
    cf_row: np.ndarray
    cf_medians: sp.csr_matrix | CountsOnDisk
    split: np.ndarray
    nodes: list[str]
    n_perturbed: int
    genes: list[str]
    mean_log: np.ndarray
    std_log: np.ndarray
    node_measured: np.ndarray
    batch_codes: np.ndarray
    batch_names: list[str]

    @classmethod
    def from_anndata(cls, adata: ad.AnnData, on_disk: ArtifactOnDisk | None = None) -> ArtifactCells:
        """Take the training fields of a (validated) artifact AnnData, without copying X
        (``on_disk``: the matrices :func:`~gpo_vae.preprocessing.artifact.read_artifact_on_disk`
        left in the file, for an AnnData read without them)."""
        n_nodes = len(adata.uns["nodes"])
        batch_names = [str(b) for b in adata.uns.get("batches", [])]
        if batch_names and "batch" in adata.obs.columns:
            batch_codes = pd.Index(batch_names).get_indexer(adata.obs["batch"].astype(str))
        else:
            batch_codes = np.zeros(adata.n_obs, dtype=np.int64)
        return cls(
            counts=sp.csr_matrix(adata.X, dtype=np.float32) if on_disk is None else on_disk.counts,
            dosage=sp.csr_matrix(adata.obsm["D"], dtype=np.float32),
            delta_x=np.asarray(adata.obsm["delta_x"], dtype=np.float32)
            if on_disk is None
            else on_disk.delta_x,
            qc=adata.obs["total_qc"].to_numpy(dtype=np.float32),
            library_size=adata.obs["library_size"].to_numpy(dtype=np.float32),
            cf_row=adata.obs["cf_row"].to_numpy(dtype=np.int64),
            cf_medians=(
                sp.csr_matrix(adata.uns["cf_medians"], dtype=np.float32)
                if on_disk is None
                else on_disk.cf_medians
            ),
            split=adata.obs["split"].astype(str).to_numpy(),
            nodes=[str(node) for node in adata.uns["nodes"]],
            n_perturbed=int(adata.uns["n_perturbed"]),
            genes=[str(gene) for gene in adata.var_names],
            mean_log=adata.var["mean_log"].to_numpy(dtype=np.float32),
            std_log=adata.var["std_log"].to_numpy(dtype=np.float32),
            node_measured=np.asarray(adata.uns.get("node_measured", np.ones(n_nodes)), dtype=bool),
            batch_codes=np.asarray(batch_codes, dtype=np.int64),
            batch_names=batch_names,
        )

    @classmethod
    def read(cls, artifact_dir: str | Path, counts: CountsPlace = "memory") -> ArtifactCells:
        """Read a complete artifact directory (checksum verified).

        ``counts``: ``memory`` reads the count matrix into memory; ``disk`` leaves it, ΔX and the
        counterfactual medians in the file (each batch reads its cells: memory no longer grows
        with the cells); ``auto`` is :func:`counts_place`. The batches hold the same numbers
        either way.
        """
        if counts == "auto":
            counts = counts_place(artifact_dir)
        if counts == "disk":
            adata, on_disk = read_artifact_on_disk(artifact_dir)
            return cls.from_anndata(adata, on_disk=on_disk)
        if counts != "memory":
            raise ValueError(f"counts must be 'auto', 'memory' or 'disk', got {counts!r}")
        return cls.from_anndata(read_artifact(artifact_dir))

    @property
    def n_genes(self) -> int:
        return self.counts.shape[1]

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_batches(self) -> int:
        """Batches the model conditions on (0 for a screen of one batch)."""
        return len(self.batch_names) if len(self.batch_names) > 1 else 0

    def rows(self, split: str) -> np.ndarray:
        """Artifact rows of the cells of one split."""
        return np.flatnonzero(self.split == split)

    def delta_x_rows(self, rows: np.ndarray | slice) -> np.ndarray:
        """|ΔX| of these rows, dense float32, from memory or from the file."""
        block = self.delta_x[rows]
        return block.toarray() if sp.issparse(block) else block

    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """The model's batch dict for these rows (see :mod:`gpo_vae.module.module`)."""
        rows = np.asarray(rows, dtype=np.int64)
        cf_row = self.cf_row[rows]
        if self.cf_medians.shape[0] > 0:
            # one slice for all cells; those without a counterfactual (−1) are zeroed after
            cf_x = self.cf_medians[np.maximum(cf_row, 0)].toarray()
            cf_x[cf_row < 0] = 0.0
        else:
            cf_x = np.zeros((rows.size, self.n_genes), dtype=np.float32)
        out = {
            "X": torch.from_numpy(self.counts[rows].toarray()),
            "D": torch.from_numpy(self.dosage[rows].toarray()),
            "qc": torch.from_numpy(self.qc[rows]),
            "library_size": torch.from_numpy(self.library_size[rows]),
            "delta_x": torch.from_numpy(self.delta_x_rows(rows)),
            "cf_X": torch.from_numpy(cf_x),
            # as the module's default: an all-zero cfX (no QC-fail cells) is no counterfactual
            "has_cf": torch.from_numpy(cf_x.sum(axis=1) != 0),
        }
        if self.n_batches:
            out["batch"] = torch.nn.functional.one_hot(
                torch.from_numpy(self.batch_codes[rows]), self.n_batches
            ).to(torch.float32)
        return out


@dataclass(frozen=True)
class TrainingStatistics:
    """What the model constructor needs from the training cells.

    Attributes
    ----------
    node_cell_counts
        (T,) training cells dosed with each node (0 for DEG nodes).
    qc_count
        Training cells flagged QC-fail.
    mean_log, std_log
        (G,) training-cell statistics of log(x + 1).
    """

    node_cell_counts: np.ndarray
    qc_count: int
    mean_log: np.ndarray
    std_log: np.ndarray


def training_statistics(cells: ArtifactCells) -> TrainingStatistics:
    """Plate weights and input normalisation from the ``train`` split only."""
    train = cells.rows("train")
    if train.size == 0:
        raise ValueError("the artifact has no training cells (split == 'train')")
    dosed = cells.dosage[train] != 0
    return TrainingStatistics(
        node_cell_counts=np.asarray(dosed.sum(axis=0), dtype=np.float32).ravel(),
        qc_count=int((cells.qc[train] != 0).sum()),
        mean_log=cells.mean_log,
        std_log=cells.std_log,
    )


class CellBatchSampler(Sampler[np.ndarray]):
    """Yields arrays of artifact rows, one per batch, over the cells of one split.

    With ``shuffle`` the order is a permutation drawn from ``numpy.random.default_rng([seed,
    epoch])``: a function of the seed and the epoch only (Lightning calls :meth:`set_epoch`
    before every epoch). Rows within a batch are sorted, which makes the CSR slice faster and
    changes nothing but the summation order of the batch mean.
    """

    def __init__(self, rows: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.rows.size / self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        order = self.rows
        if self.shuffle:
            order = order[np.random.default_rng([self.seed, self.epoch]).permutation(order.size)]
        for start in range(0, order.size, self.batch_size):
            yield np.sort(order[start : start + self.batch_size])


class CellBatches(Dataset):
    """A dataset whose items are whole batches: ``dataset[rows]`` is :meth:`ArtifactCells.batch`."""

    def __init__(self, cells: ArtifactCells) -> None:
        self.cells = cells

    def __len__(self) -> int:
        return self.cells.counts.shape[0]

    def __getitem__(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        return self.cells.batch(rows)


class CellDataModule(pl.LightningDataModule):
    """Train (shuffled by (seed, epoch)) and validation (in order) loaders over an artifact.

    Parameters
    ----------
    cells
        The artifact's arrays (:meth:`ArtifactCells.read`).
    batch_size, eval_batch_size
        Cells per training and per validation batch.
    seed
        Seed of the data order.
    num_workers
        DataLoader workers; batches are built in the main process when 0.
    pin_memory
        Pin batches for faster host-to-GPU copies.
    """

    def __init__(
        self,
        cells: ArtifactCells,
        batch_size: int,
        eval_batch_size: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.cells = cells
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        for split in ("train", "val"):
            if self.cells.rows(split).size == 0:
                raise ValueError(f"the artifact has no {split!r} cells; training needs both train and val")

    def statistics(self) -> TrainingStatistics:
        """:func:`training_statistics` of the artifact."""
        return training_statistics(self.cells)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        sampler = CellBatchSampler(self.cells.rows(split), batch_size, shuffle, self.seed)
        return DataLoader(
            CellBatches(self.cells),
            batch_size=None,  # the sampler's items are whole batches
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            # its own generator: creating an iterator must not advance the global torch RNG,
            # whose state the checkpoints carry
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)
