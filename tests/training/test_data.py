"""Batches from the sparse artifact, the (seed, epoch) order and the training statistics."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gpo_vae.preprocessing.artifact import read_artifact
from gpo_vae.training.data import (
    ArtifactCells,
    CellBatchSampler,
    CellDataModule,
    training_statistics,
)


@pytest.fixture(scope="module")
def adata(artifact_dir):
    return read_artifact(artifact_dir)


@pytest.fixture(scope="module")
def cells(adata):
    return ArtifactCells.from_anndata(adata)


def test_batch_matches_the_artifact_rows(adata, cells):
    rows = np.flatnonzero(cells.split == "val")[:300]
    batch = cells.batch(rows)
    n_genes, n_nodes = adata.n_vars, len(adata.uns["nodes"])
    expected_shapes = {
        "X": (300, n_genes),
        "D": (300, n_nodes),
        "qc": (300,),
        "library_size": (300,),
        "delta_x": (300, n_nodes),
        "cf_X": (300, n_genes),
        "has_cf": (300,),
    }
    assert {key: tuple(value.shape) for key, value in batch.items()} == expected_shapes
    for key, value in batch.items():
        assert value.dtype == (torch.bool if key == "has_cf" else torch.float32), key
    np.testing.assert_array_equal(batch["X"].numpy(), adata.X[rows].toarray())
    np.testing.assert_array_equal(batch["D"].numpy(), adata.obsm["D"][rows].toarray())
    np.testing.assert_array_equal(batch["delta_x"].numpy(), adata.obsm["delta_x"][rows])
    np.testing.assert_array_equal(batch["qc"].numpy(), adata.obs["total_qc"].to_numpy()[rows])
    np.testing.assert_array_equal(batch["library_size"].numpy(), adata.obs["library_size"].to_numpy()[rows])
    cf_row = adata.obs["cf_row"].to_numpy()[rows]
    medians = adata.uns["cf_medians"]
    assert (cf_row >= 0).any() and sp.issparse(medians)
    for i, row in enumerate(cf_row):
        expected = medians[row].toarray().ravel() if row >= 0 else np.zeros(n_genes, dtype=np.float32)
        np.testing.assert_array_equal(batch["cf_X"][i].numpy(), expected)
    np.testing.assert_array_equal(batch["has_cf"].numpy(), batch["cf_X"].sum(1).numpy() != 0)


def test_only_batches_are_densified(cells):
    assert sp.issparse(cells.counts) and sp.issparse(cells.cf_medians) and sp.issparse(cells.dosage)
    loader = CellDataModule(cells, batch_size=64).train_dataloader()
    dense_copy = cells.counts.shape[0] * cells.n_genes * 4
    tracemalloc.start()
    try:
        for batch in loader:
            assert batch["X"].shape[0] <= 64
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # X and cfX of a 64-cell batch are 2 × 0.3 MB; an N × G copy of X alone would be ~28 MB
    assert peak < dense_copy / 8, (peak, dense_copy)


@pytest.mark.parametrize("split", ["train", "val"])
def test_loaders_cover_exactly_their_split(cells, split):
    module = CellDataModule(cells, batch_size=256, eval_batch_size=200)
    loader = module.train_dataloader() if split == "train" else module.val_dataloader()
    rows = list(loader.sampler)
    seen = np.concatenate(rows)
    np.testing.assert_array_equal(np.sort(seen), cells.rows(split))  # each cell of the split once
    assert len(rows) == len(loader) == -(-cells.rows(split).size // (256 if split == "train" else 200))
    first = next(iter(loader))
    np.testing.assert_array_equal(first["X"].numpy(), cells.counts[rows[0]].toarray())


def test_order_is_a_function_of_seed_and_epoch():
    rows = np.arange(1000, 2000)

    def order(seed, epoch, visited_before=()):
        sampler = CellBatchSampler(rows, 64, shuffle=True, seed=seed)
        for earlier in visited_before:  # epochs iterated before must not matter
            sampler.set_epoch(earlier)
            list(sampler)
        sampler.set_epoch(epoch)
        return np.concatenate(list(sampler))

    np.testing.assert_array_equal(order(0, 3), order(0, 3, visited_before=(0, 1, 2)))
    assert not np.array_equal(order(0, 3), order(0, 4))
    assert not np.array_equal(order(0, 3), order(1, 3))
    assert not np.array_equal(order(0, 0), rows)
    assert all(np.all(np.diff(b) > 0) for b in CellBatchSampler(rows, 64, shuffle=True))
    unshuffled = CellBatchSampler(rows, 64, shuffle=False)
    np.testing.assert_array_equal(np.concatenate(list(unshuffled)), rows)


def test_training_statistics_use_training_cells_only(adata, cells):
    train = (adata.obs["split"] == "train").to_numpy()
    stats = training_statistics(cells)
    dosage = adata.obsm["D"].toarray()
    n_perturbed = int(adata.uns["n_perturbed"])
    np.testing.assert_array_equal(stats.node_cell_counts, (dosage[train] != 0).sum(0))
    assert not np.array_equal(stats.node_cell_counts, (dosage != 0).sum(0))
    assert np.all(stats.node_cell_counts[n_perturbed:] == 0) and np.all(
        stats.node_cell_counts[:n_perturbed] > 0
    )
    assert stats.qc_count == int(adata.obs["total_qc"].to_numpy()[train].sum()) > 0
    log_counts = np.log1p(adata.X.toarray())
    np.testing.assert_allclose(stats.mean_log, log_counts[train].mean(0), atol=1e-4)
    np.testing.assert_allclose(stats.std_log, log_counts[train].std(0, ddof=1), atol=1e-3)
    assert np.abs(log_counts.mean(0) - stats.mean_log).max() > 1e-3

    # rewriting every held-out cell (dosed with every node, QC-fail) changes nothing
    altered = adata.copy()
    altered.obs.loc[~train, "total_qc"] = 1
    altered_dosage = dosage.copy()
    altered_dosage[~train] = 1.0
    altered.obsm["D"] = sp.csr_matrix(altered_dosage)
    again = training_statistics(ArtifactCells.from_anndata(altered))
    np.testing.assert_array_equal(again.node_cell_counts, stats.node_cell_counts)
    assert again.qc_count == stats.qc_count


def test_training_needs_train_and_val_cells(adata):
    no_val = adata.copy()
    no_val.obs["split"] = no_val.obs["split"].astype(str).replace("val", "test")
    with pytest.raises(ValueError, match="no 'val' cells"):
        CellDataModule(ArtifactCells.from_anndata(no_val), batch_size=128)
