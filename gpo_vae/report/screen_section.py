"""The report's "Screen" section: what preprocessing decided about the screen, and its filter table.

Read from ``screen.json`` and ``perturbation_table.csv`` (contract: :mod:`gpo_vae.report`):
the modality and why, the features cells were paired on, the batches, how the file was read
(counts source, control label, guide labels, combinations, genes matched ignoring case), the
test split's controls, and one row per perturbation with ``kept`` or the filter that removed it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from gpo_vae.data.layout import layout_notes
from gpo_vae.preprocessing.split_plan import scarce_controls_note
from gpo_vae.report.html import escape, html_table, not_computed, section
from gpo_vae.report.tables import SCREEN_FILE, EvaluationTables

TABLE_FILE = "perturbation_table.csv"


def _facts(screen: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value) rows describing the screen."""
    rows: list[tuple[str, str]] = []
    preprocessing = screen.get("preprocessing") or {}
    if preprocessing:
        rows.append(("preprocessing", f"{preprocessing.get('mode')}: {preprocessing.get('basis', '')}"))
        steps = preprocessing.get("steps") or []
        if steps:
            rows.append(
                (
                    "cells and perturbations kept",
                    " → ".join(
                        f"{s['step']} {s['cells']:,} cells / {s['perturbations']} perturbations"
                        for s in steps
                    ),
                )
            )
    modality = screen.get("modality") or {}
    if modality:
        rows.append(("modality", f"{modality.get('resolved')} ({modality.get('basis', '')})"))
    pairing = screen.get("pairing") or {}
    if pairing:
        features = pairing.get("features")
        measured = (
            f"{pairing.get('measured_targets')} of {pairing.get('perturbed_genes')} perturbed genes measured"
        )
        if features == "shipped":
            rows.append(("pairing", f"{pairing.get('source')}; {measured}"))
        else:
            detail = (
                f"{pairing.get('n_features')} principal components of {pairing.get('n_hvgs')} variable genes"
                if features == "pca"
                else f"{pairing.get('n_features')} measured perturbed genes"
            )
            rows.append(
                (
                    "pairing features",
                    f"{features} (requested {pairing.get('requested')}): {detail}; {measured}"
                    + ("; within batch" if pairing.get("within_batch") else "")
                    + (f" ({pairing['shipped_not_used']})" if pairing.get("shipped_not_used") else ""),
                )
            )
    batches = screen.get("batches")
    rows.append(
        (
            "batches",
            f"{len(batches['names'])} from obs[{batches.get('key')!r}]: {', '.join(map(str, batches['names']))}"
            if batches
            else "one batch (no --batch-key)",
        )
    )
    layout = screen.get("layout") or {}
    if layout:
        rows.append(("file layout", "; ".join(layout_notes(layout))))
    splits = screen.get("splits") or {}
    if splits:
        moved = sum((splits.get("controls_moved_to_test") or {}).values())
        by_batch = splits.get("test_controls_by_batch") or {}
        per_batch = (
            " (" + ", ".join(f"{n} in {name}" for name, n in sorted(by_batch.items())) + ")"
            if len(by_batch) > 1
            else ""
        )
        rows.append(
            (
                "splits",
                f"{splits.get('mode')}{' (stratified)' if splits.get('stratify') else ''}"
                + (f", {splits['source']}" if splits.get("source") else "")
                + f"; {splits.get('test_controls')} control cells in test{per_batch}, the controls every "
                "held-out ATE is measured against" + (f"; {moved} moved from train" if moved else ""),
            )
        )
        if splits.get("scarce_controls"):
            rows.append(
                (
                    "scarce controls",
                    scarce_controls_note(splits["scarce_controls"], int(splits.get("min_test_controls", 50))),
                )
            )
    nodes = screen.get("nodes") or {}
    if nodes:
        rows.append(
            (
                "GRN nodes",
                f"{nodes.get('perturbed')} perturbed genes ({nodes.get('perturbed_not_measured', 0)} not measured), "
                f"{nodes.get('additional')} DEG nodes"
                + (f" ({nodes['deg_source']})" if nodes.get("deg_source") else "")
                + f"; {nodes.get('combinations', 0)} combination labels",
            )
        )
    return rows


def screen_section(tables: EvaluationTables) -> str:
    """The section's HTML; says "not computed" when neither file is there."""
    title = "Screen"
    if tables.screen is None and tables.perturbation_table is None:
        return section("screen", title, not_computed(title, [SCREEN_FILE, TABLE_FILE]))
    body = ""
    if tables.screen is not None:
        facts = pd.DataFrame(_facts(tables.screen), columns=["", "value"])
        body += html_table(facts)
    table = tables.perturbation_table
    if table is not None:
        kept = int((table["status"] == "kept").sum())
        columns = [
            c
            for c in (
                "perturbation",
                "cells",
                "measured",
                "on_target_change",
                "degs",
                "cells_on_target",
                "status",
                "reason",
            )
            if c in table.columns
        ]
        shown = table[columns].rename(
            columns={
                "measured": "target measured",
                "on_target_change": "on-target change",
                "degs": "DEGs",
                "cells_on_target": "after filters",
                "status": "kept / removed by",
            }
        )
        body += (
            f"<h3>Perturbations: {kept} of {len(table)} kept</h3>"
            f"<details{' open' if len(table) <= 20 else ''}><summary>{escape(len(table))} perturbations</summary>"
            f"{html_table(shown)}</details>"
        )
    lead = "How the screen was read and filtered before training."
    return section("screen", title, body, lead=lead)
