"""Reading and checking the evaluation tables the report is built from (contract: package docstring).

Every table is optional: a missing file is ``None`` and its section says "not computed". A file
that exists but lacks a required column is a broken contract and raises ``ValueError`` naming
the file, so an evaluation bug cannot hide behind an empty section.

Name columns (genes, perturbations, nodes, methods) are read as text without NA conversion, so
a gene called ``NA`` or ``nan`` stays a name; in number columns an empty cell, ``nan``, ``NaN``
or ``NA`` is a missing value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpo_vae.stats.common_labels import on_common_labels

NA_STRINGS = ["", "nan", "NaN", "NA", "N/A", "null"]
RUN_FILE = "run.json"
METRIC_PATTERN = re.compile(
    r"^((pearson|r2|jaccard)(_top\d+|_specific)?|discrimination_l1|centroid_accuracy)$"
)
#: Number columns of ``unseen_metrics.csv`` beyond pearson and r2 (``interaction_significant`` is text).
UNSEEN_PATTERN = re.compile(
    r"^(pearson|r2|rank|interaction_(?!significant)|discrimination_l1|centroid_accuracy).*$"
)
HELDOUT = "heldout_test"
ALL_CELLS = "all_cells"


@dataclass(frozen=True)
class TableSpec:
    """Columns of one CSV: ``names`` (text) and ``numbers`` (float) are required; optional number
    columns are named or match ``number_pattern``."""

    file: str
    names: tuple[str, ...]
    numbers: tuple[str, ...]
    optional_numbers: tuple[str, ...] = ()
    number_pattern: re.Pattern[str] | None = None


SPECS: dict[str, TableSpec] = {
    spec.file.removesuffix(".csv"): spec
    for spec in (
        TableSpec(
            "prediction_metrics.csv",
            ("method", "reference", "subset", "perturbation"),
            ("pearson", "r2"),
            number_pattern=METRIC_PATTERN,
        ),
        TableSpec("ate_scatter.csv", ("perturbation", "gene"), ("observed", "predicted"), ("mean_baseline",)),
        # observed, then one column per method (the model, baselines): every column after the names
        TableSpec(
            "on_target.csv",
            ("perturbation", "target"),
            ("observed",),
            number_pattern=re.compile(r"^(?!perturbation$|target$)."),
        ),
        TableSpec("qc_ratio.csv", (), ("t", "pass_ratio_generated", "pass_ratio_data")),
        TableSpec("summary_stats_agreement.csv", ("quantity",), ("spearman", "n")),
        TableSpec("summary_stats_points.csv", ("perturbation", "quantity"), ("predicted", "reported")),
        TableSpec("grn_nodes.csv", ("node", "kind"), ()),
        TableSpec("grn_edges.csv", ("source", "target"), ("p",)),
        TableSpec(
            "grn_statistical.csv",
            ("method", "k"),
            (
                "n_edges",
                "n_tested",
                "true_positives",
                "false_positives",
                "precision",
                "mean_wasserstein",
                "path_mean_wasserstein",
                "false_omission_rate",
                "negative_mean_wasserstein",
            ),
        ),
        TableSpec(
            "grn_reference.csv",
            ("method", "network", "reason"),
            ("precision", "recall", "auprc", "auroc", "n_positive", "positive_rate"),
            ("n_predicted", "true_positives", "precision_at_1000"),
        ),
        TableSpec("grn_pr_curves.csv", ("method", "network"), ("recall", "precision")),
        TableSpec(
            "grn_ranking.csv",
            ("method", "reference", "ranked_by"),
            ("rank", "k", "auprc", "precision_at_k", "mean_wasserstein", "false_omission_rate"),
            optional_numbers=("tied_at_k",),
            number_pattern=re.compile(r"^precision_at_\d+$"),
        ),
        TableSpec(
            "unseen_metrics.csv",
            ("kind", "method", "perturbation"),
            ("pearson", "r2"),
            number_pattern=UNSEEN_PATTERN,
        ),
        TableSpec(
            "scaled_scores.csv",
            ("task", "metric", "method", "role", "baseline"),
            (
                "n",
                "mean",
                "mean_low",
                "mean_high",
                "b",
                "r",
                "headroom",
                "scaled",
                "scaled_low",
                "scaled_high",
            ),
            ("n_left_out", "headroom_low", "headroom_high"),
        ),
        TableSpec("unseen_interaction_scatter.csv", ("perturbation", "gene"), ("observed", "predicted")),
        TableSpec("unseen_neighbours.csv", ("method", "gene", "neighbour"), ("weight",)),
        TableSpec(
            "perturbation_table.csv",
            ("perturbation", "measured", "status", "reason"),
            ("cells",),
            ("on_target_change", "degs", "cells_filtered", "cells_on_target"),
        ),
    )
}
MASK_FILE = "grn_mask.csv"
SCREEN_FILE = "screen.json"
#: The artifact record's keys that ``screen.json`` carries.
SCREEN_KEYS = ("preprocessing", "modality", "pairing", "batches", "layout", "splits", "nodes")


def screen_tables(record: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """``screen.json`` and ``perturbation_table.csv`` of the report, from an artifact's record."""
    screen = {key: record.get(key) for key in SCREEN_KEYS if key in record}
    rows = record.get("perturbation_table")
    table = pd.DataFrame(rows) if rows else None
    if table is not None:
        table = table.drop(columns=[c for c in ("stats_row",) if c in table.columns])
    return screen, table


