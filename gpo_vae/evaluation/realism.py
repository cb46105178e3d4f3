"""How real a screen looks: the statistics that tell a simulated Perturb-seq screen from a real one.

:func:`screen_statistics` reduces a counts AnnData (raw contract: ``obs[perturbation_key]``,
controls labelled ``control_label``, optional batches) to one flat mapping of figures, so that a
real screen and a simulated one of the same shape can be printed side by side
(``benchmarks/realism.py``) and a simulator preset can be held to a tolerance of the real one
(:data:`TOLERANCES`, :func:`compare_statistics`):

- ``library_q*``: quantiles of UMIs per cell;
- ``dispersion_*``: the negative-binomial overdispersion φ (variance μ + φμ²) each gene's counts
  imply, a moment estimate with each cell's library size and each perturbation × batch group's
  own mean taken out, by the gene's mean count per cell;
- ``zeros_*``: the share of zero counts of the genes in the same bins of mean count per cell;
- ``effect_norm_q*``: the length ‖ATE‖₂ of each perturbation's average treatment effect on
  ``log2(1 + x·s/library)`` (``s`` the screen's median library, against the controls of the cell's
  own batch); ``degs_*`` / ``no_deg_share``: DEGs per perturbation (two-sample Anderson–Darling,
  Benjamini–Hochberg 5 %, as the summary statistics compute them);
- ``reliability_median``: the split-half Pearson r of each perturbation's ATE over genes (its
  cells and the controls cut in random halves, r averaged over ten cuts), Spearman–Brown
  corrected to the full size (2r / (1 + r)), median over perturbations;
- ``batch_effect_norm`` / ``batch_to_effect``: the median over batches of ‖controls of the batch
  − controls of every batch‖₂ on the same scale, and its ratio to the median ‖ATE‖₂.

Every figure is computed from the counts alone (no model), deterministically given ``seed``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpo_vae.data.contract import CONTROL_LABEL, PERTURBATION_KEY
from gpo_vae.evaluation.ate import ate_perturbseq, group_means
from gpo_vae.preprocessing.normalize import as_csr, library_size

#: Bins of a gene's mean count per cell (lower edges) for the dispersion and zero figures.
MEAN_BINS = (0.0, 0.1, 0.5, 2.0, 10.0)
QUANTILES = (5, 25, 50, 75, 95)
#: How far a simulated figure may sit from the real one: (kind, amount); ``relative``: a share of
#: the real value, ``absolute``: a difference. Figures not listed are shown but not judged.
TOLERANCES: dict[str, tuple[str, float]] = {
    "library_q05": ("relative", 0.25),
    "library_q25": ("relative", 0.2),
    "library_q50": ("relative", 0.2),
    "library_q75": ("relative", 0.2),
    "library_q95": ("relative", 0.25),
    "dispersion_median": ("relative", 0.35),
    "zeros_0.1-0.5": ("absolute", 0.05),
    "zeros_0.5-2": ("absolute", 0.05),
    "zeros_2-10": ("absolute", 0.05),
    "effect_norm_q50": ("relative", 0.25),
    "no_deg_share": ("absolute", 0.25),
    "reliability_median": ("absolute", 0.1),
    "batch_to_effect": ("relative", 0.35),
}


def _bin_names() -> list[str]:
    edges = [*MEAN_BINS, np.inf]
    return [f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">{lo:g}" for lo, hi in itertools.pairwise(edges)]


def _groups(labels: np.ndarray, batches: np.ndarray | None) -> tuple[np.ndarray, int]:
    keys = (
        labels if batches is None else np.char.add(np.char.add(labels.astype(str), "|"), batches.astype(str))
    )
    codes, uniques = pd.factorize(pd.Series(keys))
    return codes.astype(np.int64), len(uniques)


def nb_dispersion(counts: sp.csr_matrix, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean count per cell, moment estimate of φ) of every gene.

    Cell c of group k is modelled as NB with mean ``s_c · μ_gk`` (``s_c`` its library over the
    mean library, ``μ_gk = Σ x / Σ s`` over the group), so neither depth nor a perturbation's own
    shift counts as overdispersion: ``φ_g = Σ[(x − sμ)² − sμ] / Σ (sμ)²``.
    """
    lib = library_size(counts)
    size = lib / max(lib.mean(), 1e-12)
    onehot = sp.csr_matrix(
        (np.ones(groups.size), (groups, np.arange(groups.size))), shape=(n_groups, groups.size)
    )
    weighted = sp.csr_matrix((size, (groups, np.arange(groups.size))), shape=(n_groups, groups.size))
    sum_x = np.asarray((onehot @ counts).todense())
    sum_xx = np.asarray((onehot @ counts.multiply(counts)).todense())
    sum_sx = np.asarray((weighted @ counts).todense())
    sum_s = np.asarray(onehot @ size).ravel()[:, None]
    sum_ss = np.asarray(onehot @ (size * size)).ravel()[:, None]
    mu = np.divide(sum_x, sum_s, out=np.zeros_like(sum_x), where=sum_s > 0)
    excess = (sum_xx - 2 * mu * sum_sx + mu**2 * sum_ss - sum_x).sum(axis=0)
    scale = (mu**2 * sum_ss).sum(axis=0)
    phi = np.divide(excess, scale, out=np.full(excess.shape, np.nan), where=scale > 0)
    return np.asarray(counts.mean(axis=0)).ravel(), phi


