"""Predicted, baseline and real test cells in the layout of cell-eval (the Virtual Cell
Challenge's evaluator), written to disk a block at a time.

- ``predictions.h5ad``: the generated cells of every test perturbation and the generated
  controls, by default every cell the evaluation scored;
- ``baseline_predictions.h5ad``: the training-mean baseline in the same layout, each test
  perturbation's training cells and the training controls (its pseudobulk shift is the
  baseline's ATE); written when every test perturbation has training cells;
- ``real_test.h5ad``: the artifact's test cells of the same perturbations and its test controls.

They share the genes and the perturbation column, so::

    cell-eval run -ap predictions.h5ad -ar real_test.h5ad --control-pert non-targeting
    cell-eval run -ap baseline_predictions.h5ad -ar real_test.h5ad --control-pert non-targeting

score the model and the baseline with no conversion (``obs["target_gene"]`` is cell-eval's
default column; ``obs["perturbation"]`` holds the same labels under our name).

``X`` is ``log2(1 + target_sum·x/library)``, the scale of our ATE (``run.json`` records
``target_sum``), so on a screen without batches cell-eval's ``pearson_delta`` of a perturbation
is our held-out ATE Pearson of the model (every scored cell exported) and of the training mean.
With batches our ATE compares each batch with its own controls, while cell-eval pools a label's
cells: the generated cells of a label are exported in its test cells' batch shares, so the two
agree closely, not exactly. The raw counts are in ``layers["counts"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import sparse_dataset, write_elem

from gpo_vae.data.on_disk import BLOCK_CELLS, rows_by_group
from gpo_vae.evaluation.prediction import EvaluationData
from gpo_vae.preprocessing.normalize import library_size, on_disk

PREDICTIONS_FILE = "predictions.h5ad"
BASELINE_FILE = "baseline_predictions.h5ad"
REAL_TEST_FILE = "real_test.h5ad"
#: cell-eval's default perturbation column, and ours.
CELL_EVAL_KEY, PERTURBATION_KEY = "target_gene", "perturbation"
#: Elements per HDF5 chunk of the appended arrays, between these bounds (64 kB to 4 MB of
#: float32): the first block's size, so a small file is not padded to large chunks on disk and a
#: big export is not cut into millions of them.
_CHUNK_BOUNDS = (1 << 14, 1 << 20)


def log2_normalised(counts: sp.csr_matrix, target_sum: float) -> sp.csr_matrix:
    """``log2(1 + target_sum·x/library)`` of CSR counts, CSR float32 (an empty cell stays zero)."""
    counts = sp.csr_matrix(counts, dtype=np.float64)
    lib = library_size(counts)
    scale = np.divide(target_sum, lib, out=np.zeros_like(lib, dtype=np.float64), where=lib > 0)
    out = sp.diags(scale) @ counts
    out.data = np.log2(1.0 + out.data)
    return sp.csr_matrix(out, dtype=np.float32)


class CellsWriter:
    """An ``.h5ad`` of cells in cell-eval's layout, appended a block of cells at a time.

    Memory holds one block, never the file: ``X`` (log-normalised) and ``layers["counts"]`` grow
    on disk, gzip-compressed (anndata and cell-eval read it as any ``.h5ad``), as blocks are added; ``obs``, ``var`` and ``uns`` are written on :meth:`close`. Use
    it as a context manager: a block that fails leaves a file the caller's temporary folder
    discards, never one a reader takes as complete.
    """

    def __init__(self, path: str | Path, genes: pd.Index, target_sum: float, kind: str) -> None:
        self.path = Path(path)
        self.genes = pd.Index(genes).astype(str)
        self.target_sum = float(target_sum)
        self.kind = kind
        self._labels: list[np.ndarray] = []
        self._batches: list[np.ndarray] = []
        self._file = h5py.File(self.path, "w")
        write_elem(self._file, "layers", {})  # the group with its encoding, before its first matrix
        self._matrices: dict[str, object] = {}

    def __enter__(self) -> CellsWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Close the file unfinished (a failed export: the caller discards it)."""
        self._file.close()

    @property
    def n_cells(self) -> int:
        return int(sum(labels.size for labels in self._labels))

    def add(self, counts: sp.spmatrix | np.ndarray, label: str, batch: str | None = None) -> None:
        """Append cells (raw counts, cells × the writer's genes) of one label (and batch)."""
        counts = sp.csr_matrix(counts, dtype=np.float32)
        if counts.shape[1] != len(self.genes):
            raise ValueError(f"{counts.shape[1]} genes in a block of a file of {len(self.genes)} genes")
        if counts.shape[0] == 0:
            return
        for key, block in (("X", log2_normalised(counts, self.target_sum)), ("layers/counts", counts)):
            if key in self._matrices:
                self._matrices[key].append(block)
            else:
                chunk = int(np.clip(block.nnz, *_CHUNK_BOUNDS))
                # gzip level 1: 3.5x smaller (461 to 130 MB on the demo) for 3 s more; any HDF5 reader has it
                options = {"chunks": (chunk,), "compression": "gzip", "compression_opts": 1}
                write_elem(self._file, key, block, dataset_kwargs=options)
                self._matrices[key] = sparse_dataset(self._file[key])
        self._labels.append(np.full(counts.shape[0], label, dtype=object))
        self._batches.append(np.full(counts.shape[0], batch, dtype=object))

    def close(self) -> Path:
        """Write ``obs``, ``var`` and ``uns`` and close the file (an empty writer writes 0 cells)."""
        if "X" not in self._matrices:
            self._labels, self._batches = [], []
            empty = sp.csr_matrix((0, len(self.genes)), dtype=np.float32)
            write_elem(self._file, "X", empty)
            write_elem(self._file, "layers/counts", empty)
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, dtype=object)
        batches = np.concatenate(self._batches) if self._batches else np.zeros(0, dtype=object)
        obs = pd.DataFrame(
            {PERTURBATION_KEY: pd.Categorical(labels, categories=list(dict.fromkeys(labels.tolist())))}
        )
        obs[CELL_EVAL_KEY] = obs[PERTURBATION_KEY]
        if any(batch is not None for batch in batches):
            obs["batch"] = pd.Categorical(batches.astype(str))
        obs.index = [f"{self.kind}_{i}" for i in range(len(obs))]
        write_elem(self._file, "obs", obs)
        write_elem(self._file, "var", pd.DataFrame(index=self.genes))
        uns = {
            "cells": self.kind,
            "X": f"log2(1 + x * {self.target_sum:g} / library)",
            "target_sum": self.target_sum,
            "counts_layer": "counts",
        }
        write_elem(self._file, "uns", {"gpo_vae": uns})
        for group in ("obsm", "varm", "obsp", "varp"):  # empty, as anndata writes them
            write_elem(self._file, group, {})
        self._file.attrs["encoding-type"] = "anndata"
        self._file.attrs["encoding-version"] = "0.1.0"
        self._file.close()
        return self.path


