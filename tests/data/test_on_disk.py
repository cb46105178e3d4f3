"""Counts left on disk: the same contract, rows and filters as the in-memory read, a block at a time."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gpo_vae.data.contract import DataContractError, read_counts_h5ad
from gpo_vae.data.contract_on_disk import open_counts_h5ad
from gpo_vae.data.layout import ScreenLayout
from gpo_vae.data.on_disk import CountsOnDisk
from gpo_vae.io import FileMemo
from gpo_vae.preprocessing.filtering import perturbation_filter_mask
from gpo_vae.preprocessing.normalize import library_size

GENES = ["GENE1", "GENE2", "GENE3", "MT-CO1", "RPS3", "HBB"]


def _screen(n_cells: int = 300, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = rng.poisson(2.0, size=(n_cells, len(GENES))).astype(np.float32)
    labels = rng.choice(["NT", "GENE1", "GENE2", "GENE3", "GENE1+GENE2"], size=n_cells)
    X[labels == "GENE1", 0] = 0  # knocked down: the on-target filter keeps these
    obs = pd.DataFrame(
        {"target": labels, "lane": rng.choice(["a", "b"], size=n_cells)},
        index=[f"c{i}" for i in range(n_cells)],
    )
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=GENES))


def _layout(**options) -> ScreenLayout:
    return ScreenLayout(**{"perturbation_key": "target", "control_label": "NT", **options})


def _saved(kind: str, tmp_path) -> tuple[str, ScreenLayout]:
    """The screen saved as other tools save them."""
    screen = _screen()
    layout = _layout(batch_key="lane")
    if kind == "dense":
        screen.X = screen.X.toarray()
    elif kind == "layer":
        screen.layers["counts"] = screen.X.copy()
        screen.X = sp.csr_matrix(np.log1p(screen.X.toarray()))
    elif kind == "raw":
        screen.raw = screen.copy()
        screen.X = sp.csr_matrix(np.log1p(screen.X.toarray()))
    elif kind in ("duplicates_sum", "duplicates_first"):
        screen.var_names = ["GENE1", "GENE2", "GENE3", "MT-CO1", "GENE3", "HBB"]
        layout = _layout(duplicate_genes=kind.split("_")[1])
    elif kind == "int_counts":
        screen.X = sp.csr_matrix(screen.X.toarray().astype(np.int64))
    path = tmp_path / f"{kind}.h5ad"
    screen.write_h5ad(path)
    return str(path), layout


@pytest.mark.parametrize(
    "kind", ["csr", "dense", "layer", "raw", "duplicates_sum", "duplicates_first", "int_counts"]
)
def test_the_contract_on_disk_equals_the_contract_in_memory(tmp_path, kind):
    path, layout = _saved(kind, tmp_path)
    memory = read_counts_h5ad(path, layout)
    shell, counts = open_counts_h5ad(path, layout)
    assert shell.X is None and counts.shape == memory.shape
    pd.testing.assert_frame_equal(shell.obs, memory.obs)
    pd.testing.assert_frame_equal(shell.var, memory.var)
    assert shell.uns["layout"] == memory.uns["layout"]
    assert shell.uns["layout_record"] == memory.uns["layout_record"]
    disk = counts.to_memory()
    assert disk.dtype == np.float32 and (disk != memory.X).nnz == 0


def test_rows_are_read_by_slice_by_index_and_in_blocks(tmp_path):
    path, layout = _saved("dense", tmp_path)  # a dense element: h5py reads, runs split on gaps
    memory = read_counts_h5ad(path, layout).X.toarray()
    _, counts = open_counts_h5ad(path, layout)
    assert np.array_equal(counts[10:20].toarray(), memory[10:20])
    index = np.array([299, 3, 3, 0, -1, 150])  # unsorted, repeated, negative; far apart
    assert np.array_equal(counts[index].toarray(), memory[index])
    kept = np.arange(300) % 7 != 0
    sub = counts.subset(kept)
    assert np.array_equal(sub.to_memory().toarray(), memory[kept])
    assert np.array_equal(sub.subset(np.array([0, 5]))[0:2].toarray(), memory[kept][[0, 5]])
    small = CountsOnDisk(counts.path, counts.element, rows=sub.rows, block_cells=37)
    blocks = list(small.row_blocks())
    assert [b[0] for b in blocks] == list(range(0, sub.shape[0], 37))
    assert np.array_equal(sp.vstack([b[2] for b in blocks]).toarray(), memory[kept])
    np.testing.assert_array_equal(library_size(small), memory[kept].sum(axis=1))
    with pytest.raises(TypeError, match="read by rows"):
        counts[0:2, 0]


def test_library_size_sums_each_row_in_float64_with_empty_rows_anywhere():
    rng = np.random.default_rng(5)
    dense = rng.poisson(1.5, size=(40, 9)).astype(np.float32)
    dense[[0, 7, 8, 39]] = 0  # empty rows first, in a run, last
    X = sp.csr_matrix(dense)
    X.data[::5] = 0  # stored zeros
    np.testing.assert_array_equal(library_size(X), X.toarray().sum(axis=1, dtype=np.float64))
    fractional = sp.csr_matrix(rng.random((6, 5000)).astype(np.float32))  # float32 would round
    expected = [np.sum(row.data, dtype=np.float64) for row in fractional]
    np.testing.assert_allclose(library_size(fractional), expected, rtol=1e-12)
    assert library_size(sp.csr_matrix((3, 4), dtype=np.float32)).tolist() == [0.0, 0.0, 0.0]


def test_a_column_major_file_is_read_whole_with_a_warning_and_normalised_values_stop(tmp_path, caplog):
    screen = _screen()
    screen.X = sp.csc_matrix(screen.X)
    screen.write_h5ad(tmp_path / "csc.h5ad")
    _, counts = open_counts_h5ad(tmp_path / "csc.h5ad", _layout())
    assert "CSC" in caplog.text and "adata.X = adata.X.tocsr()" in caplog.text
    assert (counts.subset(np.arange(300) % 2 == 0).to_memory() != screen.X.tocsr()[::2]).nnz == 0
    counts.subset(np.arange(10)).with_fields(block_cells=3).subset(np.array([1, 2]))
    assert sum("CSC" in r.message for r in caplog.records) == 1  # read once, not again per view
    with pytest.raises(ValueError, match="increasing"):
        counts.subset(np.array([5, 2]))
    screen.X = sp.csc_matrix(screen.X.toarray() / 3.0)  # column-major and normalised: the row named
    screen.write_h5ad(tmp_path / "csc_normalised.h5ad")
    with pytest.raises(DataContractError) as memory:
        read_counts_h5ad(tmp_path / "csc_normalised.h5ad", _layout())
    with pytest.raises(DataContractError) as disk:
        open_counts_h5ad(tmp_path / "csc_normalised.h5ad", _layout())
    assert str(disk.value) == str(memory.value)
    screen = _screen()
    screen.X = sp.csr_matrix(screen.X.toarray() / 3.0)
    path = tmp_path / "normalised.h5ad"
    screen.write_h5ad(path)
    with pytest.raises(DataContractError) as memory:
        read_counts_h5ad(path, _layout())
    with pytest.raises(DataContractError) as disk:
        open_counts_h5ad(path, _layout())
    assert str(disk.value) == str(memory.value) and "cell 'c" in str(disk.value)


def test_the_perturbation_filters_read_on_disk_keep_the_same_cells(tmp_path):
    path, layout = _saved("csr", tmp_path)
    memory = read_counts_h5ad(path, layout)
    shell, counts = open_counts_h5ad(path, layout)
    small = CountsOnDisk(counts.path, counts.element, block_cells=16)  # many blocks
    config = {"min_cells": 5, "min_filtered_cells": 1, "min_perturbations": 1, "knockdown_percentile": 30.0}
    mask, records, table = perturbation_filter_mask(memory, None, config)
    mask_disk, records_disk, table_disk = perturbation_filter_mask(shell, None, config, counts=small)
    np.testing.assert_array_equal(mask, mask_disk)
    assert records == records_disk
    pd.testing.assert_frame_equal(table, table_disk)
    assert 0 < mask.sum() < mask.size  # the on-target filter dropped some cells: it read counts


def test_rows_by_group_in_memory_and_on_disk_give_the_same_groups(tmp_path):
    from gpo_vae.data.on_disk import rows_by_group

    rng = np.random.default_rng(0)
    X = sp.random(500, 30, density=0.3, format="csr", dtype=np.float32, random_state=1)
    codes = rng.integers(-1, 7, 500)  # -1: skipped
    ad.AnnData(X=X).write_h5ad(tmp_path / "a.h5ad")
    memory = list(rows_by_group(X, codes))
    # batches of at most 150 cells, read in blocks of 64: several batches, groups never split
    disk = list(rows_by_group(CountsOnDisk(tmp_path / "a.h5ad", block_cells=64), codes, 150, tmp_path))
    assert [c for c, _, _ in memory] == [c for c, _, _ in disk] == list(range(7))
    for (code, positions, rows), (_, disk_positions, disk_rows) in zip(memory, disk, strict=True):
        np.testing.assert_array_equal(positions, np.flatnonzero(codes == code))
        np.testing.assert_array_equal(disk_positions, positions)
        assert (rows != disk_rows).nnz == 0
    assert [p.name for p in tmp_path.iterdir()] == ["a.h5ad"]  # the grouped copy is gone


def test_rows_by_group_checks_the_space_for_its_copy_first(tmp_path, monkeypatch):
    import shutil

    from gpo_vae.data.on_disk import rows_by_group
    from gpo_vae.io import OutputSpaceError

    ad.AnnData(X=sp.random(100, 10, density=0.5, format="csr", dtype=np.float32)).write_h5ad(
        tmp_path / "a.h5ad"
    )
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(OutputSpaceError, match="the counts grouped by perturbation"):
        next(rows_by_group(CountsOnDisk(tmp_path / "a.h5ad"), np.zeros(100, int), scratch_dir=tmp_path))


def test_a_screen_opened_again_unchanged_is_not_read_or_checked_again(tmp_path, monkeypatch):
    """The statistics and preprocessing stages of one run open the same screen: its labels and
    every stored count are checked once; each caller gets its own copy; a rewritten file or
    another layout is read again."""
    from gpo_vae.data import contract_on_disk

    path, layout = _saved("csr", tmp_path)
    reads = []
    real = contract_on_disk._open_counts_h5ad
    monkeypatch.setattr(contract_on_disk, "_open_counts_h5ad", lambda *a: reads.append(a) or real(*a))
    monkeypatch.setattr(contract_on_disk, "_OPENED", FileMemo(max_files=1))
    first, counts = open_counts_h5ad(path, layout)
    first.obs["target"] = "changed"  # a caller's edits stay its own
    second, again = open_counts_h5ad(path, layout)
    assert len(reads) == 1 and again is counts
    pd.testing.assert_frame_equal(second.obs, open_counts_h5ad(path, layout)[0].obs)
    assert (second.obs["target"] != "changed").all()
    # the layout as resolved (what the preprocessing stage is given) reads nothing, and the
    # same as reading with it would
    resolved = ScreenLayout.from_dict(first.uns["layout"])
    assert resolved != layout
    shared, _ = open_counts_h5ad(path, resolved)
    fresh, _ = real(Path(path), resolved)
    assert len(reads) == 1
    pd.testing.assert_frame_equal(shared.obs, fresh.obs)
    pd.testing.assert_frame_equal(shared.var, fresh.var)
    assert shared.uns["layout"] == fresh.uns["layout"]
    assert shared.uns["layout_record"] == fresh.uns["layout_record"]
    open_counts_h5ad(path, _layout())  # another layout (no batch column)
    assert len(reads) == 2
    screen = _screen(seed=1)
    screen.write_h5ad(path)  # the same path rewritten
    _, counts = open_counts_h5ad(path, layout)
    assert len(reads) == 3
    assert (counts.to_memory() != sp.csr_matrix(screen.X)).nnz == 0


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_csr_rows_are_read_as_slices_of_their_values(tmp_path, dtype):
    """Scattered, consecutive, repeated and empty rows of a CSR element, and its last row: each
    read equals the in-memory rows (only the rows' own values are read)."""
    rng = np.random.default_rng(3)
    X = sp.random(
        500, 40, density=0.1, format="csr", random_state=4, data_rvs=lambda n: rng.integers(1, 9, n)
    )
    X = sp.csr_matrix(X.astype(dtype))
    keep = np.ones(500, dtype=np.float32)
    keep[10:20] = 0  # empty rows, between and among the read ones
    X = sp.csr_matrix(sp.diags(keep) @ X, dtype=dtype)
    X.eliminate_zeros()
    ad.AnnData(X=X).write_h5ad(tmp_path / "csr.h5ad")
    counts = CountsOnDisk(tmp_path / "csr.h5ad", "X")
    dense = X.toarray().astype(np.float32)
    for rows in (
        np.array([0, 1, 2, 9, 10, 11, 20, 499]),
        np.sort(rng.choice(500, 64, replace=False)),
        np.array([499, 3, 3, 12, 0]),
        np.arange(10, 20),
    ):
        block = counts[rows]
        assert block.dtype == np.float32 and block.has_sorted_indices
        np.testing.assert_array_equal(block.toarray(), dense[rows])
    np.testing.assert_array_equal(counts[100:350].toarray(), dense[100:350])
    np.testing.assert_array_equal(counts.with_fields(block_cells=7).to_memory().toarray(), dense)


def test_appended_and_wide_csr_elements_store_32_bit_columns_and_read_back_equal(tmp_path, monkeypatch):
    """A CSR element written a block at a time (the simulator's counts, the artifact's X when its
    values could pass 2³¹) has 64-bit row pointers and 32-bit column indices: 8 bytes a value,
    not 12, and the same rows as the matrix appended."""
    import h5py

    from gpo_vae.data import on_disk
    from gpo_vae.data.on_disk import CsrAppender, write_counts

    X = sp.random(700, 30, density=0.2, format="csr", random_state=5, dtype=np.float32)
    with h5py.File(tmp_path / "appended.h5ad", "w") as file:
        writer = CsrAppender(file, "X", 30)
        for start in range(0, 700, 256):
            writer.append(X[start : start + 256])
        counts = writer.finish()
        assert file["X/indptr"].dtype == np.int64 and file["X/indices"].dtype == np.int32
    assert (counts.to_memory() != X).nnz == 0
    monkeypatch.setattr(on_disk, "stored_values", lambda _: np.iinfo(np.int32).max)  # "wide"
    with h5py.File(tmp_path / "wide.h5ad", "w") as file:
        write_counts(file, "X", X, block_cells=256)
        assert file["X/indptr"].dtype == np.int64 and file["X/indices"].dtype == np.int32
    assert (CountsOnDisk(tmp_path / "wide.h5ad", "X").to_memory() != X).nnz == 0