def split_half_reliability(
    counts: sp.csr_matrix,
    labels: np.ndarray,
    batches: np.ndarray | None,
    control_label: str,
    target_sum: float,
    rng: np.random.Generator,
    repeats: int = 10,
) -> pd.Series:
    """Spearman–Brown corrected split-half Pearson r of every perturbation's ATE over genes.

    The cells (controls included) are cut in random halves ``repeats`` times; each
    perturbation's r between its two half ATEs is averaged over the cuts, then corrected to the
    full size as ``2r / (1 + r)``.
    """
    perturbations = sorted(set(labels.tolist()) - {control_label})
    total = np.zeros(len(perturbations))
    for _ in range(repeats):
        half = rng.integers(0, 2, labels.size).astype(bool)
        a, b = (
            ate_perturbseq(
                counts[side],
                labels[side],
                control_label,
                perturbations,
                target_sum,
                None,
                None if batches is None else batches[side],
            )
            .reindex(perturbations)
            .to_numpy()
            for side in (half, ~half)
        )
        a = a - a.mean(axis=1, keepdims=True)
        b = b - b.mean(axis=1, keepdims=True)
        denom = np.sqrt((a**2).sum(axis=1) * (b**2).sum(axis=1))
        total += np.divide((a * b).sum(axis=1), denom, out=np.zeros(len(perturbations)), where=denom > 0)
    r = total / repeats
    return pd.Series(2 * r / (1 + r), index=pd.Index(perturbations, name="perturbation"))


def _batch_effect_norm(
    counts: sp.csr_matrix,
    labels: np.ndarray,
    batches: np.ndarray | None,
    control_label: str,
    target_sum: float,
) -> float:
    if batches is None:
        return float("nan")
    controls = np.flatnonzero(labels == control_label)
    codes, names = pd.factorize(pd.Series(batches[controls]))
    if len(names) < 2:
        return float("nan")
    means, _ = group_means(counts[controls], codes.astype(np.int64), len(names), target_sum)
    overall, _ = group_means(counts[controls], np.zeros(controls.size, dtype=np.int64), 1, target_sum)
    return float(np.median(np.linalg.norm(means - overall, axis=1)))


