"""The cell-eval files are written a block at a time (gpo_vae.evaluation.cell_eval.CellsWriter):
the file reads back as the cells given, in cell-eval's layout, whatever the number of blocks."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gpo_vae.evaluation.cell_eval import CellsWriter, batch_share_counts, log2_normalised

GENES = pd.Index([f"G{i}" for i in range(30)])


def _counts(rng: np.random.Generator, n: int) -> sp.csr_matrix:
    dense = rng.poisson(0.7, size=(n, len(GENES))).astype(np.float32)
    dense[0] = 0  # an empty cell stays zero after normalisation
    return sp.csr_matrix(dense)


def test_blocks_written_one_at_a_time_read_back_as_one_anndata(tmp_path: Path):
    rng = np.random.default_rng(0)
    blocks = [
        ("non-targeting", "A", _counts(rng, 7)),
        ("KO1", "A", _counts(rng, 5)),
        ("KO1", "B", _counts(rng, 4)),
    ]
    with CellsWriter(tmp_path / "cells.h5ad", GENES, 1e4, "predicted") as writer:
        for label, batch, counts in blocks:
            writer.add(counts, label, batch)
        writer.add(sp.csr_matrix((0, len(GENES))), "KO2", "A")  # nothing to write
    adata = ad.read_h5ad(tmp_path / "cells.h5ad")
    counts = sp.vstack([block for _, _, block in blocks])
    assert adata.shape == (16, len(GENES)) and list(adata.var_names) == list(GENES)
    assert (adata.layers["counts"] != counts).nnz == 0
    assert np.allclose(adata.X.toarray(), log2_normalised(counts, 1e4).toarray())
    assert list(adata.obs["target_gene"]) == ["non-targeting"] * 7 + ["KO1"] * 9
    assert (adata.obs["perturbation"] == adata.obs["target_gene"]).all()
    assert list(adata.obs["batch"]) == ["A"] * 12 + ["B"] * 4
    assert adata.uns["gpo_vae"]["target_sum"] == 1e4 and adata.obs_names.is_unique


def test_an_empty_writer_writes_an_empty_file_and_a_wrong_block_is_refused(tmp_path: Path):
    with CellsWriter(tmp_path / "none.h5ad", GENES, 100.0, "real"):
        pass
    assert ad.read_h5ad(tmp_path / "none.h5ad").shape == (0, len(GENES))
    with pytest.raises(ValueError, match="5 genes in a block of a file of 30 genes"):
        with CellsWriter(tmp_path / "bad.h5ad", GENES, 100.0, "real") as writer:
            writer.add(np.ones((2, 5)), "KO1")


@pytest.mark.parametrize(
    ("n", "shares", "expected"),
    [
        (10, [0.5, 0.5], [5, 5]),
        (10, [1 / 3, 1 / 3, 1 / 3], [4, 3, 3]),
        (7, [0.0, 1.0], [0, 7]),
        (10, [0.66, 0.34], [7, 3]),
    ],
)
def test_batch_share_counts_split_the_cells_in_the_shares_and_sum_to_them(n, shares, expected):
    counts = batch_share_counts(n, np.array(shares))
    assert list(counts) == expected and counts.sum() == n
