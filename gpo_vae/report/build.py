"""Assemble the report: read the evaluation directory, draw every section, write one HTML file."""

from __future__ import annotations

import logging
from pathlib import Path

from gpo_vae.io import write_text_atomic
from gpo_vae.report import grn_sections, sections
from gpo_vae.report.html import missing_only, page, section
from gpo_vae.report.screen_section import screen_section
from gpo_vae.report.tables import load_tables
from gpo_vae.report.unseen_section import unseen_section

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"


def model_family(model_config: dict) -> str:
    """The family a run's model config belongs to: SAMS-VAE (a latent-sized mask), GPO-VAE+ (the
    mask starts from or is aligned with the effect statistics) or GPO-VAE (the published model;
    also when the config is not recorded)."""
    if model_config.get("latent_mask"):
        return "SAMS-VAE"
    if "effects" in (model_config.get("mask_init"), model_config.get("grn_target")):
        return "GPO-VAE+"
    return "GPO-VAE"


def build_report(eval_dir: str | Path, out_path: str | Path | None = None, title: str | None = None) -> Path:
    """Write the self-contained HTML report of an evaluation directory.

    Parameters
    ----------
    eval_dir
        Directory holding the evaluation tables (contract: :mod:`gpo_vae.report`). Only this
        directory is read, so a report can be rebuilt without recomputing anything.
    out_path
        Where to write; default ``eval_dir / "report.html"``. Written through a temporary file
        in the same directory and a rename, so a reader never sees half a report.
    title
        Page title; default ``"<model family> report: <dataset>"`` (:func:`model_family`).

    Returns
    -------
    The path written.
    """
    tables = load_tables(eval_dir)
    run = tables.run or {}
    dataset = str(run.get("dataset", "unknown dataset"))
    family = model_family(run.get("config", {}).get("model", {}))
    title = title or f"{family} report: {dataset}"
    details = [f"dataset {dataset}", f"model {family}"]
    if "seed" in run:
        details.append(f"seed {run['seed']}")
    details += [str(run[key]) for key in ("created", "code_version") if run.get(key)]
    subtitle = " · ".join(details)
    body = [
        ("headline", "Headline", section("headline", "Headline", sections.headline(tables))),
        ("screen", "Screen", screen_section(tables)),
        ("baselines", "Baselines", sections.baseline_section(tables)),
        ("scatter", "Per perturbation", sections.scatter_section(tables)),
        ("distributions", "Metrics", sections.distribution_section(tables)),
        ("unseen", "Unseen", unseen_section(tables)),
        ("qc", "QC", sections.qc_section(tables)),
        ("summary-stats", "Summary statistics", sections.summary_stats_section(tables)),
        ("grn-ranking", "GRN ranking", grn_sections.ranking_section(tables)),
        ("grn-mask", "GRN mask", grn_sections.heatmap_section(tables)),
        ("grn-network", "Edges", grn_sections.network_section(tables)),
        ("grn-reference", "Reference networks", grn_sections.reference_section(tables)),
        ("grn-statistical", "CausalBench", grn_sections.statistical_section(tables)),
        ("provenance", "Provenance", grn_sections.provenance_section(tables)),
    ]
    # a section with nothing to show (a random split has no unseen labels, a SAMS-VAE no graph) is
    # left out; what it would have shown is listed once, at the end
    shown, absent = [], []
    for anchor, label, html_text in body:
        notes = missing_only(html_text)
        if notes is None:
            shown.append((anchor, label, html_text))
        else:
            absent += notes
    if absent:
        items = "".join(f"<li>{note}</li>" for note in absent)
        shown.append(
            (
                "not-shown",
                "Not shown",
                section("not-shown", "Not shown here", f'<ul class="missing">{items}</ul>'),
            )
        )
    target = Path(out_path) if out_path is not None else Path(eval_dir) / REPORT_FILE
    write_text_atomic(page(title, subtitle, shown), target)
    logger.info("report written to %s", target)
    return target