def screen_statistics(
    adata: ad.AnnData,
    perturbation_key: str = PERTURBATION_KEY,
    control_label: str = CONTROL_LABEL,
    batch_key: str | None = None,
    seed: int = 0,
    degs: bool = True,
) -> dict[str, float]:
    """The figures of the module docstring for one screen (raw counts in ``X``).

    ``degs`` runs the Anderson–Darling DEG counts (the slowest figure: seconds per perturbation);
    without it the ``degs_*`` figures are NaN.
    """
    counts = as_csr(adata.X).astype(np.float64)
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    batches = adata.obs[batch_key].astype(str).to_numpy() if batch_key else None
    if not (labels == control_label).any():
        raise ValueError(f"no control cell labelled {control_label!r} in obs[{perturbation_key!r}]")
    lib = library_size(counts)
    out: dict[str, float] = {f"library_q{q:02d}": float(np.percentile(lib, q)) for q in QUANTILES}
    groups, n_groups = _groups(labels, batches)
    gene_mean, phi = nb_dispersion(counts, groups, n_groups)
    zeros = 1.0 - np.asarray((counts > 0).mean(axis=0)).ravel()
    which = np.digitize(gene_mean, MEAN_BINS[1:])
    expressed = gene_mean >= MEAN_BINS[1]
    out["dispersion_median"] = float(np.nanmedian(phi[expressed])) if expressed.any() else float("nan")
    for k, name in enumerate(_bin_names()):
        in_bin = which == k
        out[f"genes_{name}"] = float(in_bin.mean())
        out[f"dispersion_{name}"] = float(np.nanmedian(phi[in_bin])) if in_bin.any() else float("nan")
        out[f"zeros_{name}"] = float(zeros[in_bin].mean()) if in_bin.any() else float("nan")
    target_sum = float(np.median(lib))
    perturbations = sorted(set(labels.tolist()) - {control_label})
    ate = ate_perturbseq(counts, labels, control_label, perturbations, target_sum, None, batches)
    norms = np.linalg.norm(ate.to_numpy(), axis=1)
    for q in (25, 50, 75):
        out[f"effect_norm_q{q}"] = float(np.percentile(norms, q))
    if degs:
        from gpo_vae.data.summary_stats import compute_summary_stats

        stats = compute_summary_stats(adata, perturbation_key, control_label, seed=seed, progress=False)
        n_degs = stats["Number of DEGs (anderson-darling)"].dropna().to_numpy(dtype=float)
        out["degs_median"] = float(np.median(n_degs))
        out["degs_q75"] = float(np.percentile(n_degs, 75))
        out["no_deg_share"] = float((n_degs == 0).mean())
    else:
        out.update(degs_median=float("nan"), degs_q75=float("nan"), no_deg_share=float("nan"))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 23]))
    reliability = split_half_reliability(counts, labels, batches, control_label, target_sum, rng)
    out["reliability_median"] = float(np.nanmedian(reliability.to_numpy()))
    out["batch_effect_norm"] = _batch_effect_norm(counts, labels, batches, control_label, target_sum)
    out["batch_to_effect"] = out["batch_effect_norm"] / out["effect_norm_q50"]
    return out


def matching_shape(
    adata: ad.AnnData,
    perturbation_key: str = PERTURBATION_KEY,
    control_label: str = CONTROL_LABEL,
    batch_key: str | None = None,
) -> dict[str, float | int]:
    """:class:`~gpo_vae.data.synthetic_config.SyntheticConfig` fields that give a simulated screen
    the shape of ``adata``: genes, perturbations, cells per perturbation (median and log-spread),
    the controls' share, the share of targets not measured and the batches. Depth, dispersion and
    effects are not shape: they are what a preset calibrates."""
    labels = adata.obs[perturbation_key].astype(str)
    counts = labels[labels != control_label].value_counts()
    genes = set(adata.var_names.astype(str))
    targets = {g for label in counts.index for g in label.split("+")}
    shape: dict[str, float | int] = {
        "n_genes": int(adata.n_vars),
        "n_perturbations": int(counts.size),
        "cells_per_perturbation": float(counts.median()),
        "cells_sigma": float(np.log(counts.to_numpy(dtype=float)).std()),
        "control_fraction": float((labels == control_label).mean()),
        "unmeasured_fraction": float(np.mean([t not in genes for t in sorted(targets)])),
    }
    if batch_key:
        shape["n_batches"] = int(adata.obs[batch_key].astype(str).nunique())
    return shape


def within_tolerance(name: str, real: float, simulated: float) -> bool | None:
    """Whether ``simulated`` sits within :data:`TOLERANCES` of ``real`` (None: not judged)."""
    if name not in TOLERANCES or not (np.isfinite(real) and np.isfinite(simulated)):
        return None
    kind, amount = TOLERANCES[name]
    limit = amount * abs(real) if kind == "relative" else amount
    return bool(abs(simulated - real) <= limit)


def compare_statistics(real: Mapping[str, float], simulated: Mapping[str, float]) -> pd.DataFrame:
    """Side by side: one row per figure, the real and simulated values, the tolerance and whether
    the simulated value is within it."""
    rows = []
    for name, value in real.items():
        other = float(simulated.get(name, np.nan))
        kind, amount = TOLERANCES.get(name, ("", np.nan))
        rows.append(
            {
                "statistic": name,
                "real": float(value),
                "simulated": other,
                "tolerance": "" if not kind else (f"±{amount:.0%}" if kind == "relative" else f"±{amount:g}"),
                "within": within_tolerance(name, float(value), other),
            }
        )
    return pd.DataFrame(rows)


__all__ = [
    "MEAN_BINS",
    "TOLERANCES",
    "compare_statistics",
    "matching_shape",
    "nb_dispersion",
    "screen_statistics",
    "within_tolerance",
]
