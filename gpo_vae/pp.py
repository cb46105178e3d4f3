"""Preprocessing as a function on an AnnData (the workflow's preprocessing stage, without redun).

:func:`prepare` takes a screen as any tool saved it (raw counts in ``X``, a layer or ``.raw``;
gene- or guide-level labels; ``A+B`` pairs; several cell lines) and returns the artifact that
:meth:`gpo_vae.GPOVAEModel.train` trains on. It runs the same functions as the workflow's
``preprocess_dataset`` task (:func:`gpo_vae.preprocessing.pipeline.preprocess`), so a notebook and
``redun run workflow.py main`` build the same artifact from the same cells and config.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpo_vae.config import from_dict
from gpo_vae.data.contract import PERTURBATION_KEY, control_cells_by_batch, counts_from_adata
from gpo_vae.data.layout import ScreenLayout
from gpo_vae.preprocessing.config import PreprocessConfig
from gpo_vae.preprocessing.pipeline import cell_batches, preprocess, read_screen_stats, stats_from_cells
from gpo_vae.preprocessing.split_plan import too_few_controls
from gpo_vae.presets import run_config_from
from gpo_vae.run_config import RunConfig

if TYPE_CHECKING:
    import anndata as ad


def _preprocess_config(
    config: PreprocessConfig | RunConfig | str | Path | dict[str, Any] | None,
) -> PreprocessConfig:
    if isinstance(config, PreprocessConfig):
        return config
    if isinstance(config, dict):
        return from_dict(PreprocessConfig, config, "preprocess")
    return run_config_from(config).preprocess


def prepare(
    adata: ad.AnnData,
    config: PreprocessConfig | RunConfig | str | Path | dict[str, Any] | None = None,
    summary_stats: str | Path | None = None,
    summary_sheet: str | None = None,
    progress: bool = False,
    print_table: bool = False,
    **layout: Any,
) -> ad.AnnData:
    """QC, filters, DE nodes, splits, OT pairing, ΔX and counterfactual cells: the artifact AnnData.

    Parameters
    ----------
    adata
        The screen: raw UMI counts and a perturbation column (not modified).
    config
        A :class:`~gpo_vae.preprocessing.config.PreprocessConfig`, a run config (its
        ``preprocess`` section; a :class:`~gpo_vae.run_config.RunConfig` or a YAML file such as
        ``configs/gpo_vae_plus_custom.yaml``), its dict, or None: the ``preprocess`` section of
        that file, the workflow's default for a screen of your own (filters a 100-cell screen
        passes; :func:`gpo_vae.presets.load_preset`).
    summary_stats, summary_sheet
        The screen's summary statistics (``.xlsx`` or ``.csv``, Replogle's layout) and sheet;
        None computes them from the cells, as the workflow does for a screen given without any
        (:func:`~gpo_vae.preprocessing.pipeline.stats_from_cells`).
    progress
        Show progress bars (OT pairing).
    print_table
        Print the perturbation table (what each filter kept).
    **layout
        How the file is laid out (:class:`~gpo_vae.data.layout.ScreenLayout`):
        ``perturbation_key`` (default ``"gene"``), ``control_label`` (``"non-targeting"``),
        ``counts_layer`` (``"auto"``), ``batch_key``, ``guide_pattern``,
        ``combination_separator``, ``duplicate_genes``.

    Returns
    -------
    AnnData
        The artifact (fields in :mod:`gpo_vae.preprocessing.artifact`): counts in ``X``,
        ``obs`` with ``gene`` (label), ``split``, QC flags and the OT ``partner``; ``obsm["D"]``
        the dosage over the treatment nodes ``uns["nodes"]``; ``uns["record"]`` (JSON) every
        decision with the config and package versions.
    """
    contract = counts_from_adata(adata, ScreenLayout.from_dict(layout))
    labels, batches = contract.obs[PERTURBATION_KEY], cell_batches(contract)
    error = too_few_controls(control_cells_by_batch(labels, batches), batches is not None)
    if error is not None:  # before the summary statistics, which need controls too
        raise error
    if summary_stats is None:
        stats = stats_from_cells(contract)
    else:
        stats = read_screen_stats(summary_stats, summary_sheet, contract)
    return preprocess(contract, stats, _preprocess_config(config), progress=progress, print_table=print_table)


__all__ = ["prepare"]
