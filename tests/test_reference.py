"""Readers of summary statistics and reference networks.

Tests on the real public files read ``../shared/data`` (or ``$GPO_VAE_SHARED_DATA``) and skip when
it is absent; the rest build small files in ``tmp_path``.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpo_vae.data.networks import (
    NETWORK_FORMATS,
    detect_network_format,
    network_adjacency,
    network_edge_set,
    read_network,
    union_networks,
)
from gpo_vae.data.reference import ReferenceFormatError
from gpo_vae.data.summary_stats_io import (
    CELLS_COLUMN,
    DEGS_COLUMN,
    KNOCKDOWN_COLUMN,
    NAME_COLUMN,
    collapse_duplicates,
    list_summary_sheets,
    read_summary_stats,
    strong_perturbations,
)

SHARED_DATA = Path(
    os.environ.get("GPO_VAE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"reference data {path} absent (point GPO_VAE_SHARED_DATA at the shared/data folder)")
    return path


# ---------------------------------------------------------------- real summary statistics

WORKBOOK = "summary_stats/summary_stats.xlsx"
ADAMSON = "summary_stats/summary_stats_adamson.csv"
# Rows per sheet (data/README.md) and control rows (names containing "non-targeting").
SHEETS = {
    "TabA_K562_day8_summary_stat": (11_258, 585),
    "TabB_K562_day6_summary_stat": (2_285, 109),
    "TabC_RPE1_summary_statistic": (2_680, 130),
}


@pytest.fixture(scope="module")
def raw_sheets() -> dict[str, pd.DataFrame]:
    """The workbook as pandas reads it, for independent expectations."""
    return pd.read_excel(shared_file(WORKBOOK), sheet_name=list(SHEETS))


@pytest.fixture(scope="module")
def parsed_sheets() -> dict[str, pd.DataFrame]:
    path = shared_file(WORKBOOK)
    return {sheet: read_summary_stats(path, sheet) for sheet in SHEETS}


def direct_strong(raw: pd.DataFrame) -> pd.Series:
    """Design §3 computed directly on the raw sheet: a boolean per row."""
    names = raw[NAME_COLUMN].astype(str)
    return (
        (raw[DEGS_COLUMN] > 50)
        & (raw[KNOCKDOWN_COLUMN] <= -0.3)
        & (raw[CELLS_COLUMN] > 25)
        & ~names.str.contains("non-targeting")
    )


def test_list_summary_sheets_real() -> None:
    assert list_summary_sheets(shared_file(WORKBOOK)) == list(SHEETS)


@pytest.mark.parametrize("sheet", list(SHEETS))
def test_read_summary_stats_every_sheet(sheet, raw_sheets, parsed_sheets) -> None:
    raw, df = raw_sheets[sheet], parsed_sheets[sheet]
    n_rows, n_controls = SHEETS[sheet]
    assert len(df) == len(raw) == n_rows
    assert list(df.columns[: len(raw.columns)]) == list(raw.columns)
    names = raw[NAME_COLUMN].astype(str).tolist()
    assert df["perturbation"].tolist() == [name.split("_")[1] for name in names]
    last = [name.split("_")[-1] for name in names]
    assert df["gene_id"].fillna("").tolist() == [x if x.startswith("ENSG") else "" for x in last]
    assert int(df["is_control"].sum()) == n_controls
    assert set(df.loc[df["is_control"], "perturbation"]) == {"non-targeting"}
    for column in (KNOCKDOWN_COLUMN, CELLS_COLUMN, DEGS_COLUMN):
        assert df[column].dtype == np.float64
        np.testing.assert_array_equal(df[column].to_numpy(), raw[column].to_numpy(dtype=float))


# Strong perturbations per sheet: (passing rows, passing genes), from the §3 rule applied directly.
# The design's "1,564 of 2,550 pass" for RPE1 counts rows (guides) of the 2,550 non-control rows;
# 1,543 distinct genes pass.
STRONG = {
    "TabA_K562_day8_summary_stat": (1_931, 1_928),
    "TabB_K562_day6_summary_stat": (1_092, 1_092),
    "TabC_RPE1_summary_statistic": (1_564, 1_543),
}


@pytest.mark.parametrize("sheet", list(SHEETS))
def test_strong_perturbations_match_direct_rule(sheet, raw_sheets, parsed_sheets) -> None:
    raw = raw_sheets[sheet]
    passing = direct_strong(raw)
    genes = raw.loc[passing, NAME_COLUMN].astype(str).str.split("_").str[1].unique()
    strong = strong_perturbations(parsed_sheets[sheet])
    assert list(strong) == list(genes)
    assert (int(passing.sum()), len(strong)) == STRONG[sheet]


def test_rpe1_matches_design_figure(raw_sheets) -> None:
    raw = raw_sheets["TabC_RPE1_summary_statistic"]
    perturbed = ~raw[NAME_COLUMN].astype(str).str.contains("non-targeting")
    assert int(perturbed.sum()) == 2_550
    assert int(direct_strong(raw).sum()) == 1_564


def test_collapse_duplicates_real(parsed_sheets) -> None:
    df = parsed_sheets["TabA_K562_day8_summary_stat"]
    collapsed = collapse_duplicates(df)
    perturbed = collapsed[~collapsed["is_control"]]
    assert perturbed["perturbation"].is_unique
    assert perturbed["perturbation"].nunique() == df.loc[~df["is_control"], "perturbation"].nunique()
    assert int(collapsed["is_control"].sum()) == SHEETS["TabA_K562_day8_summary_stat"][1]
    best = df[~df["is_control"]].groupby("perturbation")[KNOCKDOWN_COLUMN].min()
    kept = perturbed.set_index("perturbation")[KNOCKDOWN_COLUMN]
    pd.testing.assert_series_equal(kept.sort_index(), best.sort_index(), check_names=False)


def test_read_adamson_real() -> None:
    path = shared_file(ADAMSON)
    raw = pd.read_csv(path, index_col=0)
    df = read_summary_stats(path)
    assert len(df) == len(raw) == 90
    assert "Unnamed: 0" not in df.columns
    assert int(df["is_control"].sum()) == 1
    perturbed = df[~df["is_control"]]
    assert perturbed["perturbation"].str.match(r"ENSG\d{11}$").all()
    assert (perturbed["perturbation"] == perturbed["gene_id"]).all()
    passing = (
        (raw[DEGS_COLUMN] > 50)
        & (raw[KNOCKDOWN_COLUMN] <= -0.3)
        & (raw[CELLS_COLUMN] > 25)
        & (raw[NAME_COLUMN] != "non-targeting")
    )
    assert list(strong_perturbations(df)) == raw.loc[passing, NAME_COLUMN].tolist()
    mapping = {gene_id: f"SYM{i}" for i, gene_id in enumerate(perturbed["gene_id"])}
    mapped = read_summary_stats(path, gene_ids_to_symbols=mapping)
    assert mapped.loc[~mapped["is_control"], "perturbation"].tolist() == list(mapping.values())


# ---------------------------------------------------------------- real networks

WEIGHT = "weight"
# file → (format, directed, edges verified in the raw file with zcat | grep, one weight or None)
NETWORK_FILES = {
    "chipseq_hepg2.csv.gz": (
        "chipseq",
        True,
        [("KAT7", "MAMDC2"), ("ARID1B", "TENT4A")],
        ("ARID1B", "TENT4A", 92),
    ),
    "chipseq_k562.csv.gz": (
        "chipseq",
        True,
        [("GATA1", "NFE2"), ("KDM5B", "CYP2W1")],
        ("GATA1", "NFE2", 2709),
    ),
    "corum_complexes.csv.gz": (
        "corum",
        False,
        [("BCL6", "HDAC4"), ("CCNA2", "CDK2"), ("MAP2K3", "PKN1")],
        None,
    ),
    "dorothea_human_ABCDE.csv.gz": (
        "dorothea",
        True,
        [("ADNP", "ATF7IP"), ("TP53", "MDM2"), ("ZZZ3", "ZP3")],
        None,
    ),
    "regnetwork_human.tsv.gz": (
        "regnetwork",
        True,
        [("USF1", "S100A6"), ("TP53", "MDM2"), ("hsa-mir-328", "CD44")],
        None,
    ),
    "remap_chipseq.csv.gz": ("remap", True, [("ADNP", "ABCC1"), ("GATA1", "AAK1"), ("ZZZ3", "ZP3")], None),
    "string_score_ge0.9.csv.gz": (
        "string",
        False,
        [("MDM2", "TP53"), ("ARF5", "RAB11FIP3")],
        ("MDM2", "TP53", 0.999),
    ),
    "trrust_human.csv.gz": (
        "trrust",
        True,
        [("TP53", "CDKN1A"), ("AHR", "ABCG2"), ("ZNF76", "TALDO1")],
        None,
    ),
}


@functools.cache
def real_network(name: str) -> pd.DataFrame:
    return read_network(shared_file(f"networks/{name}"))


@functools.cache
def direct_pairs(name: str) -> set[tuple[str, str]]:
    """Non-self edges of a file read with plain pandas, undirected ones as sorted pairs."""
    path = shared_file(f"networks/{name}")
    if name.startswith("corum"):
        pairs = set()
        for genes in pd.read_csv(path)["Genes"]:
            members = {g.strip() for g in genes.split(";")} - {"", "N/A"}
            pairs |= set(itertools.combinations(sorted(members), 2))
        return pairs
    if name.startswith("regnetwork"):
        raw = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)
        pairs = zip(raw[0], raw[2], strict=True)
    else:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        columns = {"chipseq": ("source", "target"), "string": ("protein1", "protein2")}
        source, target = columns.get(NETWORK_FILES[name][0], ("tf", "target"))
        pairs = zip(raw[source], raw[target], strict=True)
    directed = NETWORK_FILES[name][1]
    return {(a, b) if directed or a < b else (b, a) for a, b in pairs if a != b}


def test_every_shared_network_file_is_covered() -> None:
    folder = shared_file("networks")
    assert sorted(p.name for p in folder.iterdir()) == sorted(NETWORK_FILES)


@pytest.mark.parametrize("name", list(NETWORK_FILES))
def test_read_network_real(name: str) -> None:
    fmt, directed, known, weighted = NETWORK_FILES[name]
    assert detect_network_format(name) == fmt
    df = real_network(name)
    assert len(df) > 0
    assert list(df.columns[:3]) == ["source", "target", "directed"]
    assert (WEIGHT in df.columns) == (weighted is not None)
    assert (df["directed"] == directed).all()
    assert not (df["source"] == df["target"]).any()
    assert not df.duplicated(["source", "target", "directed"]).any()
    assert not (df["source"].str.strip() != df["source"]).any()
    if not directed:
        assert (df["source"] < df["target"]).all()
    assert set(zip(df["source"], df["target"], strict=True)) == direct_pairs(name)
    edges = network_edge_set(df)
    for source, target in known:
        assert (source, target) in edges
        assert ((target, source) in edges) == (not directed or (target, source) in direct_pairs(name))
    if weighted is not None:
        source, target, weight = weighted
        row = df[(df["source"] == source) & (df["target"] == target)]
        assert row[WEIGHT].tolist() == [pytest.approx(weight)]


def test_dorothea_confidence_filter_real() -> None:
    path = shared_file("networks/dorothea_human_ABCDE.csv.gz")
    raw = pd.read_csv(path)
    df = read_network(path, confidence="AB")
    assert len(df) == int(raw["confidence"].isin(["A", "B"]).sum())
    assert ("TP53", "MDM2") in network_edge_set(df)  # confidence A


def test_network_adjacency_real_trrust_and_string() -> None:
    # TRRUST lines among these genes (zcat | grep): TP53→{CDKN1A,E2F1,MDM2,MYC,TP53},
    # E2F1→{CDKN1A,E2F1,MDM2,MYC,TP53}, MYC→{CDKN1A,TP53}; self-loops dropped.
    nodes = ["TP53", "MDM2", "CDKN1A", "E2F1", "MYC"]
    expected = np.zeros((5, 5), dtype=bool)
    for source, targets in {
        "TP53": "CDKN1A E2F1 MDM2 MYC",
        "E2F1": "CDKN1A MDM2 MYC TP53",
        "MYC": "CDKN1A TP53",
    }.items():
        for target in targets.split():
            expected[nodes.index(source), nodes.index(target)] = True
    np.testing.assert_array_equal(network_adjacency(real_network("trrust_human.csv.gz"), nodes), expected)
    # STRING ≥ 0.9 links all six pairs of these four genes, each stored once in the file.
    nodes = ["TP53", "MDM2", "CDKN1A", "EP300", "NOT_A_GENE"]
    adjacency = network_adjacency(real_network("string_score_ge0.9.csv.gz"), nodes)
    expected = np.zeros((5, 5), dtype=bool)
    expected[:4, :4] = ~np.eye(4, dtype=bool)
    np.testing.assert_array_equal(adjacency, expected)
    assert (adjacency == adjacency.T).all()


# ---------------------------------------------------------------- synthetic summary statistics


def summary_frame(names: list[str], knockdown, cells, degs) -> pd.DataFrame:
    return pd.DataFrame(
        {NAME_COLUMN: names, KNOCKDOWN_COLUMN: knockdown, CELLS_COLUMN: cells, DEGS_COLUMN: degs, "extra": 1}
    )


REPLOGLE_NAMES = ["1_AAA_P1_ENSG00000000001", "2_AAA_P2_ENSG00000000001", "3_BBB_P1P2_ENSG00000000002"]
CONTROL_NAME = "9_non-targeting_non-targeting_non-targeting"


@pytest.fixture
def workbook(tmp_path: Path) -> Path:
    path = tmp_path / "stats.xlsx"
    frame = summary_frame(
        [*REPLOGLE_NAMES, CONTROL_NAME], [-0.9, -0.5, -0.2, None], [30, 40, 50, 60], [60, 70, 80, 0]
    )
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        pd.DataFrame({"column": [NAME_COLUMN], "description": ["guide"]}).to_excel(
            writer, sheet_name="description"
        )
        frame.to_excel(writer, sheet_name="TabX_one", index=False)
        frame.iloc[:2].to_excel(writer, sheet_name="TabY_two", index=False)
    return path


def test_workbook_sheets_and_selection(workbook: Path) -> None:
    assert list_summary_sheets(workbook) == ["TabX_one", "TabY_two"]
    df = read_summary_stats(workbook, "TabX_one")
    assert df["perturbation"].tolist() == ["AAA", "AAA", "BBB", "non-targeting"]
    assert df["gene_id"].tolist()[:3] == ["ENSG00000000001", "ENSG00000000001", "ENSG00000000002"]
    assert pd.isna(df["gene_id"].iloc[3])
    assert df["is_control"].tolist() == [False, False, False, True]
    assert len(read_summary_stats(workbook, "TabY_two")) == 2


def test_workbook_sheet_none_with_several_sheets_lists_them(workbook: Path) -> None:
    with pytest.raises(ReferenceFormatError, match=r"stats\.xlsx.*TabX_one.*TabY_two"):
        read_summary_stats(workbook)


def test_workbook_unknown_sheet_lists_sheets(workbook: Path) -> None:
    with pytest.raises(ReferenceFormatError, match=r"no sheet 'TabZ'.*TabX_one"):
        read_summary_stats(workbook, "TabZ")


def test_workbook_single_data_sheet_is_picked(tmp_path: Path) -> None:
    path = tmp_path / "single.xlsx"
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        pd.DataFrame({"column": ["x"]}).to_excel(writer, sheet_name="description", index=False)
        summary_frame(["1_CCC_P1_ENSG00000000003"], [-0.8], [30], [60]).to_excel(
            writer, sheet_name="TabS_synthetic_summary_stat", index=False
        )
    assert read_summary_stats(path)["perturbation"].tolist() == ["CCC"]


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "stats.csv"
    summary_frame(["1_A_P1_ENSG00000000001"], [-0.9], [30], [60]).drop(columns=[DEGS_COLUMN]).to_csv(
        path, index=False
    )
    with pytest.raises(ReferenceFormatError, match=r"stats\.csv.*Number of DEGs \(anderson-darling\)"):
        read_summary_stats(path)


def test_missing_file_and_bad_formats(tmp_path: Path) -> None:
    with pytest.raises(ReferenceFormatError, match="no such file"):
        read_summary_stats(tmp_path / "absent.xlsx")
    fake = tmp_path / "fake.xlsx"
    fake.write_text("not a workbook")
    with pytest.raises(ReferenceFormatError, match=r"fake\.xlsx: not a readable \.xlsx"):
        read_summary_stats(fake)
    odd = tmp_path / "stats.json"
    odd.write_text("{}")
    with pytest.raises(ReferenceFormatError, match=r"unknown summary-statistics format '\.json'"):
        read_summary_stats(odd)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ReferenceFormatError, match=r"empty\.csv: not a readable"):
        read_summary_stats(empty)


def test_csv_rejects_sheet_and_text_in_numbers(tmp_path: Path) -> None:
    path = tmp_path / "stats.csv"
    summary_frame(["1_A_P1_ENSG00000000001"], ["strong"], [30], [60]).to_csv(path, index=False)
    with pytest.raises(ReferenceFormatError, match="has no sheets"):
        read_summary_stats(path, "TabA")
    with pytest.raises(ReferenceFormatError, match=r"'percent knockdown' must be numeric.*'strong'"):
        read_summary_stats(path)


def test_tsv_gz_with_loose_headers_and_saved_index(tmp_path: Path) -> None:
    frame = summary_frame(["1_NA_P1_ENSG00000000001", CONTROL_NAME], [-0.9, None], [30, 40], [60, 0])
    frame.columns = [c.upper() if c == KNOCKDOWN_COLUMN else c.replace(" ", "  ") for c in frame.columns]
    path = tmp_path / "stats.tsv.gz"
    frame.to_csv(path, sep="\t")  # with its index, as the Adamson file was written
    df = read_summary_stats(path)
    assert "Unnamed: 0" not in df.columns
    assert df[KNOCKDOWN_COLUMN].tolist()[0] == -0.9 and np.isnan(df[KNOCKDOWN_COLUMN].iloc[1])
    assert df["perturbation"].tolist() == ["NA", "non-targeting"]


def adamson_file(tmp_path: Path) -> Path:
    path = tmp_path / "summary_stats_adamson.csv"
    names = ["non-targeting", "ENSG00000000010", "ENSG00000000020", "ENSG00000000030"]
    summary_frame(names, [None, -0.9, -0.8, -0.7], [400, 300, 200, 100], [0, 500, 600, 700]).to_csv(path)
    return path


def test_adamson_ids_without_mapping(tmp_path: Path) -> None:
    df = read_summary_stats(adamson_file(tmp_path))
    assert df["perturbation"].tolist() == [
        "non-targeting",
        "ENSG00000000010",
        "ENSG00000000020",
        "ENSG00000000030",
    ]
    assert df["gene_id"].tolist()[1:] == df["perturbation"].tolist()[1:]
    assert df["is_control"].tolist() == [True, False, False, False]


def test_adamson_ids_with_mapping(tmp_path: Path) -> None:
    mapping = pd.Series(["GENE10", "GENE20"], index=["ENSG00000000010.4", "ENSG00000000020"])
    with pytest.warns(UserWarning, match="1 of 3 Ensembl ids have no symbol.*ENSG00000000030"):
        df = read_summary_stats(adamson_file(tmp_path), gene_ids_to_symbols=mapping)
    assert df["perturbation"].tolist() == ["non-targeting", "GENE10", "GENE20", "ENSG00000000030"]
    assert df["gene_id"].iloc[1] == "ENSG00000000010"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = {"ENSG00000000010": "X", "ENSG00000000020": "Y", "ENSG00000000030": "Z"}
        assert read_summary_stats(adamson_file(tmp_path), gene_ids_to_symbols=full)["perturbation"].tolist()[
            1:
        ] == [
            "X",
            "Y",
            "Z",
        ]


def test_duplicate_guides_and_collapse() -> None:
    names = [
        "1_AAA_P1_E",
        "2_AAA_P2_E",
        "3_BBB_P1_E",
        "4_BBB_P2_E",
        "5_CCC_P1P2_E",
        CONTROL_NAME,
        CONTROL_NAME,
    ]
    df = pd.DataFrame({NAME_COLUMN: names})
    df[KNOCKDOWN_COLUMN] = [-0.5, -0.9, np.nan, -0.4, -0.8, np.nan, np.nan]
    df[CELLS_COLUMN], df[DEGS_COLUMN] = 100.0, 100.0
    df["perturbation"] = [n.split("_")[1] for n in names]
    df["is_control"] = df["perturbation"] == "non-targeting"
    best = collapse_duplicates(df)
    assert best.index.tolist() == [1, 3, 4, 5, 6]  # file order; NaN knockdown ranks last
    assert collapse_duplicates(df, how="first").index.tolist() == [0, 2, 4, 5, 6]
    with pytest.raises(ValueError, match="how must be"):
        collapse_duplicates(df, how="worst")


def test_strong_perturbations_thresholds_are_exact() -> None:
    # Design §3: DEGs > 50, knockdown ≤ -0.3, cells > 25; any passing guide admits its gene.
    rows = [
        ("PASS", -0.3, 26, 51),
        ("DEG_AT_LIMIT", -0.9, 100, 50),
        ("KD_ABOVE", -0.29, 100, 100),
        ("CELLS_AT_LIMIT", -0.9, 25, 100),
        ("KD_MISSING", np.nan, 100, 100),
        ("TWO_GUIDES", -0.1, 100, 100),
        ("TWO_GUIDES", -0.9, 100, 100),
        ("non-targeting", -0.9, 100, 100),
    ]
    df = pd.DataFrame(rows, columns=["perturbation", KNOCKDOWN_COLUMN, CELLS_COLUMN, DEGS_COLUMN])
    df["is_control"] = df["perturbation"] == "non-targeting"
    assert strong_perturbations(df).tolist() == ["PASS", "TWO_GUIDES"]
    assert strong_perturbations(df, min_degs=49, min_cells=24).tolist() == [
        "PASS",
        "DEG_AT_LIMIT",
        "CELLS_AT_LIMIT",
        "TWO_GUIDES",
    ]
    with pytest.raises(ValueError, match="read_summary_stats"):
        strong_perturbations(df.drop(columns="is_control"))


# ---------------------------------------------------------------- synthetic networks


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


# format → (file name, content, expected (source, target) rows in order, directed)
SMALL_NETWORKS = {
    "chipseq": (
        "chipseq_test.csv.gz",
        ",target,weight,source\n0,B,10,A\n1, C ,5,A\n2,A,3,A\n3,B,20,A\n",
        [("A", "B"), ("A", "C")],
        True,
    ),
    "corum": (
        "corum_test.csv.gz",
        '"","ID","Name","Genes","Length"\n"1",1,"x","C;A;B",3\n"2",2,"y","B; A;;N/A",2\n"3",3,"z","D",1\n',
        [("A", "C"), ("B", "C"), ("A", "B")],
        False,
    ),
    "dorothea": (
        "dorothea_test.csv",
        "tf,confidence,target,mor\nA,A,B,1.0\nA,E,C,-1.0\nNA,B,A,1.0\n",
        [("A", "B"), ("A", "C"), ("NA", "A")],
        True,
    ),
    "regnetwork": (
        "regnetwork_test.tsv",
        "A\t1\tB\t2\nA\t1\tB\t2\nB\t2\tB\t2\nmiR-1\tMI1\tA\t1\n",
        [("A", "B"), ("miR-1", "A")],
        True,
    ),
    "remap": ("remap_chipseq_test.csv", "tf,target\nA,B\nA,B\nB,A\n", [("A", "B"), ("B", "A")], True),
    "string": (
        "string_test.csv.gz",
        '"","score","protein1","protein2"\n"1",0.95,"B","A"\n"2",0.99,"A","B"\n"3",0.91,"C","A"\n',
        [("A", "B"), ("A", "C")],
        False,
    ),
    "trrust": ("trrust_test.csv", 'tf,target,mor,pubmed_id\nA,B,1.0,"1,2"\nA,A,0.0,3\n', [("A", "B")], True),
    "edgelist": (
        "true_network.csv",
        "source,target,weight\nA,B,-0.5\nB,C,0.2\nA,B,0.1\n",
        [("A", "B"), ("B", "C")],
        True,
    ),
}


@pytest.mark.parametrize("fmt", list(SMALL_NETWORKS))
def test_small_network_every_format(fmt: str, tmp_path: Path) -> None:
    name, text, expected, directed = SMALL_NETWORKS[fmt]
    path = write(tmp_path / name, text)
    assert detect_network_format(path) == fmt
    df = read_network(path)
    # Order is the file order of each kept edge; compare as sorted lists so duplicates show.
    assert sorted(zip(df["source"], df["target"], strict=True)) == sorted(expected)
    assert df["directed"].dtype == bool and (df["directed"] == directed).all()


def test_duplicate_edges_keep_strongest_weight(tmp_path: Path) -> None:
    def weights(name: str, fmt: str) -> dict[tuple[str, str], float]:
        df = read_network(write(tmp_path / name, SMALL_NETWORKS[fmt][1]))
        return dict(zip(zip(df["source"], df["target"], strict=True), df["weight"], strict=True))

    assert weights("chipseq_w.csv", "chipseq") == {("A", "B"): 20.0, ("A", "C"): 5.0}
    assert weights("string_w.csv", "string") == {("A", "B"): 0.99, ("A", "C"): 0.91}
    assert weights("edges.csv", "edgelist") == {("A", "B"): -0.5, ("B", "C"): 0.2}
    # A duplicate without a weight loses to one with a weight, whichever comes first.
    gaps = read_network(write(tmp_path / "gaps.csv", "source,target,weight\nA,B,\nA,B,0.3\nC,D,0.1\nC,D,\n"))
    assert gaps["weight"].tolist() == [0.3, 0.1]


def test_detect_network_format_from_names() -> None:
    assert detect_network_format("remap_chipseq.csv.gz") == "remap"
    assert detect_network_format("k562_chipseq.csv") == "chipseq"
    assert detect_network_format("data/my_TRRUST_v2.tsv.gz") == "trrust"
    assert detect_network_format("true_network.csv") == "edgelist"
    assert detect_network_format("string_vs_corum.csv") == "string"
    assert set(NETWORK_FORMATS) >= {
        "chipseq",
        "corum",
        "dorothea",
        "regnetwork",
        "remap",
        "string",
        "trrust",
        "edgelist",
    }
    assert all(fmt.description for fmt in NETWORK_FORMATS.values())


def test_network_errors(tmp_path: Path) -> None:
    with pytest.raises(ReferenceFormatError, match="no such file"):
        read_network(tmp_path / "trrust.csv")
    path = write(tmp_path / "trrust_bad.csv", "regulator,target\nA,B\n")
    with pytest.raises(ReferenceFormatError, match=r"trrust_bad\.csv.*lacks column\(s\) \['tf'\].*regulator"):
        read_network(path)
    generic = write(tmp_path / "edges.csv", "from,to\nA,B\n")
    with pytest.raises(ReferenceFormatError, match=r"edgelist.*\['source', 'target'\]"):
        read_network(generic)
    with pytest.raises(ValueError, match="unknown network format 'biogrid'"):
        read_network(generic, format="biogrid")
    with pytest.raises(ValueError, match="do not apply to the edgelist format"):
        read_network(write(tmp_path / "ok.csv", "source,target\nA,B\n"), confidence="A")
    dorothea = write(tmp_path / "dorothea.csv", SMALL_NETWORKS["dorothea"][1])
    with pytest.raises(ValueError, match="confidence levels"):
        read_network(dorothea, confidence="AZ")
    flags = write(tmp_path / "flags.csv", "source,target,directed\nA,B,maybe\n")
    with pytest.raises(ReferenceFormatError, match="true/false"):
        read_network(flags)


def test_dorothea_confidence_filter(tmp_path: Path) -> None:
    path = write(tmp_path / "dorothea.csv", SMALL_NETWORKS["dorothea"][1])
    df = read_network(path, confidence="ab")
    assert list(zip(df["source"], df["target"], strict=True)) == [("A", "B"), ("NA", "A")]


def test_format_override_and_directed_column(tmp_path: Path) -> None:
    path = write(tmp_path / "links.tsv", "score\tprotein1\tprotein2\n0.9\tB\tA\n")
    df = read_network(path, format="string")
    assert (df["source"].tolist(), df["target"].tolist(), df["directed"].tolist()) == (["A"], ["B"], [False])
    mixed = read_network(
        write(tmp_path / "mixed.csv", "source,target,directed\nB,A,false\nB,A,true\nA,B,False\n")
    )
    assert list(mixed.itertuples(index=False, name=None)) == [("A", "B", False), ("B", "A", True)]


EDGES = pd.DataFrame(
    {
        "source": ["A", "A", "C", "B", "X"],
        "target": ["B", "C", "D", "D", "A"],
        "directed": [True, False, True, False, True],
    }
)


def test_network_adjacency_hand_built() -> None:
    nodes = ["D", "C", "B", "A"]
    expected = np.array(
        [
            # D      C      B      A      (targets)
            [False, False, True, False],  # D: B–D undirected
            [True, False, False, True],  # C: C→D, A–C undirected
            [True, False, False, False],  # B: B–D undirected
            [False, True, True, False],  # A: A→B, A–C
        ]
    )
    adjacency = network_adjacency(EDGES, nodes)
    np.testing.assert_array_equal(adjacency, expected)
    assert adjacency.dtype == bool
    with pytest.raises(ValueError, match="nodes must be unique"):
        network_adjacency(EDGES, ["A", "A"])


def test_network_edge_set_both_orientations_for_undirected() -> None:
    assert network_edge_set(EDGES, nodes=["A", "B", "C"]) == {("A", "B"), ("A", "C"), ("C", "A")}
    assert ("D", "B") in network_edge_set(EDGES) and ("D", "C") not in network_edge_set(EDGES)


def test_union_networks() -> None:
    other = pd.DataFrame(
        {
            "source": ["A", "D", "B"],
            "target": ["B", "B", "A"],
            "directed": [True, False, False],
            "weight": [1.0, 2.0, 3.0],
        }
    )
    union = union_networks([EDGES, other])
    assert list(union.columns) == ["source", "target", "directed"]
    assert list(union.itertuples(index=False, name=None)) == [
        ("A", "B", True),
        ("A", "C", False),
        ("C", "D", True),
        ("B", "D", False),
        ("X", "A", True),
        ("A", "B", False),
    ]
    nodes = ["A", "B", "C", "D", "X"]
    np.testing.assert_array_equal(
        network_adjacency(union, nodes), network_adjacency(EDGES, nodes) | network_adjacency(other, nodes)
    )
    assert union_networks([]).empty
