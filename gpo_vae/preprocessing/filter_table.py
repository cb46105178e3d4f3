"""The perturbation table: one row per label, what the filters saw, and which one removed it.

Every run prints it (:func:`format_table`) and stores it in the artifact's record, so a user
sees for each perturbation its cells, whether its target is measured, its on-target change and
DEGs from the summary statistics, and ``kept`` or the filter that removed it with the value
that failed and the config key that sets the threshold. A filter that would leave nothing
raises :class:`PerturbationFilterError` carrying a short form of the table.

The modality (:func:`resolve_modality`) decides which way the on-target change must go.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from gpo_vae.data.labels import label_genes
from gpo_vae.data.summary_stats_io import (
    CELLS_COLUMN,
    DEGS_COLUMN,
    IS_CONTROL_COLUMN,
    KNOCKDOWN_COLUMN,
    PERTURBATION_COLUMN,
)
from gpo_vae.errors import UserError
from gpo_vae.preprocessing.config import PerturbationFilterConfig

KEPT = "kept"
#: Rows shown by the short form of the table in an error message.
ERROR_ROWS = 8


class PerturbationFilterError(UserError, ValueError):
    """A filter left no perturbation (or too few); the message holds a short table and the
    config keys to change, ``table`` the whole table (or None)."""

    table: pd.DataFrame | None = None


def perturbation_table(
    labels: Sequence[str] | np.ndarray, stats: pd.DataFrame | None, var_names: pd.Index, control_label: str
) -> pd.DataFrame:
    """One row per perturbation label (sorted): its cells, targets measured, and whether the
    summary statistics have a row for it (the statistics' values are filled by :func:`strong_decisions`)."""
    counts = pd.Series(np.asarray(labels).astype(str)).value_counts()
    counts = counts.drop(control_label, errors="ignore").sort_index()
    measured_genes = set(pd.Index(var_names).astype(str))

    def measured(label: str) -> str:
        genes = label_genes(label)
        found = sum(gene in measured_genes for gene in genes)
        return "yes" if found == len(genes) else "no" if found == 0 else f"{found} of {len(genes)}"

    table = pd.DataFrame(index=pd.Index(counts.index.astype(str), name="perturbation"))
    table["cells"] = counts.to_numpy(dtype=np.int64)
    table["measured"] = [measured(label) for label in table.index]
    known = (
        set() if stats is None else set(stats.loc[~stats[IS_CONTROL_COLUMN], PERTURBATION_COLUMN].astype(str))
    )
    table["stats_row"] = [label in known for label in table.index] if stats is not None else True
    for column in ("on_target_change", "degs", "cells_filtered"):
        table[column] = np.nan
    table["cells_on_target"] = table["cells"]
    table["status"] = KEPT
    table["reason"] = ""
    return table


def resolve_modality(
    requested: str, stats: pd.DataFrame | None, var_names: pd.Index
) -> tuple[str, dict[str, Any]]:
    """The modality to filter by, and why: ``requested`` unless it is ``auto``; then CRISPRa
    when the median on-target change of the single perturbations whose target is measured is
    positive, CRISPRi otherwise (also when no target is measured: no on-target rule applies then)."""
    if requested != "auto":
        return requested, {"requested": requested, "basis": "set in the config"}
    basis: dict[str, Any] = {"requested": "auto"}
    if stats is not None:
        rows = stats[~stats[IS_CONTROL_COLUMN]]
        singles = rows[PERTURBATION_COLUMN].astype(str)
        measured = singles.isin(set(pd.Index(var_names).astype(str))) & ~singles.str.contains(
            "+", regex=False
        )
        change = rows.loc[measured.to_numpy(), KNOCKDOWN_COLUMN].astype(float)
        change = change[np.isfinite(change)]
        if len(change):
            median = float(change.median())
            basis.update(
                n_measured_targets=len(change),
                median_on_target_change=median,
                basis=f"median on-target change {median:+.2f} over {len(change)} measured targets",
            )
            return ("crispra" if median > 0 else "crispri"), basis
    basis.update(n_measured_targets=0, basis="no measured target with an on-target change: CRISPRi assumed")
    return "crispri", basis


def _row_failures(
    stats: pd.DataFrame, cfg: PerturbationFilterConfig, modality: str, min_degs: int, measured: pd.Series
) -> pd.Series:
    """The reasons each statistics row fails the strong rule ('' when it passes)."""
    degs = stats[DEGS_COLUMN].astype(float)
    cells = stats[CELLS_COLUMN].astype(float)
    change = stats[KNOCKDOWN_COLUMN].astype(float)
    reasons = [[] for _ in range(len(stats))]

    def add(fails: np.ndarray, texts: Sequence[str]) -> None:
        for i in np.flatnonzero(fails):
            reasons[i].append(texts[i])

    add(
        ~(degs.to_numpy() >= min_degs),
        [f"DEGs {v:.0f} < {min_degs} (filters.min_degs)" if np.isfinite(v) else "no DEG count" for v in degs],
    )
    add(
        ~(cells.to_numpy() >= cfg.min_filtered_cells),
        [f"QC-passing cells {v:.0f} < {cfg.min_filtered_cells} (filters.min_filtered_cells)" for v in cells],
    )
    if modality != "knockout":
        limit = abs(cfg.max_knockdown)
        value = change.to_numpy()
        no_change = ~np.isfinite(value)
        if modality == "crispri":
            fails, sign, side = value > -limit, "-", ">"
        else:
            fails, sign, side = value < limit, "+", "<"
        add(
            fails & ~no_change,
            [f"on-target change {v:+.2f} {side} {sign}{limit:.2f} (filters.max_knockdown)" for v in value],
        )
        if cfg.unmeasured_targets == "drop":
            text = [
                ("target not measured" if not m else "target not expressed in controls")
                + " (filters.unmeasured_targets: drop)"
                for m in measured
            ]
            add(no_change, text)
    return pd.Series(["; ".join(r) for r in reasons], index=stats.index)


def strong_decisions(
    table: pd.DataFrame,
    stats: pd.DataFrame | None,
    cfg: PerturbationFilterConfig,
    modality: str,
    min_degs: int,
) -> pd.DataFrame:
    """Fill the statistics' values of each label and whether it is strong (design §3).

    A label passes when any of its rows (guides) passes: at least ``min_degs`` DEGs, at least
    ``min_filtered_cells`` QC-passing cells and, unless knockout, the on-target change the
    modality asks for. A label without a measurable change (target not measured, or not
    expressed in controls) passes that part with ``unmeasured_targets: keep``. The row shown is
    the first passing one, else the one with the most DEGs.
    """
    table = table.copy()
    if stats is None:
        table["reason"] = "no summary statistics: not judged"
        return table
    rows = stats[~stats[IS_CONTROL_COLUMN]].reset_index(drop=True)
    rows = rows[rows[PERTURBATION_COLUMN].astype(str).isin(table.index)]
    if len(rows):
        measured = table.loc[rows[PERTURBATION_COLUMN].astype(str), "measured"].ne("no").to_numpy()
        failures = _row_failures(rows, cfg, modality, min_degs, pd.Series(measured, index=rows.index))
        order = pd.DataFrame(
            {
                "label": rows[PERTURBATION_COLUMN].astype(str),
                "fails": failures != "",
                "degs": -rows[DEGS_COLUMN].astype(float).fillna(-1),
                "position": np.arange(len(rows)),
            },
            index=rows.index,
        ).sort_values(["label", "fails", "degs", "position"])
        best = order.drop_duplicates("label")
        best_rows = rows.loc[best.index]
        labels = best["label"].to_numpy()
        table.loc[labels, "on_target_change"] = best_rows[KNOCKDOWN_COLUMN].astype(float).to_numpy()
        table.loc[labels, "degs"] = best_rows[DEGS_COLUMN].astype(float).to_numpy()
        table.loc[labels, "cells_filtered"] = best_rows[CELLS_COLUMN].astype(float).to_numpy()
        failed = best["fails"].to_numpy()
        table.loc[labels[failed], "status"] = "strong_perturbations"
        table.loc[labels[failed], "reason"] = failures.loc[best.index[failed]].to_numpy()
    missing = ~table["stats_row"]
    if cfg.keep_unknown_perturbations:
        table.loc[missing, "reason"] = "no summary-statistics row (filters.keep_unknown_perturbations: true)"
    else:
        table.loc[missing, "status"] = "strong_perturbations"
        table.loc[missing, "reason"] = "no summary-statistics row (filters.keep_unknown_perturbations)"
    no_change = (table["status"] == KEPT) & table["on_target_change"].isna() & table["stats_row"]
    if modality != "knockout":
        table.loc[no_change & (table["measured"] == "no"), "reason"] = (
            "target not measured (filters.unmeasured_targets: keep)"
        )
        table.loc[no_change & (table["measured"] != "no"), "reason"] = (
            "target not expressed in controls (filters.unmeasured_targets: keep)"
        )
    return table


def singles_of_kept_pairs(table: pd.DataFrame) -> dict[str, str]:
    """The singles that a kept pair ``A+B`` needs and the filters removed: single → its first
    kept pair. (A pair is predicted from its singles, so a weak single is data, not noise.)"""
    kept = table.index[table["status"] == KEPT]
    needed: dict[str, str] = {}
    for pair in kept:
        genes = label_genes(str(pair))
        if len(genes) > 1:
            for gene in genes:
                needed.setdefault(gene, str(pair))
    return {
        gene: pair
        for gene, pair in needed.items()
        if gene in table.index and table.loc[gene, "status"] != KEPT
    }


def protect_singles(table: pd.DataFrame, protected: dict[str, str]) -> pd.DataFrame:
    """Keep the ``protected`` singles (:func:`singles_of_kept_pairs`) that the strong filter
    removed, saying so and what they failed."""
    table = table.copy()
    for gene, pair in protected.items():
        if gene in table.index and table.loc[gene, "status"] == "strong_perturbations":
            failed = table.loc[gene, "reason"]
            table.loc[gene, "status"] = KEPT
            table.loc[gene, "reason"] = f"single of kept pair {pair}, kept whatever its strength" + (
                f" ({failed})" if failed else ""
            )
    return table


def _fmt(value: float, signed: bool = False) -> str:
    if not np.isfinite(value):
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.0f}"


