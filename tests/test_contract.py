"""The raw-data contract: a user's counts file is read into it or rejected with the file and the fix."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gpo_vae.data.contract import CONTROL_LABEL, DataContractError, read_counts_h5ad


def _screen(n_cells: int = 12, labels=None, X=None, var_names=None) -> ad.AnnData:
    rng = np.random.default_rng(0)
    X = sp.csr_matrix(rng.poisson(2.0, size=(n_cells, 5)).astype(np.float32)) if X is None else X
    labels = labels if labels is not None else ["NT"] * 4 + ["GENE1"] * 4 + ["GENE2"] * 4
    obs = pd.DataFrame({"target": labels}, index=[f"c{i}" for i in range(n_cells)])
    var = pd.DataFrame(index=var_names or ["GENE1", "GENE2", "MT-CO1", "RPS3", "HBB"])
    return ad.AnnData(X=X, obs=obs, var=var)


def _write(adata: ad.AnnData, tmp_path) -> str:
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    return str(path)


def test_own_columns_and_control_label_are_normalised(tmp_path):
    path = _write(_screen(), tmp_path)
    adata = read_counts_h5ad(path, perturbation_key="target", control_label="NT")
    assert (adata.obs["gene"] == CONTROL_LABEL).sum() == 4
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32


def test_ensembl_index_with_gene_names_becomes_symbols(tmp_path):
    screen = _screen(var_names=[f"ENSG0000000000{i}" for i in range(5)])
    screen.var["gene_name"] = ["GENE1", "GENE2", "MT-CO1", "RPS3", "HBB"]
    adata = read_counts_h5ad(_write(screen, tmp_path), "target", "NT")
    assert list(adata.var_names) == ["GENE1", "GENE2", "MT-CO1", "RPS3", "HBB"]
    assert adata.var["gene_id"].iloc[0] == "ENSG00000000000"


@pytest.mark.parametrize(
    ("screen", "key", "control", "message"),
    [
        (_screen(), "gene", "NT", "obs has no column 'gene'.*--perturbation-key"),
        (_screen(), "target", "non-targeting", "no control cells.*'NT'.*--control-label"),
        (_screen(labels=["NT"] * 12), "target", "NT", "every cell is a control"),
        (
            _screen(X=sp.csr_matrix(np.full((12, 5), 0.5, dtype=np.float32))),
            "target",
            "NT",
            "does not hold raw UMI counts",
        ),
        (_screen(var_names=["A", "A", "B", "C", "D"]), "target", "NT", None),
    ],
    ids=["no-column", "no-controls", "only-controls", "not-counts", "duplicate-genes-made-unique"],
)
def test_contract_errors_name_the_file_and_the_fix(tmp_path, screen, key, control, message):
    path = _write(screen, tmp_path)
    if message is None:  # duplicate symbols are made unique, as scanpy does
        assert list(read_counts_h5ad(path, key, control).var_names) == ["A", "A-1", "B", "C", "D"]
        return
    with pytest.raises(DataContractError, match=message) as err:
        read_counts_h5ad(path, key, control)
    assert path in str(err.value)


def test_unreadable_and_missing_files(tmp_path):
    broken = tmp_path / "broken.h5ad"
    broken.write_bytes(b"not an hdf5 file")
    with pytest.raises(DataContractError, match=r"not a readable \.h5ad"):
        read_counts_h5ad(broken)
    with pytest.raises(DataContractError, match="no such file"):
        read_counts_h5ad(tmp_path / "absent.h5ad")


def test_rows_reads_only_those_cells(tmp_path):
    path = _write(_screen(), tmp_path)
    full = read_counts_h5ad(path, "target", "NT")
    mask = np.zeros(12, dtype=bool)
    mask[[1, 5, 9]] = True
    part = read_counts_h5ad(path, "target", "NT", rows=mask)
    assert list(part.obs_names) == ["c1", "c5", "c9"]
    np.testing.assert_array_equal(part.X.toarray(), full.X[mask].toarray())
