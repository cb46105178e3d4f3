"""Reader of Replogle/Adamson summary statistics: every sheet of the real workbook (skipped when
``../shared/data`` is absent) and small files built in ``tmp_path``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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
from tests.shared_data import shared_file

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
    assert strong_perturbations(df, min_degs=50, min_cells=25).tolist() == [
        "PASS",
        "DEG_AT_LIMIT",
        "CELLS_AT_LIMIT",
        "TWO_GUIDES",
    ]
    with pytest.raises(ValueError, match="read_summary_stats"):
        strong_perturbations(df.drop(columns="is_control"))


@pytest.mark.parametrize("sheet", ["TabB_K562_day6_summary_stat", "TabC_RPE1_summary_statistic"])
def test_the_modality_aware_filter_reproduces_the_published_rule_on_real_sheets(sheet, parsed_sheets) -> None:
    """The preprocessing's strong rule (any modality, a table of reasons) is CausalBench's for a
    CRISPRi screen whose targets all count as measured and where a missing value fails."""
    from gpo_vae.preprocessing.config import PerturbationFilterConfig
    from gpo_vae.preprocessing.filter_table import KEPT, perturbation_table, strong_decisions

    stats = parsed_sheets[sheet]
    labels = stats.loc[~stats["is_control"], "perturbation"].astype(str).unique()
    table = perturbation_table(labels, stats, pd.Index(labels), "non-targeting")
    config = PerturbationFilterConfig(unmeasured_targets="drop")
    decided = strong_decisions(table, stats, config, "crispri", min_degs=51)
    assert set(decided.index[decided["status"] == KEPT]) == set(strong_perturbations(stats))
