"""The raw-data contract: a user's counts file, saved any common way, is read into it or rejected
with the file and the fix."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gpo_vae.data.contract import CONTROL_LABEL, DataContractError, first_non_count, read_counts_h5ad
from gpo_vae.data.layout import LayoutError, ScreenLayout

GENES = ["GENE1", "GENE2", "MT-CO1", "RPS3", "HBB"]


def _screen(n_cells: int = 12, labels=None, X=None, var_names=None) -> ad.AnnData:
    rng = np.random.default_rng(0)
    X = sp.csr_matrix(rng.poisson(2.0, size=(n_cells, 5)).astype(np.float32)) if X is None else X
    labels = labels if labels is not None else ["NT"] * 4 + ["GENE1"] * 4 + ["GENE2"] * 4
    obs = pd.DataFrame({"target": labels}, index=[f"c{i}" for i in range(n_cells)])
    var = pd.DataFrame(index=var_names or GENES)
    return ad.AnnData(X=X, obs=obs, var=var)


def _write(adata: ad.AnnData, tmp_path) -> str:
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    return str(path)


def _layout(**options) -> ScreenLayout:
    return ScreenLayout(**{"perturbation_key": "target", "control_label": "NT", **options})


def test_own_columns_and_control_label_are_normalised(tmp_path):
    path = _write(_screen(), tmp_path)
    adata = read_counts_h5ad(path, _layout())
    assert (adata.obs["gene"] == CONTROL_LABEL).sum() == 4
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    assert adata.uns["layout_record"]["control_label"] == "NT"


@pytest.mark.parametrize("column", ["gene_name", "feature_name", "gene_symbols"])
def test_ensembl_index_with_a_symbol_column_becomes_symbols(tmp_path, column):
    screen = _screen(var_names=[f"ENSG0000000000{i}" for i in range(5)])
    screen.var[column] = GENES
    adata = read_counts_h5ad(_write(screen, tmp_path), _layout())
    assert list(adata.var_names) == GENES
    assert adata.var["gene_id"].iloc[0] == "ENSG00000000000"
    assert adata.uns["layout_record"]["symbol_column"] == column


@pytest.mark.parametrize(
    ("screen", "layout", "message"),
    [
        (
            _screen(),
            ScreenLayout(perturbation_key="gene", control_label="NT"),
            "obs has no column 'gene'.*--perturbation-key",
        ),
        (
            _screen(),
            _layout(control_label="non-targeting"),
            "no control cells.*'non-targeting'.*--control-label NT",
        ),
        (_screen(labels=["NT"] * 12), _layout(), "every cell is a control"),
        (
            _screen(X=sp.csr_matrix(np.full((12, 5), 0.5, dtype=np.float32))),
            _layout(),
            "X is not raw counts: cell 'c0' .*holds 0.5.*no layer holds counts.*--counts-layer",
        ),
        (_screen(), _layout(batch_key="lane"), "--batch-key 'lane': obs has no such column"),
        (_screen(), _layout(counts_layer="umis"), "--counts-layer 'umis': no such layer"),
    ],
    ids=["no-column", "no-controls-suggests", "only-controls", "not-counts", "no-batch-column", "no-layer"],
)
def test_contract_errors_name_the_file_and_the_fix(tmp_path, screen, layout, message):
    path = _write(screen, tmp_path)
    with pytest.raises(DataContractError, match=message) as err:
        read_counts_h5ad(path, layout)
    assert path in str(err.value)


def test_a_common_control_name_is_suggested(tmp_path):
    path = _write(_screen(labels=["NTC"] * 4 + ["GENE1"] * 8), tmp_path)
    with pytest.raises(DataContractError, match="'NTC' looks like the controls: pass --control-label NTC"):
        read_counts_h5ad(path, _layout(control_label="non-targeting"))


def test_control_label_and_targets_match_ignoring_case(tmp_path):
    path = _write(_screen(labels=["Non-Targeting"] * 4 + ["gene1"] * 4 + ["Gene2"] * 4), tmp_path)
    adata = read_counts_h5ad(path, _layout(control_label="non-targeting"))
    assert adata.obs["gene"].value_counts().to_dict() == {CONTROL_LABEL: 4, "GENE1": 4, "GENE2": 4}
    assert adata.uns["layout_record"]["case_matched"] == ["Gene2", "gene1"]


def test_duplicate_symbols_are_summed_named_or_refused(tmp_path):
    """A duplicate symbol that is also a target: today's code renamed the second copy GENE1-1,
    so the target's knockdown was read from the copy without counts and it was dropped."""
    X = np.zeros((12, 5), dtype=np.float32)
    X[:, 1] = 5  # the expressed copy of GENE1
    X[4:8, 1] = 0  # knocked down in GENE1 cells
    X[:, [2, 3, 4]] = 3
    screen = _screen(X=sp.csr_matrix(X), var_names=["GENE1", "GENE1", "MT-CO1", "RPS3", "HBB"])
    path = _write(screen, tmp_path)
    summed = read_counts_h5ad(path, _layout())
    assert list(summed.var_names) == ["GENE1", "MT-CO1", "RPS3", "HBB"]
    np.testing.assert_array_equal(summed.X[:, 0].toarray().ravel(), X[:, 0] + X[:, 1])
    assert summed.uns["layout_record"]["duplicate_genes"] == ["GENE1"]
    first = read_counts_h5ad(path, _layout(duplicate_genes="first"))
    np.testing.assert_array_equal(first.X[:, 0].toarray().ravel(), X[:, 0])
    with pytest.raises(DataContractError, match=r"GENE1 \(2 columns\).*--duplicate-genes sum"):
        read_counts_h5ad(path, _layout(duplicate_genes="error"))


