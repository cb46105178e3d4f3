"""inspect: what main would do, in seconds (gpo_vae.preprocessing.inspect)."""

from __future__ import annotations

import re

from gpo_vae.preprocessing.inspect import FEW_MEASURED_NODES, inspect_screen
from gpo_vae.presets import load_preset
from tests.shared_data import shared_file


def test_inspect_warns_when_the_graph_can_cover_few_measured_nodes():
    """The real CRISPRa singles measure 1 of their 18 targets: the run would learn a graph whose
    edges all point into a few genes, and inspect says so before anything trains."""
    path = shared_file("screens/norman19_k562_crispra_singles.h5ad")
    lines = inspect_screen(path, None, None, load_preset().preprocess)
    warning = [line for line in lines if line.startswith("GRN: only ")]
    assert len(warning) == 1, lines
    measured, perturbed = map(int, re.match(r"GRN: only (\d+) of (\d+) perturbed", warning[0]).groups())
    assert measured <= 1 and perturbed >= 17


def test_inspect_says_nothing_of_the_kind_when_the_targets_are_measured(tmp_path):
    from gpo_vae.data.synthetic import SyntheticConfig, simulate_perturbseq

    screen = simulate_perturbseq(
        SyntheticConfig.preset("default", n_perturbations=8, n_genes=300, unmeasured_fraction=0.0)
    )
    path = tmp_path / "screen.h5ad"
    screen.adata.write_h5ad(path)
    config = load_preset(
        overrides={"preprocess.filters.min_cells": 20, "preprocess.filters.min_degs": 0}
    ).preprocess
    lines = inspect_screen(path, None, None, config)
    assert FEW_MEASURED_NODES <= 8 and not any(line.startswith("GRN: only ") for line in lines)
