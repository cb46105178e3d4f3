"""``inspect``: what preprocessing would do with a screen, in seconds, before anything trains.

Reads the counts file in its layout and the summary statistics, runs the modality rule, the
perturbation filters and the split (the cheap parts of :mod:`gpo_vae.preprocessing.pipeline`,
with the same functions), and describes the result: how the file was read, the modality,
the batches, the features cells would be paired on, the test split's controls, and the
perturbation table. Nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpo_vae.data.contract import CONTROL_LABEL, PERTURBATION_KEY, read_counts_h5ad
from gpo_vae.data.labels import single_genes
from gpo_vae.data.layout import ScreenLayout, layout_notes
from gpo_vae.preprocessing.config import PreprocessConfig
from gpo_vae.preprocessing.filter_table import KEPT, PerturbationFilterError, format_table
from gpo_vae.preprocessing.pipeline import cell_batches, filter_screen, read_screen_stats
from gpo_vae.preprocessing.published import shipped_partners
from gpo_vae.preprocessing.split_plan import scarce_controls_note, screen_splits

#: Fewer measured perturbed genes than this (or under a quarter of them) and inspect warns that the
#: graph can cover only a few nodes (a CRISPRa panel measuring 1 of its 31 targets put all 52 edges
#: into 4 genes).
FEW_MEASURED_NODES = 5


def inspect_screen(
    counts_path: str | Path,
    stats_path: str | Path | None,
    sheet: str | None,
    config: PreprocessConfig,
    layout: ScreenLayout | None = None,
    missing_stats: str | None = None,
) -> list[str]:
    """The lines ``redun run workflow.py inspect`` prints (module docstring).

    Raises the same errors as preprocessing would (a bad layout, a filter that leaves nothing,
    a split without enough test controls), so what ``inspect`` accepts ``main`` gets past too.
    """
    layout = layout or ScreenLayout()
    adata = read_counts_h5ad(counts_path, layout)
    record = dict(adata.uns["layout_record"])
    lines = [f"screen: {adata.n_obs:,} cells × {adata.n_vars:,} genes; " + "; ".join(layout_notes(record))]
    stats = read_screen_stats(stats_path, sheet, adata)
    try:
        mask, filter_record, table, shipped = filter_screen(adata, stats, config, counts_path, missing_stats)
    except PerturbationFilterError as err:
        if err.table is None:
            raise
        # the whole table, then the reason main would stop (the error's own table is cut short)
        message = str(err).splitlines()
        raise PerturbationFilterError(
            "\n".join([*lines, *format_table(err.table), message[0], message[-1].split("; `redun")[0] + "."])
        ) from None
    lines += preprocessing_lines(filter_record["preprocessing"])
    modality = filter_record["modality"]
    lines.append(f"modality: {modality['resolved']} ({modality['basis']})")
    batches = cell_batches(adata)
    if batches is not None:
        names, counts = np.unique(batches, return_counts=True)
        lines.append(
            f"batches (obs[{layout.batch_key!r}]): "
            + ", ".join(f"{n} ({c:,} cells)" for n, c in zip(names, counts, strict=True))
        )
    else:
        lines.append("batches: one (no --batch-key)")
    kept_labels = adata.obs[PERTURBATION_KEY].astype(str).to_numpy()[mask]
    genes = single_genes([label for label in set(kept_labels.tolist()) if label != CONTROL_LABEL])
    n_measured = int(adata.var_names.isin(genes).sum())
    pairing = config.pairing.features
    if pairing == "auto":
        pairing = "targets" if n_measured >= config.pairing.min_measured_targets else "pca"
    kept_batches = None if batches is None else batches[mask]
    kept = adata if mask.all() else adata[mask]
    split, heldout, unseen, controls, split_source = screen_splits(
        kept, kept_labels, kept_batches, config, shipped
    )
    measured = f"{n_measured} of {len(genes)} perturbed genes measured"
    if genes and (n_measured < FEW_MEASURED_NODES or n_measured < len(genes) / 4):
        lines.append(
            f"GRN: only {measured}: an edge can only be scored and aligned where its target is measured, "
            "so the graph's edges will point into those and the few DE-gene nodes preprocessing adds; its "
            "network says little about the unmeasured targets (the panel's design, not the model)"
        )
    partner, why = (None, "")
    if shipped is not None:
        partner, why = shipped_partners(kept.obs, shipped, kept_labels, split, CONTROL_LABEL, kept_batches)
    if partner is not None:
        lines.append(f"pairing: {why} ({measured})")
    else:
        lines.append(
            f"pairing: {why + ', so computed ' if why else ''}on {pairing} ({measured}; pairing.features "
            f"{config.pairing.features}, min_measured_targets {config.pairing.min_measured_targets})"
        )
    test_controls = int(((kept_labels == CONTROL_LABEL) & (split == "test")).sum())
    moved = controls["moved"]
    lines.append(
        f"splits: {config.split.mode}{' stratified' if config.split.stratify else ''} ({split_source}), "
        f"{test_controls} control cells in test (min {config.split.min_test_controls})"
        + (f"; {sum(moved.values())} moved from train" if moved else "")
    )
    if controls["scarce"]:
        lines.append(
            "scarce controls: " + scarce_controls_note(controls["scarce"], config.split.min_test_controls)
        )
    if heldout:
        pairs = [label for label in heldout if "+" in label]
        lines.append(
            f"held out of training: {len(pairs)} pairs ({', '.join(pairs[:8]) or 'none'}"
            f"{' …' if len(pairs) > 8 else ''}), {len(unseen)} genes ({', '.join(unseen[:8]) or 'none'}"
            f"{' …' if len(unseen) > 8 else ''})"
        )
    lines += format_table(table, modality=modality["resolved"])
    kept = table[table["status"] == KEPT]
    combos = sum("+" in str(label) for label in kept.index)
    lines.append(
        f"main would train on {int(mask.sum()):,} cells: {len(kept)} perturbations"
        + (f" ({combos} combinations)" if combos else "")
        + f" on {len(genes)} perturbed-gene nodes, and {int((kept_labels == CONTROL_LABEL).sum()):,} controls"
    )
    return lines


def preprocessing_lines(record: dict) -> list[str]:
    """How the screen is preprocessed (published or ours, and why) and what each step kept."""
    steps = " → ".join(
        f"{step['step']} {step['cells']:,} cells / {step['perturbations']} perturbations"
        for step in record["steps"]
    )
    return [f"preprocessing: {record['mode']}: {record['basis']}", f"steps: {steps}"]