def headline_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean Pearson r, R² and perturbation-specific r of each method on the held-out ATE (all
    cells), one row per method (``mean_pearson_specific`` NaN when the table has none), every
    method averaged over the same perturbations: those every method that scores any has a value
    for (on a held-out split the training mean has none for the held-out labels; the model's mean
    over all of them beside the training mean's over the seen ones compared different labels)."""
    held = on_common_labels(
        metrics[(metrics["reference"] == HELDOUT) & (metrics["subset"] == ALL_CELLS)], "pearson"
    )
    grouped = held.groupby("method", sort=False)
    columns = {"mean_pearson": grouped["pearson"].mean(), "mean_r2": grouped["r2"].mean()}
    columns["mean_pearson_specific"] = (
        grouped["pearson_specific"].mean()
        if "pearson_specific" in held.columns
        else columns["mean_r2"] * float("nan")
    )
    columns["n_perturbations"] = grouped["pearson"].size()
    return pd.DataFrame(columns).reset_index()


@dataclass(frozen=True)
class EvaluationTables:
    """The contents of an evaluation directory; ``None`` where a file is absent."""

    run: dict[str, Any] | None
    prediction_metrics: pd.DataFrame | None
    ate_scatter: pd.DataFrame | None
    qc_ratio: pd.DataFrame | None
    summary_stats_agreement: pd.DataFrame | None
    summary_stats_points: pd.DataFrame | None
    grn_mask: pd.DataFrame | None
    grn_nodes: pd.DataFrame | None
    grn_edges: pd.DataFrame | None
    grn_statistical: pd.DataFrame | None
    grn_reference: pd.DataFrame | None
    grn_pr_curves: pd.DataFrame | None
    grn_ranking: pd.DataFrame | None = None
    perturbation_table: pd.DataFrame | None = None
    screen: dict[str, Any] | None = None
    unseen_metrics: pd.DataFrame | None = None
    unseen_interaction_scatter: pd.DataFrame | None = None
    unseen_neighbours: pd.DataFrame | None = None
    scaled_scores: pd.DataFrame | None = None
    on_target: pd.DataFrame | None = None

    def present(self) -> dict[str, bool]:
        """Which inputs were found, by field name."""
        return {f.name: getattr(self, f.name) is not None for f in fields(self)}


def _read_csv(path: Path, spec: TableSpec) -> pd.DataFrame:
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in (*spec.names, *spec.numbers) if c not in header]
    if missing:
        raise ValueError(f"{path.name}: missing required columns {missing}; has {list(header)}")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    optional = [c for c in frame.columns if c in spec.optional_numbers]
    if spec.number_pattern is not None:
        optional += [c for c in frame.columns if spec.number_pattern.match(c) and c not in spec.numbers]
    for column in [*spec.numbers, *optional]:
        text = frame[column].str.strip()
        try:
            frame[column] = pd.to_numeric(text.mask(text.isin(NA_STRINGS))).astype(np.float64)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path.name}: column {column!r} is not numeric ({error})") from None
    return frame


def read_mask(path: Path) -> pd.DataFrame:
    """The T × T mask table (index = source nodes, columns = target nodes, same order)."""
    text = pd.read_csv(path, dtype=str, keep_default_na=False)
    cells = text.iloc[:, 1:].to_numpy(dtype=object)
    cells[np.isin(cells, NA_STRINGS)] = "nan"
    try:
        values = cells.astype(np.float64)
    except ValueError as error:
        raise ValueError(f"{path.name}: mask values are not numeric ({error})") from None
    frame = pd.DataFrame(values, index=pd.Index(text.iloc[:, 0], name=None), columns=text.columns[1:])
    if frame.shape[0] != frame.shape[1] or not frame.index.equals(frame.columns):
        raise ValueError(
            f"{path.name}: need the same node names, in the same order, as rows and columns "
            f"(got {frame.shape[0]} rows, {frame.shape[1]} columns)"
        )
    values = frame.to_numpy()
    if np.any((values < 0) | (values > 1)):
        raise ValueError(f"{path.name}: mask probabilities must lie in [0, 1]")
    return frame