def write_label_cells(
    path: Path,
    counts: sp.csr_matrix,
    labels: np.ndarray,
    rows: np.ndarray,
    order: Sequence[str],
    genes: pd.Index,
    target_sum: float,
    kind: str,
    batches: np.ndarray | None = None,
) -> pd.Series:
    """Write the cells of ``rows`` whose label is in ``order``, a label (and batch) a block, in
    that order; returns the cells written per label. Counts on disk are first copied grouped by
    label (:func:`~gpo_vae.data.on_disk.rows_by_group`, a scratch file beside ``path``), so each
    label is read back whole rather than row by row; memory holds one batch of labels."""
    names = labels[rows]
    written = {}
    groups: list[tuple[str, str | None]] = []
    codes = np.full(counts.shape[0], -1, dtype=np.int64)
    for label in order:
        mine = rows[names == label]
        written[label] = mine.size
        for batch in [None] if batches is None else list(dict.fromkeys(batches[mine].tolist())):
            block = mine if batch is None else mine[batches[mine] == batch]
            if block.size:
                codes[block] = len(groups)
                groups.append((label, batch))
    if on_disk(counts):  # only the chosen rows are copied
        chosen = np.flatnonzero(codes >= 0)
        counts, codes = counts.subset(chosen), codes[chosen]
    grouped = rows_by_group(counts, codes, scratch_dir=path.parent)
    with CellsWriter(path, genes, target_sum, kind) as writer:
        for code, _, block in grouped:
            label, batch = groups[code]
            # a label of many cells (the controls) is written a block of cells at a time
            for start in range(0, block.shape[0], BLOCK_CELLS):
                writer.add(block[start : start + BLOCK_CELLS], label, batch)
    return pd.Series(written, dtype=int)


def write_real_test_cells(data: EvaluationData, perturbations: Sequence[str], path: Path) -> pd.Series:
    """``real_test.h5ad``: the test cells of ``perturbations`` and the test controls; returns the
    cells per label."""
    return write_label_cells(
        path,
        data.cells.counts,
        data.labels,
        data.cells.rows("test"),
        [*perturbations, data.control_label],
        data.genes,
        data.target_sum,
        "real",
        data.batches,
    )


