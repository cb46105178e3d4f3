"""Per-perturbation summary statistics (design §1, §3): read them and pick strong perturbations.

Reads the Replogle 2022 workbook (``summary_stats.xlsx``: one sheet per screen), the Adamson
csv (``genetic perturbation`` holds Ensembl ids) and any csv/tsv or sheet with the same key
columns, such as the synthetic screen's ``TabS_synthetic_summary_stat``.

Every reader returns the file's rows unchanged in order (one row per guide: K562 genome-wide
has several guides per gene, e.g. ``…_P1_…`` and ``…_P2_…``) with three normalised columns
added: ``perturbation`` (gene symbol), ``gene_id`` (Ensembl id or NaN) and ``is_control``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from gpo_vae.data.contract import CONTROL_LABEL
from gpo_vae.data.reference import (
    ReferenceFormatError,
    delimiter_for,
    missing_columns_error,
    read_delimited,
    read_header,
    require_file,
    table_suffix,
)

NAME_COLUMN = "genetic perturbation"
KNOCKDOWN_COLUMN = "percent knockdown"
CELLS_COLUMN = "number of cells (filtered)"
DEGS_COLUMN = "Number of DEGs (anderson-darling)"
NUMERIC_COLUMNS = (KNOCKDOWN_COLUMN, CELLS_COLUMN, DEGS_COLUMN)
KEY_COLUMNS = (NAME_COLUMN, *NUMERIC_COLUMNS)

PERTURBATION_COLUMN = "perturbation"
GENE_ID_COLUMN = "gene_id"
IS_CONTROL_COLUMN = "is_control"

EXCEL_SUFFIXES = (".xlsx", ".xlsm")
TEXT_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")
# Sheets that document a workbook rather than hold one row per perturbation.
NON_DATA_SHEETS = ("description", "readme")

# An Ensembl gene id (human ENSG, other species ENS<species>G), optionally versioned, that ends
# the name: the whole name in Adamson, the last ``_`` field in Replogle.
_ENSEMBL_ID = re.compile(r"(?:^|_)(ENS[A-Z]*G\d{6,}(?:\.\d+)?)$")

WHAT = "summary statistics"


def _normalised_header(name: object) -> str:
    return " ".join(str(name).split()).lower()


def _is_data_sheet(name: str) -> bool:
    return not _normalised_header(name).startswith(NON_DATA_SHEETS)


def _open_workbook(path: Path) -> pd.ExcelFile:
    try:
        return pd.ExcelFile(path, engine="openpyxl")
    except Exception as err:  # openpyxl/zipfile raise many types for a file that is not a workbook
        raise ReferenceFormatError(
            f"{path}: not a readable .xlsx workbook ({type(err).__name__}: {err}). "
            "Save it as .xlsx (Excel 2007+) or export the sheet as csv."
        ) from err


def _check_suffix(path: Path) -> str:
    suffix = table_suffix(path)
    if suffix not in EXCEL_SUFFIXES + TEXT_SUFFIXES:
        raise ReferenceFormatError(
            f"{path}: unknown summary-statistics format {suffix or '(no suffix)'!r}. "
            f"Pass an .xlsx workbook or a csv/tsv file (suffixes {list(EXCEL_SUFFIXES + TEXT_SUFFIXES)})."
        )
    return suffix


def list_summary_sheets(path: str | Path) -> list[str]:
    """Names of the data sheets of a summary-statistics workbook, in workbook order.

    Sheets named ``description`` or ``readme`` (the Replogle column glossary) are left out.
    Raises :class:`ReferenceFormatError` for a missing file or a file that is not a workbook.
    """
    path = require_file(path, WHAT)
    if _check_suffix(path) not in EXCEL_SUFFIXES:
        raise ReferenceFormatError(f"{path}: a {table_suffix(path)} file has no sheets; only .xlsx has.")
    with _open_workbook(path) as workbook:
        return [str(name) for name in workbook.sheet_names if _is_data_sheet(str(name))]


def _read_sheet(path: Path, sheet: str | None) -> pd.DataFrame:
    with _open_workbook(path) as workbook:
        names = [str(name) for name in workbook.sheet_names]
        data_sheets = [name for name in names if _is_data_sheet(name)]
        if sheet is None:
            if len(data_sheets) != 1:
                found = f"its data sheets are {data_sheets}" if data_sheets else "it has no data sheet"
                raise ReferenceFormatError(
                    f"{path}: pass sheet=… to choose the summary-statistics sheet; {found}."
                )
            sheet = data_sheets[0]
        elif sheet not in names:
            raise ReferenceFormatError(f"{path}: no sheet {sheet!r}; the data sheets are {data_sheets}.")
        # Names as text: a numeric-looking guide name must not become a number.
        return workbook.parse(sheet, dtype={NAME_COLUMN: str}).dropna(how="all")


def _read_text(path: Path) -> pd.DataFrame:
    sep = delimiter_for(path)
    header = read_header(path, WHAT, sep)
    name_columns = [c for c in header if _normalised_header(c) == _normalised_header(NAME_COLUMN)]
    frame = read_delimited(path, WHAT, sep=sep, usecols=header, text_columns=name_columns)
    # A pandas index saved with the table has an empty header (read as "Unnamed: 0"): it is
    # row numbering, not data.
    if header and header[0].startswith("Unnamed: 0"):
        frame = frame.drop(columns=header[0])
    return frame


def _canonical_key_columns(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Rename key columns that differ only in case or spacing; fail naming the ones missing."""
    by_normalised = {_normalised_header(column): column for column in frame.columns}
    renames, missing = {}, []
    for key in KEY_COLUMNS:
        found = by_normalised.get(_normalised_header(key))
        if found is None:
            missing.append(key)
        elif found != key:
            renames[found] = key
    if missing:
        raise missing_columns_error(
            path,
            WHAT,
            missing,
            list(frame.columns),
            "Summary statistics need the Replogle 2022 columns (design §1).",
        )
    return frame.rename(columns=renames)