def test_every_value_is_checked_for_counts_not_only_the_first_five_million(tmp_path):
    """A screen whose last cells were log-normalised: the old check read only 5,000,000 values."""
    n_cells, n_genes = 1300, 4000
    X = sp.csr_matrix(np.ones((n_cells, n_genes), dtype=np.float32))  # 5.2M stored values
    X.data[-3:] = np.log1p(2.0)
    assert X.nnz > 5_000_000
    assert first_non_count(X) == (n_cells - 1, pytest.approx(np.log1p(2.0)))
    names = [f"G{i}" for i in range(n_genes)]
    labels = ["NT"] * 650 + ["G1"] * 650
    screen = ad.AnnData(X=X, obs=pd.DataFrame({"target": labels}, index=[f"c{i}" for i in range(n_cells)]))
    screen.var_names = names
    with pytest.raises(DataContractError, match=r"cell 'c1299' .*holds 1.099"):
        read_counts_h5ad(_write(screen, tmp_path), _layout())


def test_counts_in_a_layer_are_found_or_taken_by_name(tmp_path):
    screen = _screen()
    counts = screen.X.copy()
    screen.layers["counts"] = counts
    screen.X = sp.csr_matrix(np.log1p(counts.toarray()))
    path = _write(screen, tmp_path)
    found = read_counts_h5ad(path, _layout())
    assert (
        found.uns["layout_record"]["counts"] == "counts" and found.uns["layout"]["counts_layer"] == "counts"
    )
    np.testing.assert_array_equal(found.X.toarray(), counts.toarray())
    named = read_counts_h5ad(path, _layout(counts_layer="counts"))
    np.testing.assert_array_equal(named.X.toarray(), counts.toarray())
    with pytest.raises(DataContractError, match=r"X is not raw counts.*layers: \['counts'\]"):
        read_counts_h5ad(path, _layout(counts_layer="X"))


def test_guide_labels_map_to_genes(tmp_path):
    labels = ["NT_1", "NT_2"] * 2 + ["GENE1_1", "GENE1_2"] * 2 + ["GENE2_1", "GENE2_2"] * 2
    path = _write(_screen(labels=labels), tmp_path)
    adata = read_counts_h5ad(path, _layout())
    assert adata.obs["gene"].value_counts().to_dict() == {CONTROL_LABEL: 4, "GENE1": 4, "GENE2": 4}
    assert adata.uns["layout_record"]["guides_per_gene"] == {"GENE1": 2, "GENE2": 2}
    plain = read_counts_h5ad(path, _layout(guide_pattern="none", control_label="NT_1"))
    assert "GENE1_1" in set(plain.obs["gene"])
    # a gene-level screen whose genes end in digits (NKX2-1) is left alone by auto
    alone = _screen(labels=["NT"] * 4 + ["NKX2-1"] * 4 + ["GENE2"] * 4, var_names=["NKX2-1", *GENES[1:]])
    assert "NKX2-1" in set(read_counts_h5ad(_write(alone, tmp_path), _layout()).obs["gene"])