def write_baseline_cells(data: EvaluationData, perturbations: Sequence[str], path: Path) -> bool:
    """``baseline_predictions.h5ad``: each perturbation's training cells and the training controls,
    whose pseudobulk shift is the training-mean baseline. Written only when every perturbation
    has training cells (cell-eval scores a file holding every real label); returns whether it was."""
    train = data.cells.rows("train")
    order = [*perturbations, data.control_label]
    if not set(order) <= set(data.labels[train].tolist()):
        return False
    write_label_cells(
        path,
        data.cells.counts,
        data.labels,
        train,
        order,
        data.genes,
        data.target_sum,
        "baseline",
        data.batches,
    )
    return True


def batch_share_counts(n_cells: int, shares: np.ndarray) -> np.ndarray:
    """``n_cells`` split over batches in ``shares`` (largest remainders: the counts sum to
    ``n_cells`` when the shares sum to 1)."""
    exact = np.asarray(shares, dtype=np.float64) * n_cells
    counts = np.floor(exact).astype(int)
    left = round(exact.sum()) - int(counts.sum())
    if left > 0:
        counts[np.argsort(-(exact - counts), kind="stable")[:left]] += 1
    return counts


class PredictionExport:
    """The cell-eval files of one evaluation: generated cells streamed into ``predictions.h5ad``
    as the evaluation makes them (:meth:`add_generated` is
    :func:`~gpo_vae.evaluation.generation.generate_and_summarise`'s ``export``), then
    :meth:`finish` writes the real test cells and the training-mean baseline.

    ``cells`` per label are exported (None: every cell the evaluation generates, ``n_generated``);
    with batches a label's cells are taken from each batch in its test cells' shares.
    """

    def __init__(
        self,
        data: EvaluationData,
        perturbations: Sequence[str],
        cells: int | None,
        n_generated: int,
        out: Path,
    ) -> None:
        self.data, self.out = data, Path(out)
        self.perturbations = list(perturbations)
        self.cells = n_generated if cells is None else min(int(cells), n_generated)
        self.n_generated = n_generated
        labels = [*self.perturbations, data.control_label]
        shares = data.test_batch_shares(labels)
        self._per_batch = None
        if shares is not None:
            self._per_batch = {
                label: batch_share_counts(self.cells, shares.loc[label].fillna(0.0).to_numpy())
                for label in labels
            }
        self.writer = CellsWriter(self.out / PREDICTIONS_FILE, data.genes, data.target_sum, "predicted")

    def add_generated(self, label: str, batch: int | None, counts: sp.csr_matrix) -> None:
        """Write the first of a generated block's cells (its label's share, for a batch)."""
        take = self.cells if batch is None or self._per_batch is None else int(self._per_batch[label][batch])
        name = None if batch is None else self.data.cells.batch_names[batch]
        self.writer.add(counts[:take], label, name)

    def abort(self) -> None:
        """Close the file of a failed evaluation (its temporary folder is discarded)."""
        self.writer.abort()

    def finish(self) -> dict[str, object]:
        """Close ``predictions.h5ad``, write ``real_test.h5ad`` and (when every test label has
        training cells) ``baseline_predictions.h5ad``; return what was exported, for ``run.json``."""
        self.writer.close()
        real = write_real_test_cells(self.data, self.perturbations, self.out / REAL_TEST_FILE)
        files = [PREDICTIONS_FILE, REAL_TEST_FILE]
        if write_baseline_cells(self.data, self.perturbations, self.out / BASELINE_FILE):
            files.insert(1, BASELINE_FILE)
        sizes = {name: (self.out / name).stat().st_size for name in files}
        return {
            "cells_per_label": self.cells,
            "scored_cells_per_label": self.n_generated,
            "predicted_cells": self.writer.n_cells,
            "real_test_cells": int(real.sum()),
            "files": files,
            "bytes": sizes,
            # what exporting every scored cell would take, from the bytes per exported cell
            "predictions_bytes_all_cells": round(
                sizes[PREDICTIONS_FILE] * self.n_generated / max(self.cells, 1)
            ),
        }


__all__ = [
    "BASELINE_FILE",
    "CELL_EVAL_KEY",
    "PREDICTIONS_FILE",
    "REAL_TEST_FILE",
    "CellsWriter",
    "PredictionExport",
    "batch_share_counts",
    "log2_normalised",
    "write_baseline_cells",
    "write_label_cells",
    "write_real_test_cells",
]