def _coerce_numeric(frame: pd.DataFrame, path: Path) -> None:
    for column in NUMERIC_COLUMNS:
        values = frame[column]
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna() & values.notna() & (values.astype(str).str.strip() != "")
        if bad.any():
            examples = values[bad].astype(str).unique()[:3].tolist()
            raise ReferenceFormatError(
                f"{path}: column {column!r} must be numeric but holds {int(bad.sum())} text value(s), "
                f"e.g. {examples}. Leave a missing value empty."
            )
        frame[column] = numbers.astype(np.float64)


def _id_lookup(gene_ids_to_symbols: Mapping[str, str] | pd.Series) -> pd.Series:
    lookup = pd.Series(gene_ids_to_symbols, dtype=object)
    lookup.index = lookup.index.astype(str).str.replace(r"\.\d+$", "", regex=True)
    return lookup[~lookup.index.duplicated()].astype(str)


def _normalise_names(
    frame: pd.DataFrame, path: Path, gene_ids_to_symbols: Mapping[str, str] | pd.Series | None
) -> pd.DataFrame:
    names = frame[NAME_COLUMN].fillna("").astype(str).str.strip()
    if (names == "").any():
        rows = (np.flatnonzero((names == "").to_numpy())[:5] + 1).tolist()
        raise ReferenceFormatError(f"{path}: {NAME_COLUMN!r} is empty in data rows {rows}; name every row.")
    gene_id = names.str.extract(_ENSEMBL_ID, expand=False)
    # Replogle names are `<index>_<SYMBOL>_<guides>_<id>`: the symbol is the second field.
    replogle = names.str.contains("_", regex=False)
    symbol = names.where(~replogle, names.str.split("_", n=2).str[1])
    bare_id = ~replogle & gene_id.notna()
    if gene_ids_to_symbols is not None and bare_id.any():
        mapped = gene_id[bare_id].str.replace(r"\.\d+$", "", regex=True).map(_id_lookup(gene_ids_to_symbols))
        if mapped.isna().any():
            warnings.warn(
                f"{path}: {int(mapped.isna().sum())} of {int(bare_id.sum())} Ensembl ids have no symbol "
                f"in gene_ids_to_symbols (e.g. {gene_id[bare_id][mapped.isna()].iloc[0]}); kept as ids.",
                UserWarning,
                stacklevel=3,
            )
        symbol[bare_id] = mapped.fillna(gene_id[bare_id])
    frame[NAME_COLUMN] = names
    frame[PERTURBATION_COLUMN] = symbol.astype(str)
    frame[GENE_ID_COLUMN] = gene_id
    frame[IS_CONTROL_COLUMN] = (symbol == CONTROL_LABEL).to_numpy(dtype=bool)
    return frame


