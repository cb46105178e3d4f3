"""Shared pieces of the reference-file readers (summary statistics and known networks).

Reference files come from outside the package: users pass them by path. The readers live in
:mod:`gpo_vae.data.summary_stats_io` and :mod:`gpo_vae.data.networks`; both raise
:class:`ReferenceFormatError`, naming the file and the fix, when a file does not parse.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from gpo_vae.data.contract import DataContractError

COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zip", ".zst")
TAB_SUFFIXES = (".tsv", ".tab", ".txt")


class ReferenceFormatError(DataContractError):
    """A reference file is missing or malformed; the message names the file and the fix."""


def table_suffix(path: str | Path) -> str:
    """The lower-case format suffix of ``path`` ignoring compression (``a.csv.gz`` → ``.csv``)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def file_stem(path: str | Path) -> str:
    """The file name without its format and compression suffixes (``chipseq_k562.csv.gz`` → ``chipseq_k562``)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if lower.endswith(suffix):
            name, lower = name[: -len(suffix)], lower[: -len(suffix)]
            break
    fmt = table_suffix(name)
    return name[: -len(fmt)] if fmt and lower.endswith(fmt) else name


def delimiter_for(path: str | Path) -> str:
    """Tab for ``.tsv``/``.tab``/``.txt`` files (compressed or not), comma otherwise."""
    return "\t" if table_suffix(path) in TAB_SUFFIXES else ","


def require_file(path: str | Path, what: str) -> Path:
    """``path`` as a :class:`Path`; raise :class:`ReferenceFormatError` when it is not a file."""
    path = Path(path)
    if not path.is_file():
        reason = "is a directory, not a file" if path.is_dir() else "no such file"
        raise ReferenceFormatError(f"{path}: {reason}. Pass the path of the {what} file.")
    return path


# Spellings of a missing value in numeric columns (pandas' defaults, roughly). Text columns get
# none of them: "NA" and "NAN" could be gene symbols.
NA_STRINGS = ("", " ", "NA", "N/A", "#N/A", "NaN", "nan", "-nan", "NULL", "null", "None", "<NA>")


def _read_csv(path: Path, what: str, **kwargs: object) -> pd.DataFrame:
    try:
        return pd.read_csv(path, low_memory=False, **kwargs)
    # OSError/EOFError/zlib.error: a missing, truncated or corrupt (compressed) file.
    except (
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        UnicodeDecodeError,
        OSError,
        EOFError,
        zlib.error,
    ) as err:
        raise ReferenceFormatError(
            f"{path}: not a readable {what} table ({type(err).__name__}: {err}). "
            "Pass a delimited text file (csv or tsv), uncompressed or gzip-compressed."
        ) from err


def read_header(path: Path, what: str, sep: str = ",") -> list[str]:
    """The column names of a delimited file with a header line (only the first line is parsed)."""
    return [str(column) for column in _read_csv(path, what, sep=sep, nrows=0).columns]


def read_delimited(
    path: Path,
    what: str,
    *,
    sep: str = ",",
    header: int | None = 0,
    names: Sequence[str] | None = None,
    usecols: Sequence[str] | None = None,
    text_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """``pandas.read_csv`` with parser failures turned into :class:`ReferenceFormatError`.

    ``text_columns`` are read as strings with no missing-value spellings, because gene symbols
    such as ``NA`` or ``NAN`` must not become NaN; every other column uses :data:`NA_STRINGS`.
    ``usecols`` (or ``names``, for a file without header) must list every column read.
    """
    columns = list(usecols if usecols is not None else names if names is not None else [])
    if not columns:
        columns = read_header(path, what, sep)
    text = set(text_columns)
    return _read_csv(
        path,
        what,
        sep=sep,
        header=header,
        names=names,
        usecols=usecols,
        dtype=dict.fromkeys(text, str),
        keep_default_na=False,
        na_values={column: list(NA_STRINGS) for column in columns if column not in text},
    )


def missing_columns_error(
    path: Path, what: str, missing: Sequence[str], found: Sequence[object], hint: str = ""
) -> ReferenceFormatError:
    """The error for a table that lacks required columns, listing what it has instead."""
    shown = [str(column) for column in found][:20]
    message = f"{path}: the {what} table lacks column(s) {list(missing)} (columns present: {shown})."
    return ReferenceFormatError(f"{message} {hint}".strip())
