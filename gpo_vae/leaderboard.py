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
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Columns of every leaderboard before the swept parameters.
BASE_COLUMNS = ("rank", "point", "label", "metric_value")
#: Metrics that every row reports (when known), besides the ranking one: the model's mean
#: Pearson r beside the per-perturbation training-mean baseline's on the same cells, and their gap.
REPORTED_METRICS = (
    "val/loss",
    "test_iwelbo",
    "model_mean_pearson",
    "mean_baseline_mean_pearson",
    "model_minus_mean_baseline",
    "true_network_auroc",
)
MODEL, BASELINE, GAP = "model_mean_pearson", "mean_baseline_mean_pearson", "model_minus_mean_baseline"


def point_metrics(run_json: Mapping[str, Any], evaluation_json: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every metric of one point: ``val/loss`` from the run, the evaluation's ``metrics``."""
    metrics: dict[str, Any] = dict((evaluation_json or {}).get("metrics", {}))
    metrics["val/loss"] = run_json.get("best_val_loss")
    model, baseline = _number(metrics.get(MODEL)), _number(metrics.get(BASELINE))
    metrics[GAP] = model - baseline if model is not None and baseline is not None else None
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


def baseline_summary(ranked: Sequence[Mapping[str, Any]]) -> str:
    """One sentence: how many points' mean Pearson r beats the training-mean baseline's."""
    gaps = [_number(row["metrics"].get(GAP)) for row in ranked]
    known = [gap for gap in gaps if gap is not None]
    if not known:
        return "No point has both the model's and the training-mean baseline's mean Pearson r."
    wins = sum(gap > 0 for gap in known)
    best = max(known)
    return (
        f"{wins} of {len(known)} points beat the per-perturbation training-mean baseline on mean Pearson r "
        f"(held-out ATE); the closest comes within {-best:.3g}."
        if wins == 0
        else f"{wins} of {len(known)} points beat the per-perturbation training-mean baseline on mean "
        f"Pearson r (held-out ATE); the best by {best:.3g}."
    )


def _link(path: Any, base_dir: str | os.PathLike[str] | None, name: str) -> str:
    if not path:
        return "—"
    target = os.path.join(str(path), name)
    href = os.path.relpath(target, base_dir) if base_dir is not None else target
    return f'<a href="{html.escape(Path(href).as_posix())}">{html.escape(name)}</a>'


STYLE = (
    "body{font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2em;color:#1f2933}"
    "table{border-collapse:collapse}td,th{border-bottom:1px solid #d9e2ec;padding:4px 8px;text-align:right}"
    "th{background:#eef2f6;position:sticky;top:0}td.text,th.text{text-align:left}"
    "td.baseline,th.baseline{background:#f3f4f6}td.worse{color:#c0392b}td.better{color:#2e8540}"
    ".verdict{border-left:5px solid #c0392b;background:#fdf0ee;padding:8px 12px;max-width:60em}"
    ".verdict.good{border-color:#2e8540;background:#eef7f0}"
)


def to_html(
    ranked: Sequence[Mapping[str, Any]],
    name: str,
    metric: str,
    goal: str,
    description: str = "",
    base_dir: str | os.PathLike[str] | None = None,
) -> str:
    """A self-contained HTML page of the leaderboard (every value escaped).

    The training-mean baseline's column sits beside the model's, the gap is coloured, and each
    point links to its report (relative to ``base_dir``, the leaderboard's folder, when given).
    """
    esc = html.escape
    columns = table_columns(ranked)
    text_columns = {"point", "label", "run_dir", "evaluation_dir"}

    def th(column: str) -> str:
        kind = "baseline" if column == BASELINE else "text" if column in text_columns else ""
        shown = {BASELINE: "mean baseline r", MODEL: "model r", GAP: "model − baseline"}.get(column, column)
        return f'<th class="{kind}">{esc(shown)}</th>'

    def td(column: str, cell: Any) -> str:
        if column == "evaluation_dir":
            return f'<td class="text">{_link(cell, base_dir, "report.html")}</td>'
        if column == "run_dir":
            return f'<td class="text">{esc(Path(str(cell)).name) if cell else "—"}</td>'
        kind = "text" if column in text_columns else ""
        if column == BASELINE:
            kind = "baseline"
        elif column == GAP and _number(cell) is not None:
            kind = "better" if cell > 0 else "worse"
        return f'<td class="{kind}">{esc(_format(cell))}</td>'

    header = "".join(th(column) for column in columns)
    body = "\n".join(
        "<tr>" + "".join(td(column, cell) for column, cell in zip(columns, cells, strict=True)) + "</tr>"
        for cells in table_rows(ranked)
    )
    summary = baseline_summary(ranked)
    tone = "good" if any((_number(row["metrics"].get(GAP)) or 0.0) > 0 for row in ranked) else ""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>Sweep {esc(name)}: leaderboard</title><style>{STYLE}</style>"
        "</head><body>\n"
        f"<h1>Sweep {esc(name)}</h1>\n<p>{esc(description)}</p>\n"
        f"<p>Ranked by <b>{esc(metric)}</b> ({esc(goal)}); {len(ranked)} points.</p>\n"
        f'<p class="verdict {tone}" id="baseline-verdict">{esc(summary)}</p>\n'
        f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>{body}</tbody>\n</table>\n"
        "<p>Model r and mean baseline r: mean Pearson r of each point's predicted and of the training "
        "cells' per-perturbation ATE against the held-out ATE, on the same perturbations.</p>\n"
        "</body></html>\n"
    )