def test_combinations_are_canonical_and_share_genes(tmp_path):
    labels = ["NT"] * 3 + ["GENE2+GENE1"] * 3 + ["GENE1+GENE2"] * 3 + ["GENE1+NT"] * 3
    adata = read_counts_h5ad(_write(_screen(labels=labels), tmp_path), _layout())
    assert adata.obs["gene"].value_counts().to_dict() == {"GENE1+GENE2": 6, CONTROL_LABEL: 3, "GENE1": 3}
    other = ["NT"] * 6 + ["GENE1|GENE2"] * 6
    read = read_counts_h5ad(_write(_screen(labels=other), tmp_path), _layout(combination_separator="|"))
    assert set(read.obs["gene"]) == {CONTROL_LABEL, "GENE1+GENE2"}


def test_batches_come_from_the_named_column(tmp_path):
    screen = _screen()
    screen.obs["line"] = ["A", "B"] * 6
    adata = read_counts_h5ad(_write(screen, tmp_path), _layout(batch_key="line"))
    assert list(adata.obs["batch"].astype(str)) == ["A", "B"] * 6


def test_impossible_layout_options_name_the_option():
    with pytest.raises(LayoutError, match=r"--guide-pattern .* needs a group"):
        ScreenLayout(guide_pattern=r"^\w+_\d+$")
    with pytest.raises(LayoutError, match="--duplicate-genes"):
        ScreenLayout(duplicate_genes="mean")
    with pytest.raises(LayoutError, match="--combination-separator"):
        ScreenLayout(combination_separator="x")


def test_unreadable_and_missing_files(tmp_path):
    broken = tmp_path / "broken.h5ad"
    broken.write_bytes(b"not an hdf5 file")
    with pytest.raises(DataContractError, match=r"not a readable \.h5ad"):
        read_counts_h5ad(broken)
    with pytest.raises(DataContractError, match="no such file"):
        read_counts_h5ad(tmp_path / "absent.h5ad")


def test_rows_reads_only_those_cells_with_labels_decided_on_all(tmp_path):
    labels = ["NT_1", "NT_2"] * 2 + ["GENE1_1", "GENE1_2"] * 2 + ["GENE2_1", "GENE2_2"] * 2
    path = _write(_screen(labels=labels), tmp_path)
    full = read_counts_h5ad(path, _layout())
    mask = np.zeros(12, dtype=bool)
    mask[[1, 5, 9]] = True  # one guide of each gene: alone they would not look guide-level
    part = read_counts_h5ad(path, _layout(), rows=mask)
    assert list(part.obs_names) == ["c1", "c5", "c9"]
    assert list(part.obs["gene"]) == [CONTROL_LABEL, "GENE1", "GENE2"]
    np.testing.assert_array_equal(part.X.toarray(), full.X[mask].toarray())


def test_a_separator_that_cuts_guide_labels_into_pairs_stops_with_the_parts(tmp_path):
    labels = ["NT"] * 4 + ["GENE1_1"] * 2 + ["GENE1_2"] * 2 + ["GENE2_1"] * 2 + ["GENE2_2"] * 2
    path = _write(_screen(labels=labels), tmp_path)
    with pytest.raises(
        DataContractError, match=r"labels cut on '_' \(--combination-separator\) give parts"
    ) as caught:
        read_counts_h5ad(path, _layout(combination_separator="_"))
    message = str(caught.value)
    assert "'1' (holds no letter), '2' (holds no letter)" in message
    assert "'GENE1_1' → '1' + 'GENE1'" in message and "--guide-pattern auto" in message
    # the default separator reads them as guides of two genes
    assert set(read_counts_h5ad(path, _layout()).obs["gene"]) == {CONTROL_LABEL, "GENE1", "GENE2"}


