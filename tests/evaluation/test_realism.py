"""The realism figures: each recovers what it measures on counts drawn with it known, and the
calibrated preset sits within its tolerances of the real screen (when the shared data is there)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gpo_vae.data.synthetic import SyntheticConfig, simulate_perturbseq
from gpo_vae.evaluation.realism import (
    TOLERANCES,
    compare_statistics,
    matching_shape,
    nb_dispersion,
    screen_statistics,
    split_half_reliability,
    within_tolerance,
)
from tests.shared_data import shared_file

CONTROL = "non-targeting"


def _nb_counts(rng, n_cells, mean, phi, library):
    """NB(mean · library share, φ) counts as a gamma–Poisson mixture."""
    rate = library[:, None] * mean[None, :]
    shape = 1.0 / phi
    return rng.poisson(rate * rng.gamma(shape, 1.0 / shape, rate.shape))


def test_nb_dispersion_recovers_phi_with_depth_and_group_means_taken_out():
    rng = np.random.default_rng(0)
    n, genes = 6000, 40
    mean = np.exp(rng.uniform(np.log(0.5), np.log(20), genes))
    library = np.exp(rng.normal(0, 0.5, n))  # depth varies: not overdispersion
    groups = rng.integers(0, 3, n)
    shift = np.array([1.0, 2.0, 0.5])[groups]  # each group its own mean: not overdispersion
    counts = _nb_counts(rng, n, mean, 0.4, library * shift)
    _, phi = nb_dispersion(sp.csr_matrix(counts.astype(float)), groups, 3)
    assert np.median(phi) == pytest.approx(0.4, rel=0.1)
    # Poisson counts imply no overdispersion
    poisson = rng.poisson(library[:, None] * mean[None, :]).astype(float)
    _, phi0 = nb_dispersion(sp.csr_matrix(poisson), np.zeros(n, dtype=np.int64), 1)
    assert abs(np.median(phi0)) < 0.02


def test_split_half_reliability_is_near_one_for_strong_effects_and_near_zero_for_none():
    rng = np.random.default_rng(1)
    genes, per = 200, 400
    base = np.exp(rng.normal(0, 1, genes)) * 2
    effect = np.exp(rng.normal(0, 0.8, genes))
    labels = np.array([CONTROL] * per + ["STRONG"] * per + ["NONE"] * per)
    mean = np.vstack([np.tile(base, (per, 1)), np.tile(base * effect, (per, 1)), np.tile(base, (per, 1))])
    counts = sp.csr_matrix(rng.poisson(mean).astype(float))
    r = split_half_reliability(
        counts, labels, None, CONTROL, float(np.median(counts.toarray().sum(1))), rng, repeats=4
    )
    assert r["STRONG"] > 0.95
    assert abs(r["NONE"]) < 0.15


def test_screen_statistics_of_a_simulated_screen_and_its_shape():
    config = SyntheticConfig.preset("glioma", seed=3, n_perturbations=6)
    adata = simulate_perturbseq(config).adata
    stats = screen_statistics(adata, batch_key="cell_type", degs=False)
    library = np.asarray(adata.X.sum(axis=1)).ravel()
    assert stats["library_q50"] == pytest.approx(float(np.median(library)))
    assert sum(v for k, v in stats.items() if k.startswith("genes_")) == pytest.approx(1.0)
    assert stats["batch_to_effect"] == pytest.approx(stats["batch_effect_norm"] / stats["effect_norm_q50"])
    assert np.isnan(stats["no_deg_share"])  # degs=False
    shape = matching_shape(adata, batch_key="cell_type")
    assert shape["n_perturbations"] == 6 and shape["n_genes"] == 500 and shape["n_batches"] == 3
    assert shape["unmeasured_fraction"] == 1.0
    labels = adata.obs["gene"].astype(str)
    assert shape["control_fraction"] == pytest.approx(float((labels == CONTROL).mean()))


def test_tolerances_are_relative_or_absolute_and_unjudged_figures_say_none():
    assert within_tolerance("library_q50", 100.0, 119.0) and not within_tolerance("library_q50", 100.0, 121.0)
    assert within_tolerance("reliability_median", 0.1, 0.19) and not within_tolerance(
        "reliability_median", 0.1, 0.21
    )
    assert within_tolerance("genes_0-0.1", 0.3, 0.9) is None
    table = compare_statistics({"library_q50": 100.0, "genes_0-0.1": 0.3}, {"library_q50": 150.0})
    assert table["within"].tolist() == [False, None] and table["tolerance"].tolist() == ["±20%", ""]


def test_the_glioma_preset_sits_within_its_tolerances_of_the_real_screen():
    real = ad.read_h5ad(shared_file("screens/mcfaline23_glioma_crispri.h5ad"))
    real_stats = screen_statistics(real, batch_key="cell_type")
    shape = matching_shape(real, batch_key="cell_type")
    simulated = pd.DataFrame(
        [
            screen_statistics(
                simulate_perturbseq(SyntheticConfig.preset("glioma", seed=seed, **shape)).adata,
                batch_key="cell_type",
                seed=seed,
            )
            for seed in (0, 1, 2)
        ]
    ).mean()
    table = compare_statistics(real_stats, simulated.to_dict())
    judged = table[table["statistic"].isin(TOLERANCES)]
    assert len(judged) == len(TOLERANCES)
    assert judged["within"].all(), judged[~judged["within"].astype(bool)].to_string()
    # and the default preset, in the same shape, does not: its ATE is reliable, the real one is not
    default = screen_statistics(
        simulate_perturbseq(SyntheticConfig.preset("default", seed=0, **shape)).adata, batch_key="cell_line"
    )
    assert not within_tolerance(
        "reliability_median", real_stats["reliability_median"], default["reliability_median"]
    )
