"""A sweep's leaderboard: one row per point, ranked by the sweep's metric (pure functions).

Each row is built from what a finished point leaves on disk: the training run's ``run.json``
(``best_val_loss`` → metric ``val/loss``) and the evaluation's ``run.json`` (its ``metrics``:
``test_iwelbo``, ``model_mean_pearson``, ``true_network_auroc``, ...). Rows whose metric is
missing rank last.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

#: Columns of every leaderboard before the swept parameters.
BASE_COLUMNS = ("rank", "point", "label", "metric_value")
#: Metrics that every row reports (when known), besides the ranking one.
REPORTED_METRICS = ("val/loss", "test_iwelbo", "model_mean_pearson", "true_network_auroc")


def point_metrics(run_json: Mapping[str, Any], evaluation_json: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every metric of one point: ``val/loss`` from the run, the evaluation's ``metrics``."""
    metrics: dict[str, Any] = dict((evaluation_json or {}).get("metrics", {}))
    metrics["val/loss"] = run_json.get("best_val_loss")
    return metrics


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def rank_rows(rows: Sequence[Mapping[str, Any]], metric: str, goal: str) -> list[dict[str, Any]]:
    """Rows (each with ``point``, ``label``, ``parameters``, ``metrics``, paths) ranked by ``metric``.

    ``goal`` is ``minimize`` or ``maximize``; ties keep the sweep's order; rows without the
    metric come last with no rank.
    """
    if goal not in ("minimize", "maximize"):
        raise ValueError(f"goal must be minimize or maximize, got {goal!r}")
    sign = 1.0 if goal == "minimize" else -1.0
    keyed = []
    for order, row in enumerate(rows):
        value = _number(row["metrics"].get(metric))
        keyed.append(((value is None, sign * value if value is not None else 0.0, order), value, row))
    keyed.sort(key=lambda item: item[0])
    ranked = []
    for position, (_, value, row) in enumerate(keyed, start=1):
        ranked.append({**row, "rank": position if value is not None else None, "metric_value": value})
    return ranked


def table_columns(ranked: Sequence[Mapping[str, Any]]) -> list[str]:
    """Header: rank, point, label, metric value, the swept parameters, the metrics, the paths."""
    parameters: list[str] = []
    for row in ranked:
        parameters += [key for key in row["parameters"] if key not in parameters]
    return [*BASE_COLUMNS, *parameters, *REPORTED_METRICS, "run_dir", "evaluation_dir"]


def table_rows(ranked: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """The leaderboard's cells, in :func:`table_columns` order."""
    columns = table_columns(ranked)
    out = []
    for row in ranked:
        cells = []
        for column in columns:
            if column in row["parameters"]:
                cells.append(row["parameters"][column])
            elif column in REPORTED_METRICS:
                cells.append(row["metrics"].get(column))
            else:
                cells.append(row.get(column))
        out.append(cells)
    return out


def to_csv(ranked: Sequence[Mapping[str, Any]]) -> str:
    """The leaderboard as CSV text (empty cells for unknown values)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table_columns(ranked))
    for cells in table_rows(ranked):
        writer.writerow(["" if cell is None else cell for cell in cells])
    return buffer.getvalue()


def _format(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_html(
    ranked: Sequence[Mapping[str, Any]], name: str, metric: str, goal: str, description: str = ""
) -> str:
    """A self-contained HTML page of the leaderboard (every value escaped)."""
    esc = html.escape
    header = "".join(f"<th>{esc(column)}</th>" for column in table_columns(ranked))
    body = "\n".join(
        "<tr>" + "".join(f"<td>{esc(_format(cell))}</td>" for cell in cells) + "</tr>"
        for cells in table_rows(ranked)
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>Sweep {esc(name)}: leaderboard</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}</style>"
        "</head><body>\n"
        f"<h1>Sweep {esc(name)}</h1>\n<p>{esc(description)}</p>\n"
        f"<p>Ranked by <b>{esc(metric)}</b> ({esc(goal)}); {len(ranked)} points.</p>\n"
        f"<table>\n<tr>{header}</tr>\n{body}\n</table>\n</body></html>\n"
    )