def test_pairs_of_unmeasured_genes_without_their_singles_are_read(tmp_path):
    """A targeted CRISPRa panel (Norman 2019): pairs of genes that are neither measured nor
    assayed alone are perturbations like any other; the record says which lack a single."""
    labels = ["NT"] * 4 + ["GENE1"] * 2 + ["BPGM+SAMD1"] * 2 + ["GENE1+CBL"] * 2 + ["CEBPE+GENE2"] * 2
    adata = read_counts_h5ad(_write(_screen(labels=labels), tmp_path), _layout())
    assert set(adata.obs["gene"]) == {CONTROL_LABEL, "GENE1", "BPGM+SAMD1", "CBL+GENE1", "CEBPE+GENE2"}
    record = adata.uns["layout_record"]
    assert record["combinations_without_singles"] == ["BPGM+SAMD1", "CBL+GENE1", "CEBPE+GENE2"]
    assert "BPGM" in record["unmatched"] and record["combination_separator"] == "+"


@pytest.mark.parametrize(
    ("labels", "separator", "expected"),
    [
        (["GENE1|GENE2"], "+", r"'GENE1\|GENE2' \(holds '\|'\).*--combination-separator '\|' \(now '\+'\)"),
        (["GENE1+GENE2"], "|", r"'GENE1\+GENE2' \(holds '\+'\).*--combination-separator '\+' \(now '\|'\)"),
        (["GENE1 GENE2"], "+", r"'GENE1 GENE2' \(holds a space\)"),
        (["42"], "+", r"'42' \(holds no letter\)"),
    ],
)
def test_labels_that_cannot_name_genes_stop_with_how_they_were_cut(tmp_path, labels, separator, expected):
    """The separator option really sets the separator: a label written with another one is not
    cut later behind the user's back, it stops here naming the option."""
    screen = _screen(labels=["NT"] * 6 + labels * 6)
    with pytest.raises(DataContractError, match=expected):
        read_counts_h5ad(_write(screen, tmp_path), _layout(combination_separator=separator))


def test_ensembl_ids_without_a_symbol_column_stop_naming_the_fix(tmp_path):
    ids = [f"ENSG0000000000{i}" for i in range(5)]
    path = _write(_screen(var_names=ids), tmp_path)
    with pytest.raises(
        DataContractError, match=r"the genes are Ensembl ids \(e\.g\. ENSG00000000000\)"
    ) as caught:
        read_counts_h5ad(path, _layout())
    assert "'GENE1', 'GENE2'" in str(caught.value) and "adata.var['gene_name']" in str(caught.value)
    # labelled by id, the same file is read
    by_id = ["NT"] * 4 + [ids[0]] * 4 + [ids[1]] * 4
    assert set(
        read_counts_h5ad(_write(_screen(labels=by_id, var_names=ids), tmp_path), _layout()).obs["gene"]
    ) == {
        CONTROL_LABEL,
        ids[0],
        ids[1],
    }


def test_infinite_and_empty_inputs_are_named(tmp_path):
    X = np.ones((12, 5), dtype=np.float32)
    X[7, 2] = np.inf
    assert first_non_count(X) == (7, np.inf)
    assert first_non_count(sp.csr_matrix(X)) == (7, np.inf)
    with pytest.raises(DataContractError, match=r"cell 'c7' \(row 7\) holds inf"):
        read_counts_h5ad(_write(_screen(X=sp.csr_matrix(X)), tmp_path), _layout())
    folder = tmp_path / "folder.h5ad"
    folder.mkdir()
    with pytest.raises(DataContractError, match=r"folder\.h5ad: a folder, not a file"):
        read_counts_h5ad(folder, _layout())


def test_labels_in_is_isin_by_hashing():
    from gpo_vae.data.labels import labels_in

    rng = np.random.default_rng(0)
    names = np.array(["non-targeting", "A", "B", "A+B", "C"], dtype=object)
    labels = names[rng.integers(0, names.size, 500)]
    for chosen in (["A", "A+B"], {"C", "absent"}, ["B", "B", "non-targeting"], []):
        assert np.array_equal(labels_in(labels, chosen), np.isin(labels, list(chosen)))
    assert np.array_equal(labels_in(np.array([3, 1, 2]), [2, 3]), [True, False, True])