def read_summary_stats(
    path: str | Path,
    sheet: str | None = None,
    gene_ids_to_symbols: Mapping[str, str] | pd.Series | None = None,
) -> pd.DataFrame:
    """Read per-perturbation summary statistics from an .xlsx sheet or a csv/tsv file.

    Parameters
    ----------
    path
        ``summary_stats.xlsx`` (Replogle 2022), ``summary_stats_adamson.csv``, or any csv/tsv
        (optionally gzip-compressed) or workbook with the key columns ``genetic perturbation``,
        ``percent knockdown``, ``number of cells (filtered)``, ``Number of DEGs (anderson-darling)``
        (matched ignoring case and repeated spaces).
    sheet
        Workbook sheet, e.g. ``"TabC_RPE1_summary_statistic"``; ``None`` picks the only data sheet.
    gene_ids_to_symbols
        Ensembl id → symbol (dict or Series, versions ignored), used for names that are bare ids
        (Adamson), e.g. ``pd.Series(adata.var_names, index=adata.var["gene_id"])``. Without it,
        or for ids it lacks (a warning counts them), the id stands as the symbol.

    Returns
    -------
    pandas.DataFrame
        One row per row of the file (guides of one gene stay separate rows; see
        :func:`collapse_duplicates`), its columns kept (an unnamed saved index column dropped),
        the three numeric key columns as float64, and added columns ``perturbation`` (symbol:
        field 2 of a ``_``-separated name, else the mapped id, else the name), ``gene_id``
        (Ensembl id found in the name, else NaN) and ``is_control`` (symbol ``non-targeting``).
        Existing columns with these three names are overwritten.

    Raises
    ------
    ReferenceFormatError
        Missing file, unknown format, unknown or ambiguous sheet, missing key columns, text in a
        numeric key column, or an unnamed row.
    """
    path = require_file(path, WHAT)
    suffix = _check_suffix(path)
    if suffix in EXCEL_SUFFIXES:
        frame = _read_sheet(path, sheet)
    elif sheet is not None:
        raise ReferenceFormatError(f"{path}: sheet={sheet!r} given but a {suffix} file has no sheets.")
    else:
        frame = _read_text(path)
    frame = _canonical_key_columns(frame.reset_index(drop=True), path)
    _coerce_numeric(frame, path)
    return _normalise_names(frame, path, gene_ids_to_symbols)


def _require_normalised(df: pd.DataFrame) -> None:
    missing = [c for c in (PERTURBATION_COLUMN, IS_CONTROL_COLUMN, *NUMERIC_COLUMNS) if c not in df.columns]
    if missing:
        raise ValueError(f"summary statistics lack column(s) {missing}; read them with read_summary_stats.")


def collapse_duplicates(df: pd.DataFrame, how: Literal["best", "first"] = "best") -> pd.DataFrame:
    """Keep one row per perturbed gene; control rows are all kept.

    ``how="best"`` keeps the guide with the strongest knockdown (most negative ``percent
    knockdown``; a missing value ranks last; ties keep file order), because the strong-perturbation
    filter and the knockdown filter judge a gene, not a guide. ``how="first"`` keeps the first row.
    File order is kept. Collapsing first can drop a gene from :func:`strong_perturbations` when
    its best-knockdown guide has too few DEGs or cells (RPE1: 1,543 strong genes, 1,532 after).
    """
    _require_normalised(df)
    if how not in ("best", "first"):
        raise ValueError(f"how must be 'best' or 'first', not {how!r}.")
    ranked = df.sort_values(KNOCKDOWN_COLUMN, kind="stable", na_position="last") if how == "best" else df
    keep = ranked.index[~ranked.duplicated(PERTURBATION_COLUMN) | ranked[IS_CONTROL_COLUMN]]
    return df.loc[df.index.isin(keep)]


def strong_perturbations(
    df: pd.DataFrame,
    min_degs: float = 51,
    max_knockdown: float = -0.3,
    min_cells: float = 26,
) -> pd.Index:
    """Symbols of the strong perturbations (design §3, CausalBench), controls excluded.

    A row passes when ``Number of DEGs (anderson-darling) >= min_degs``, ``percent knockdown
    <= max_knockdown`` and ``number of cells (filtered) >= min_cells`` (every count threshold
    reads "at least"; the defaults are CausalBench's "more than 50" and "more than 25"); a
    missing value fails. A gene passes when any of its rows (guides)
    passes. Returns the unique symbols in file order.
    """
    _require_normalised(df)
    passes = (
        (df[DEGS_COLUMN] >= min_degs)
        & (df[KNOCKDOWN_COLUMN] <= max_knockdown)
        & (df[CELLS_COLUMN] >= min_cells)
        & ~df[IS_CONTROL_COLUMN].astype(bool)
    )
    return pd.Index(df.loc[passes, PERTURBATION_COLUMN].unique(), name=PERTURBATION_COLUMN)