def _check_run(payload: Any, path: Path) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ValueError(f"{path.name}: expected a JSON object, got {type(payload).__name__}")
    for key in ("data", "metrics", "config", "packages"):
        if key in payload and not isinstance(payload[key], dict):
            raise ValueError(f"{path.name}: {key!r} must be an object")
    return payload


def _canonical_k(k: str) -> str:
    """``"250.0"`` → ``"250"`` (a float-typed writer), anything else stripped as is."""
    k = k.strip()
    try:
        value = float(k)
    except ValueError:
        return k
    return str(int(value)) if value.is_integer() else k


def load_tables(eval_dir: str | Path) -> EvaluationTables:
    """Read every known table of ``eval_dir`` (absent files are ``None``).

    Raises
    ------
    FileNotFoundError
        When ``eval_dir`` is not a directory or holds none of the known files.
    ValueError
        When a file breaks the contract (missing column, non-numeric value, malformed mask).
    """
    root = Path(eval_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"evaluation directory {root} does not exist")
    tables: dict[str, Any] = {}
    for name, spec in SPECS.items():
        path = root / spec.file
        tables[name] = _read_csv(path, spec) if path.is_file() else None
    mask_path = root / MASK_FILE
    tables["grn_mask"] = read_mask(mask_path) if mask_path.is_file() else None
    run_path = root / RUN_FILE
    tables["run"] = _check_run(json.loads(run_path.read_text()), run_path) if run_path.is_file() else None
    screen_path = root / SCREEN_FILE
    tables["screen"] = (
        _check_run(json.loads(screen_path.read_text()), screen_path) if screen_path.is_file() else None
    )
    if all(value is None for value in tables.values()):
        known = sorted([RUN_FILE, MASK_FILE, SCREEN_FILE, *(s.file for s in SPECS.values())])
        raise FileNotFoundError(f"{root} holds none of the evaluation files {known}")
    if tables["grn_statistical"] is not None:
        tables["grn_statistical"]["k"] = tables["grn_statistical"]["k"].map(_canonical_k)
    if tables["grn_nodes"] is not None:
        bad = set(tables["grn_nodes"]["kind"]) - {"P", "A"}
        if bad:
            raise ValueError(f"grn_nodes.csv: kind must be 'P' or 'A', got {sorted(bad)}")
    return EvaluationTables(**tables)


#: The edge threshold of an evaluation that records none (the published p > 0.5).
DEFAULT_EDGE_THRESHOLD = 0.5


def edge_threshold(tables: EvaluationTables) -> float:
    """The probability an edge of the model's graph exceeds (``run.json`` ``metrics.grn_threshold``:
    calibrated when the mask started uniform at the configured one; else the configured one)."""
    run = tables.run or {}
    found = run.get("metrics", {}).get("grn_threshold")
    if found is None:
        found = run.get("config", {}).get("evaluation", {}).get("grn_threshold", DEFAULT_EDGE_THRESHOLD)
    return float(found)


def own_graph_key(statistical: pd.DataFrame | None) -> str:
    """The ``k`` of the model's thresholded graph in ``grn_statistical.csv`` (``p>0.5``, or the
    calibrated threshold's label): the one ``k`` that is no number."""
    if statistical is not None:
        for k in dict.fromkeys(statistical["k"].astype(str)):
            if k.startswith("p>"):
                return k
    return f"p>{DEFAULT_EDGE_THRESHOLD:g}"


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The metric columns of a prediction table, in reading order (pearson, r2, top-k, Jaccard,
    discrimination, centroid accuracy)."""
    found = [c for c in frame.columns if METRIC_PATTERN.match(c)]

    def order(column: str) -> tuple[int, int, bool]:
        k = int(column.rsplit("top", 1)[1]) if "_top" in column else 0
        # pearson and r2 pair up per k; Jaccard after them, then the cross-perturbation metrics
        group = (
            2 if column in ("discrimination_l1", "centroid_accuracy") else int(column.startswith("jaccard"))
        )
        return (group, k, column.startswith("r2"))

    return sorted(found, key=order)


def summarise_predictions(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, median and count (non-NaN) of each metric per (method, reference, subset), every
    method of a (reference, subset) over the same perturbations (those all of them score by Pearson
    r: :func:`~gpo_vae.stats.common_labels.on_common_labels`).

    Returns
    -------
    Long table: ``method``, ``reference``, ``subset``, ``metric``, ``mean``, ``median``, ``n``.
    """
    columns = metric_columns(metrics)
    if "pearson" in metrics.columns and len(metrics):
        metrics = pd.concat(
            [
                on_common_labels(part, "pearson")
                for _, part in metrics.groupby(["reference", "subset"], sort=False)
            ]
        )
    long = metrics.melt(
        id_vars=["method", "reference", "subset"], value_vars=columns, var_name="metric", value_name="value"
    )
    grouped = long.groupby(["method", "reference", "subset", "metric"], sort=False)["value"]
    return grouped.agg(mean="mean", median="median", n="count").reset_index()