def format_table(
    table: pd.DataFrame,
    max_rows: int | None = None,
    modality: str | None = None,
    more: str = "all in the artifact's record.json",
) -> list[str]:
    """The table as aligned text lines (removed perturbations first when cut to ``max_rows``;
    ``more`` says where the rest is)."""
    shown = table
    if max_rows is not None and len(table) > max_rows:
        shown = pd.concat([table[table["status"] != KEPT], table[table["status"] == KEPT]]).iloc[:max_rows]
    header = ["perturbation", "cells", "target measured", "on-target change", "DEGs", "after filters", "kept"]
    rows = [
        [
            str(label),
            str(int(row["cells"])),
            row["measured"],
            _fmt(row["on_target_change"], signed=True),
            _fmt(row["degs"]),
            str(int(row["cells_on_target"])) if row["status"] in (KEPT, "min_cells") else "-",
            KEPT + (f"; {row['reason']}" if row["reason"] else "")
            if row["status"] == KEPT
            else f"no: {row['status']}: {row['reason']}",
        ]
        for label, row in shown.iterrows()
    ]
    widths = [
        max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
        for i in range(len(header))
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if len(shown) < len(table):
        lines.append(f"… {len(table) - len(shown)} more perturbations ({more})")
    kept = int((table["status"] == KEPT).sum())
    title = f"perturbations: {kept} of {len(table)} kept" + (f" (modality {modality})" if modality else "")
    return [title, *lines]


def _keys(reasons: pd.Series) -> list[str]:
    """Config keys named in the reasons, most frequent first."""
    keys = reasons.str.findall(r"\((filters\.[a-z_]+)").explode().dropna()
    return keys.value_counts().index.tolist()


def filter_error(table: pd.DataFrame, stage: str) -> PerturbationFilterError:
    """The error for a filter that left no perturbation: a short table, counts, the key to change."""
    removed = table[table["status"] == stage]
    earlier = int((table["status"] != stage).sum())
    return _filter_stop(
        table,
        f"filter {stage!r} left no perturbation: it removed {len(removed)} of {len(table)}"
        + (f" (earlier filters removed {earlier})" if earlier else ""),
        removed,
        fallback=f"filters.{stage}",
    )


def too_few_error(table: pd.DataFrame, minimum: int) -> PerturbationFilterError:
    """The error for fewer than ``filters.min_perturbations`` kept perturbations: the table, what
    removed the others, and the keys that would keep more (or ``min_perturbations: 1``)."""
    kept = int((table["status"] == KEPT).sum())
    removed = table[table["status"] != KEPT]
    return _filter_stop(
        table,
        f"only {kept} of {len(table)} perturbations pass the filters, fewer than the "
        f"{minimum} a GRN and a verdict need (filters.min_perturbations)",
        removed,
        fallback="filters.min_perturbations",
        proceed="; or proceed with what is kept: --min-perturbations 1 (preprocess.filters.min_perturbations: 1)",
    )


def _filter_stop(
    table: pd.DataFrame, headline: str, removed: pd.DataFrame, fallback: str, proceed: str = ""
) -> PerturbationFilterError:
    keys = _keys(removed["reason"]) or [fallback]
    key_list = ", ".join(f"preprocess.{key}" for key in keys[:3])
    counts = removed["reason"].str.findall(r"\((filters\.[a-z_]+)").explode().value_counts()
    lines = format_table(table, max_rows=ERROR_ROWS, more="inspect lists them all")[1:]
    message = "\n".join(
        [
            headline
            + ("; failing: " + ", ".join(f"{key} {n}" for key, n in counts.items()) if len(counts) else ""),
            *lines,
            f"Relax {key_list} in the run config (pass it with --config; from Python, "
            f"pp.prepare(adata, load_preset(overrides={{'preprocess.{keys[0]}': ...}})) with "
            f"gpo_vae.presets.load_preset){proceed}; "
            "`redun run workflow.py inspect --dataset ...` lists every perturbation.",
        ]
    )
    error = PerturbationFilterError(message)
    error.table = table
    return error


def table_record(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The table as JSON-safe rows (for ``record.json``)."""
    frame = table.reset_index()
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict(orient="records")
