"""Known gene-regulatory and interaction networks (design §8): read them into one edge table.

Every reader returns a DataFrame with ``source``, ``target`` (gene symbols, str), ``directed``
(bool) and, where the file has one, ``weight`` (float). Edges are whitespace-stripped, free of
self-loops and unique; an undirected edge is stored once with ``source < target`` and counts in
both directions (:func:`network_adjacency`). :data:`NETWORK_FORMATS` lists the formats.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gpo_vae.data.reference import (
    ReferenceFormatError,
    delimiter_for,
    file_stem,
    missing_columns_error,
    read_delimited,
    read_header,
    require_file,
)

EDGE_COLUMNS = ("source", "target", "directed")
WEIGHT_COLUMN = "weight"
DOROTHEA_LEVELS = "ABCDE"
# Tokens that stand for "no gene" in a CORUM member list (it has empty fields and "N/A").
_NOT_A_GENE = frozenset(("", "N/A", "NA", "None"))
_BOOLEAN_STRINGS = {
    "true": True,
    "t": True,
    "1": True,
    "yes": True,
    "false": False,
    "f": False,
    "0": False,
    "no": False,
}

WHAT = "network"


def _read_named(
    path: Path,
    fmt: str,
    columns: dict[str, str],
    *,
    numeric: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> pd.DataFrame:
    """Read the file columns ``columns`` (file name → our name), checking they exist first."""
    sep = delimiter_for(path)
    header = read_header(path, f"{fmt} {WHAT}", sep)
    missing = [column for column in columns if column not in header]
    if missing:
        raise missing_columns_error(
            path,
            f"{fmt} {WHAT}",
            missing,
            header,
            f"The format comes from the file name (here {fmt}); formats: {', '.join(NETWORK_FORMATS)}. "
            f"For --networks, name the file after its format (e.g. trrust_{path.name}, or give an "
            "edge list columns source and target); from Python, pass read_network(path, format=...).",
        )
    usecols = [*columns, *(column for column in optional if column in header)]
    text = [column for column in usecols if column not in numeric]
    frame = read_delimited(path, f"{fmt} {WHAT}", sep=sep, usecols=usecols, text_columns=text)
    for column in numeric:
        if column in frame.columns and not pd.api.types.is_numeric_dtype(frame[column]):
            raise ReferenceFormatError(f"{path}: column {column!r} of the {fmt} {WHAT} must be numeric.")
    return frame.rename(columns=columns)


def _parse_chipseq(path: Path) -> pd.DataFrame:
    return _read_named(
        path, "chipseq", {"source": "source", "target": "target", "weight": WEIGHT_COLUMN}, numeric=["weight"]
    )


def _parse_corum(path: Path) -> pd.DataFrame:
    complexes = _read_named(path, "corum", {"Genes": "genes"})
    members = complexes["genes"].str.split(";").explode().str.strip()
    members = members[~members.isin(_NOT_A_GENE)]
    long = pd.DataFrame({"complex": members.index.to_numpy(), "gene": members.to_numpy()}).drop_duplicates()
    # A self-join per complex gives every ordered pair; keeping source < target leaves each
    # unordered pair once. Largest complex (~140 genes) makes ~20k rows: cheap.
    pairs = long.merge(long, on="complex", suffixes=("_a", "_b"))
    pairs = pairs[pairs["gene_a"] < pairs["gene_b"]]
    return pd.DataFrame({"source": pairs["gene_a"].to_numpy(), "target": pairs["gene_b"].to_numpy()})


def _parse_dorothea(path: Path, confidence: str | Iterable[str] | None = None) -> pd.DataFrame:
    frame = _read_named(path, "dorothea", {"tf": "source", "target": "target", "confidence": "confidence"})
    if confidence is not None:
        levels = {level.strip().upper() for level in confidence}
        unknown = sorted(levels - set(DOROTHEA_LEVELS))
        if unknown or not levels:
            raise ValueError(f"confidence levels must be letters of {DOROTHEA_LEVELS!r}, got {confidence!r}.")
        frame = frame[frame["confidence"].str.strip().str.upper().isin(levels)]
    return frame.drop(columns="confidence")


def _parse_regnetwork(path: Path) -> pd.DataFrame:
    names = ["source", "source_id", "target", "target_id"]
    return read_delimited(
        path,
        f"regnetwork {WHAT}",
        sep="\t",
        header=None,
        names=names,
        usecols=["source", "target"],
        text_columns=["source", "target"],
    )


def _parse_remap(path: Path) -> pd.DataFrame:
    return _read_named(path, "remap", {"tf": "source", "target": "target"})


def _parse_string(path: Path) -> pd.DataFrame:
    return _read_named(
        path,
        "string",
        {"protein1": "source", "protein2": "target", "score": WEIGHT_COLUMN},
        numeric=["score"],
    )


def _parse_trrust(path: Path) -> pd.DataFrame:
    return _read_named(path, "trrust", {"tf": "source", "target": "target"})


def _parse_edgelist(path: Path) -> pd.DataFrame:
    frame = _read_named(
        path,
        "edgelist",
        {"source": "source", "target": "target"},
        numeric=["weight"],
        optional=["weight", "directed"],
    )
    if "directed" in frame.columns:
        flags = frame["directed"].astype(str).str.strip().str.lower().map(_BOOLEAN_STRINGS)
        if flags.isna().any():
            bad = frame.loc[flags.isna(), "directed"].unique()[:3].tolist()
            raise ReferenceFormatError(f"{path}: column 'directed' must hold true/false, found {bad}.")
        frame["directed"] = flags.astype(bool)
    return frame


@dataclass(frozen=True)
class NetworkFormat:
    """A reference-network file format: how to parse it and whether its edges are directed.

    ``directed`` is ``None`` where the file says per edge (an edgelist's optional ``directed``
    column; directed when absent). ``options`` names the keyword arguments the parser accepts.
    """

    name: str
    description: str
    parser: Callable[..., pd.DataFrame]
    directed: bool | None
    options: frozenset[str] = field(default_factory=frozenset)


NETWORK_FORMATS: dict[str, NetworkFormat] = {
    fmt.name: fmt
    for fmt in (
        NetworkFormat(
            "chipseq",
            "ChIP-seq TF→target (CausalBench): columns index,target,weight,source",
            _parse_chipseq,
            True,
        ),
        NetworkFormat(
            "corum", "CORUM complexes: every pair of `;`-separated Genes, undirected", _parse_corum, False
        ),
        NetworkFormat(
            "dorothea",
            "DoRothEA TF regulons: tf,confidence,target,mor; filter with confidence='ABC'",
            _parse_dorothea,
            True,
            frozenset({"confidence"}),
        ),
        NetworkFormat(
            "regnetwork",
            "RegNetwork tsv without header: tf, tf id, target, target id",
            _parse_regnetwork,
            True,
        ),
        NetworkFormat("remap", "ReMap ChIP-seq TF→target: tf,target", _parse_remap, True),
        NetworkFormat(
            "string",
            "STRING links: score,protein1,protein2 (score kept as weight), undirected",
            _parse_string,
            False,
        ),
        NetworkFormat("trrust", "TRRUST literature TF→target: tf,target,mor,pubmed_id", _parse_trrust, True),
        NetworkFormat(
            "edgelist",
            "csv/tsv with source,target and optional weight, directed (default directed)",
            _parse_edgelist,
            None,
        ),
    )
}


def detect_network_format(path: str | Path) -> str:
    """The format named by the file name: its first word if that is a format name (so
    ``remap_chipseq`` is ReMap), else the only format word in it, else ``edgelist``."""
    words = [word for word in re.split(r"[^a-z0-9]+", file_stem(path).lower()) if word]
    if words and words[0] in NETWORK_FORMATS:
        return words[0]
    named = {word for word in words if word in NETWORK_FORMATS}
    return named.pop() if len(named) == 1 else "edgelist"


def _tidy_edges(raw: pd.DataFrame, directed: bool | None) -> pd.DataFrame:
    """Strip, drop missing names and self-loops, orient undirected pairs, deduplicate."""
    source = raw["source"].fillna("").astype(str).str.strip()
    target = raw["target"].fillna("").astype(str).str.strip()
    if "directed" in raw.columns:
        is_directed = raw["directed"].to_numpy(dtype=bool)
    else:
        is_directed = np.full(len(raw), True if directed is None else directed)
    swap = (~is_directed & (source > target)).to_numpy()
    edges = pd.DataFrame(
        {
            "source": np.where(swap, target, source),
            "target": np.where(swap, source, target),
            "directed": is_directed,
        }
    )
    if WEIGHT_COLUMN in raw.columns:
        edges[WEIGHT_COLUMN] = pd.to_numeric(raw[WEIGHT_COLUMN], errors="coerce").to_numpy(dtype=np.float64)
    keep = (edges["source"] != "") & (edges["target"] != "") & (edges["source"] != edges["target"])
    edges = edges[keep.to_numpy()]
    if WEIGHT_COLUMN in edges.columns:
        # Of duplicate edges keep the strongest (largest |weight|), then restore file order.
        edges = edges.iloc[np.argsort(-edges[WEIGHT_COLUMN].abs().fillna(-np.inf).to_numpy(), kind="stable")]
    edges = edges.drop_duplicates(list(EDGE_COLUMNS)).sort_index()
    return edges.reset_index(drop=True)


def read_network(
    path: str | Path, format: str | None = None, *, confidence: str | Iterable[str] | None = None
) -> pd.DataFrame:
    """Read a reference network into an edge table.

    Parameters
    ----------
    path
        The network file (csv/tsv, optionally gzip-compressed).
    format
        A key of :data:`NETWORK_FORMATS`; ``None`` detects it from the file name
        (:func:`detect_network_format`).
    confidence
        DoRothEA only: the confidence levels to keep, e.g. ``"ABC"`` or ``["A", "B"]`` (all when
        ``None``).

    Returns
    -------
    pandas.DataFrame
        Columns ``source``, ``target``, ``directed`` and, for chipseq, string and edgelists with
        one, ``weight``; see the module docstring for the normal form.
    """
    path = require_file(path, WHAT)
    name = detect_network_format(path) if format is None else format
    if name not in NETWORK_FORMATS:
        raise ValueError(f"unknown network format {name!r}; known: {list(NETWORK_FORMATS)}.")
    fmt = NETWORK_FORMATS[name]
    options = {"confidence": confidence} if confidence is not None else {}
    unsupported = set(options) - fmt.options
    if unsupported:
        raise ValueError(f"option(s) {sorted(unsupported)} do not apply to the {name} format.")
    return _tidy_edges(fmt.parser(path, **options), fmt.directed)


def _require_edges(df: pd.DataFrame) -> None:
    missing = [column for column in EDGE_COLUMNS if column not in df.columns]
    if missing:
        raise ValueError(f"edge table lacks column(s) {missing}; build it with read_network.")


def network_adjacency(df: pd.DataFrame, nodes: Sequence[str]) -> np.ndarray:
    """Boolean adjacency among ``nodes``: ``A[i, j]`` when an edge leads from ``nodes[i]`` to
    ``nodes[j]``; an undirected edge sets both ``A[i, j]`` and ``A[j, i]``. Edges touching a
    node outside ``nodes`` are ignored; ``nodes`` must be unique."""
    _require_edges(df)
    index = pd.Index(nodes)
    if not index.is_unique:
        raise ValueError(
            f"nodes must be unique; repeated: {index[index.duplicated()].unique()[:5].tolist()}."
        )
    rows = index.get_indexer(df["source"])
    cols = index.get_indexer(df["target"])
    inside = (rows >= 0) & (cols >= 0)
    undirected = inside & ~df["directed"].to_numpy(dtype=bool)
    adjacency = np.zeros((len(index), len(index)), dtype=bool)
    adjacency[rows[inside], cols[inside]] = True
    adjacency[cols[undirected], rows[undirected]] = True
    return adjacency


def network_edge_set(df: pd.DataFrame, nodes: Iterable[str] | None = None) -> set[tuple[str, str]]:
    """Directed ``(source, target)`` pairs, undirected edges in both orientations, optionally
    only those with both ends in ``nodes``."""
    _require_edges(df)
    if nodes is not None:
        wanted = set(nodes)
        df = df[df["source"].isin(wanted) & df["target"].isin(wanted)]
    forward = set(zip(df["source"], df["target"], strict=True))
    undirected = df[~df["directed"].to_numpy(dtype=bool)]
    return forward | set(zip(undirected["target"], undirected["source"], strict=True))


def union_networks(dfs: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """The union of edge tables as one edge table (``source``, ``target``, ``directed``).

    Weights are dropped: their scales differ between networks. An edge present both as
    directed and undirected is kept in both forms; :func:`network_adjacency` treats that the
    same as the undirected edge alone.
    """
    frames = list(dfs)
    for frame in frames:
        _require_edges(frame)
    if not frames:
        return pd.DataFrame(
            {
                "source": pd.Series(dtype=object),
                "target": pd.Series(dtype=object),
                "directed": pd.Series(dtype=bool),
            }
        )
    edges = pd.concat([frame[list(EDGE_COLUMNS)] for frame in frames], ignore_index=True)
    return _tidy_edges(edges, directed=None)
