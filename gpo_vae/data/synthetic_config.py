"""The knobs and named presets of the synthetic screen (:mod:`gpo_vae.data.synthetic`).

A module of its own so that the design and cell draws read the config without importing the
simulator that composes them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

#: The named screens of :meth:`SyntheticConfig.preset`.
PRESETS = (
    "default",
    "rpe1",
    "panel",
    "crispra",
    "combinatorial",
    "batches",
    "counts_layer",
    "guides",
    "low_cells",
    "nonadditive",
    "glioma",
    "crispra_panel",
    "cascade",
    "feedback",
)
#: How a screen's counts file can be saved (:func:`saved_layout`).
LAYOUTS = ("plain", "counts_layer", "guides")
#: Names of the simulated cell lines (``n_batches`` of them, in this order).
BATCH_NAMES = ("RPE1", "K562", "HEPG2", "JURKAT")


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and calibration knobs of the synthetic screen (see the module docstring).

    Fractions of perturbations: ``weak_fraction`` (includes ``poor_knockdown_fraction``),
    ``unmeasured_fraction`` (target not in ``var``). Fractions of measured genes:
    ``unreached_fraction``, ``hub_fraction``; ``hub_children`` and ``direct_children`` are median
    out-degrees as fractions of the reachable genes; ``feedback_fraction`` of the regulator →
    regulator edges get a negative feedback edge back (0: an acyclic GRN). Fractions of cells: ``control_fraction``,
    ``escape_fraction``, ``low_umi_fraction``, ``high_mt_fraction``, ``doublet_fraction``.

    Shapes of real screens (off by default; see :meth:`preset`): ``modality`` ``crispra``
    activates each target by up to a log-normal fold (``activation_fold``, ``activation_sigma``)
    times the cell's efficiency instead of knocking it down; ``n_combinations`` dual
    perturbations ``A+B`` (both targets in one cell, effects adding in log space) with
    ``combination_cells`` cells each (default ``cells_per_perturbation``); ``n_batches`` cell
    lines in ``obs[batch_column]``, each with its own baseline shift of every gene
    (``batch_effect``, log scale) and library size; ``layout`` is how the counts file is saved
    (:func:`saved_layout`): ``plain``, ``counts_layer`` (log-normalised ``X``, raw counts in
    ``layers["counts"]``) or ``guides`` (guide-level labels ``GENE_1``, ``GENE_2``).
    """

    seed: int = 0
    n_perturbations: int = 50
    n_genes: int = 1200
    cells_per_perturbation: float = 190.0
    cells_sigma: float = 0.2
    control_fraction: float = 0.09
    unmeasured_fraction: float = 0.08
    weak_fraction: float = 0.36
    poor_knockdown_fraction: float = 0.08
    escape_fraction: float = 0.02
    unreached_fraction: float = 0.35
    hub_fraction: float = 0.02
    hub_children: float = 0.08
    direct_children: float = 0.03
    regulator_children: float = 1.0
    regulator_hubs: float = 2.0
    feedback_fraction: float = 0.0
    mt_link_probability: float = 0.3
    median_umi: float = 11_600.0
    umi_sigma: float = 0.3
    perturbation_umi_sigma: float = 0.15
    mt_fraction: float = 0.064
    mt_sigma: float = 0.15
    ribo_fraction: float = 0.2
    n_ribo_genes: int = 80
    n_basal_factors: int = 5
    low_umi_fraction: float = 0.03
    high_mt_fraction: float = 0.03
    doublet_fraction: float = 0.04
    modality: Literal["crispri", "crispra"] = "crispri"
    activation_fold: float = 6.0
    activation_sigma: float = 0.6
    n_combinations: int = 0
    combination_cells: float | None = None
    n_batches: int = 1
    batch_column: str = "cell_line"
    batch_effect: float = 0.3
    layout: Literal["plain", "counts_layer", "guides"] = "plain"
    interaction: Literal["additive", "saturating"] = "additive"
    saturation: float = 1.0
    dispersion: float = 0.15
    expression_sigma: float = 1.6
    basal_sd: float = 0.15
    effect_scale: float = 1.0
    batch_umi_sigma: float = 0.25

    def __post_init__(self) -> None:
        if self.modality not in ("crispri", "crispra"):
            raise ValueError(f"modality must be 'crispri' or 'crispra', got {self.modality!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {self.layout!r}")
        if self.n_batches < 1 or self.n_batches > len(BATCH_NAMES):
            raise ValueError(f"n_batches must be in 1..{len(BATCH_NAMES)}, got {self.n_batches}")
        if self.interaction not in ("additive", "saturating"):
            raise ValueError(f"interaction must be 'additive' or 'saturating', got {self.interaction!r}")
        if self.saturation <= 0:
            raise ValueError(f"saturation must be positive, got {self.saturation}")
        if not 0.0 <= self.feedback_fraction <= 1.0:
            raise ValueError(f"feedback_fraction must be in [0, 1], got {self.feedback_fraction}")
        if self.n_combinations < 0:
            raise ValueError(f"n_combinations must be >= 0, got {self.n_combinations}")
        if self.dispersion <= 0 or self.effect_scale < 0 or self.batch_umi_sigma < 0:
            raise ValueError("dispersion must be positive, effect_scale and batch_umi_sigma non-negative")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SyntheticConfig:
        """A named screen (:data:`PRESETS`), with fields overridden by ``overrides``.

        ``default``: a small CRISPRi screen for the whole workflow on 2 CPU cores in minutes;
        ``rpe1``: the size of the Replogle 2022 RPE1 screen (~250k cells, 8.7k genes). The shapes
        that real screens have and ours did not: ``panel`` (a 500-gene panel that measures none of
        the targets), ``crispra`` (activation, most targets unmeasured, a few ``A+B`` pairs,
        exactly 100 cells per perturbation), ``combinatorial`` (dual-guide ``A+B`` cells beside
        their singles), ``batches`` (two cell lines in ``obs["cell_line"]``), ``counts_layer``
        (raw counts in ``layers["counts"]``, normalised ``X``), ``guides`` (labels per guide).
        ``low_cells``: the default screen with 55 cells per perturbation (~35 in training with
        the published split), where a per-perturbation mean is noisy; it needs ``min_cells`` ≤ 55.
        ``nonadditive``: the ``combinatorial`` screen with 20 pairs whose downstream effects
        saturate (``interaction: saturating``): the additive prediction of a pair is wrong by a
        known interaction (``SyntheticScreen.combinations``). ``glioma``: calibrated to the real
        screen of McFaline-Figueroa et al. 2023 (CRISPRi of 9 kinases in three glioblastoma lines,
        500 variable genes, ~130 UMIs per cell; ``benchmarks/realism.py`` holds it to that screen's
        figures): shallow, overdispersed counts, weak effects that few perturbations have, no
        target measured, three cell lines that differ far more than any perturbation moves them.
        ``crispra_panel``: shaped and calibrated like the real CRISPRa singles of Norman et al. 2019
        (18 activations of ~100 cells, 100 controls, 500 variable genes, ~111 UMIs per cell, one
        target measured; ``benchmarks/realism.py --real <file> --batch-key ''``): its depth, zero
        shares and DEG counts match, its ATE is less reliable than the real one (docs: Real cells).
        Screens that tell GRN methods apart (``benchmarks/grn.py``): ``cascade``, the default screen
        whose regulators regulate each other more (``regulator_children`` 2.5: chains
        regulator → regulator → … where total and direct effects differ most), and ``feedback``,
        the default screen with negative feedback loops closing 40 % of the regulator → regulator
        edges (``feedback_fraction``): a graph with cycles, as real networks have.
        """
        presets = {
            "default": {},
            "rpe1": {
                "n_perturbations": 2500,
                "n_genes": 8700,
                "cells_per_perturbation": 68.0,
                "cells_sigma": 0.72,
                "control_fraction": 0.08,
                "weak_fraction": 0.3,
                "hub_children": 0.065,
                "direct_children": 0.012,
            },
            "panel": {
                "n_perturbations": 40,
                "n_genes": 500,
                "unmeasured_fraction": 1.0,
                "n_ribo_genes": 10,
                "median_umi": 2_000.0,
                "cells_per_perturbation": 150.0,
            },
            "crispra": {
                "modality": "crispra",
                "n_perturbations": 30,
                "n_genes": 800,
                "unmeasured_fraction": 0.8,
                "n_combinations": 4,
                "cells_per_perturbation": 100.0,
                "cells_sigma": 0.0,
            },
            "combinatorial": {
                "n_perturbations": 30,
                "n_genes": 1000,
                "n_combinations": 15,
                "cells_per_perturbation": 150.0,
            },
            "batches": {"n_batches": 2},
            "counts_layer": {"layout": "counts_layer"},
            "guides": {"layout": "guides"},
            "low_cells": {"cells_per_perturbation": 55.0, "cells_sigma": 0.0},
            "nonadditive": {
                "n_perturbations": 30,
                "n_genes": 1000,
                "n_combinations": 20,
                "cells_per_perturbation": 150.0,
                "interaction": "saturating",
                "saturation": 1.0,
            },
            "glioma": {
                "n_perturbations": 9,
                "n_genes": 500,
                "unmeasured_fraction": 1.0,
                "n_ribo_genes": 0,
                "mt_fraction": 0.01,
                "cells_per_perturbation": 263.0,
                "cells_sigma": 0.17,
                "control_fraction": 0.116,
                "n_batches": 3,
                "batch_column": "cell_type",
                "median_umi": 132.0,
                "umi_sigma": 0.65,
                "batch_effect": 1.5,
                "batch_umi_sigma": 0.15,
                "dispersion": 0.35,
                "expression_sigma": 1.2,
                "basal_sd": 0.7,
                "effect_scale": 0.2,
                "weak_fraction": 0.3,
            },
            "cascade": {"regulator_children": 2.5},
            "feedback": {"regulator_children": 1.5, "feedback_fraction": 0.4},
            "crispra_panel": {
                "modality": "crispra",
                "n_perturbations": 18,
                "n_genes": 500,
                "unmeasured_fraction": 0.95,
                "n_ribo_genes": 10,
                "mt_fraction": 0.01,
                "cells_per_perturbation": 100.0,
                "cells_sigma": 0.0,
                "control_fraction": 0.053,
                "median_umi": 111.0,
                "umi_sigma": 0.6,
                "dispersion": 0.3,
                "expression_sigma": 1.6,
                "basal_sd": 0.3,
                "effect_scale": 1.0,
                "weak_fraction": 0.4,
            },
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return dataclasses.replace(cls(), **{**presets[name], **overrides})


__all__ = ["BATCH_NAMES", "LAYOUTS", "PRESETS", "SyntheticConfig"]
