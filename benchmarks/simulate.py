"""Time the synthetic screen: simulation, summary statistics from the cells, writing the dataset.

    python benchmarks/simulate.py [--preset NAME|all] [--out DIR] [--seed N]
    python benchmarks/simulate.py --preset panel --h5ad screen.h5ad [--network truth.csv] [--set key=value ...]

The first form prints seconds per part, the peak resident memory of the process so far, the dataset's shape,
calibration percentiles next to the RPE1 figures of design §9, and how many perturbations pass
the design §3 filters. Without ``--out`` the dataset goes to a temporary folder that is removed.

The second form writes one screen as a user would bring it: only the counts ``.h5ad``, saved in
the preset's layout (:func:`gpo_vae.data.synthetic.saved_layout`), with no summary statistics,
and optionally its true network (``--network``) to pass to ``main --networks``. ``--set``
overrides config fields (``--set n_perturbations=12 --set n_genes=400``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _memory import peak_rss_gb

from gpo_vae.data.contract import CONTROL_LABEL
from gpo_vae.data.summary_stats import compute_summary_stats, normalise_rows
from gpo_vae.data.synthetic import (
    PRESETS,
    SyntheticConfig,
    SyntheticScreen,
    report_unmeasured_knockdown,
    save_synthetic_dataset,
    saved_layout,
    simulate_perturbseq,
)

PERCENTILES = [5, 25, 50, 75, 95]
# Replogle 2022 RPE1 (TabC_RPE1_summary_statistic), percentiles 5/25/50/75/95, design §9.
RPE1_FIGURES = {
    "mean UMI count": [9_900, 11_700, 12_600, 13_600, 16_500],
    "percent knockdown": [-1.00, -0.96, -0.91, -0.82, -0.36],
    "Number of DEGs (anderson-darling)": [1, 33, 404, 1_151, 2_623],
    "number of cells (unfiltered)": [15, 41, 70, 112, 210],
    "Fraction of mitochondrially encoded RNA": [0.045, 0.060, 0.063, 0.066, 0.075],
}


def design_filters(screen: SyntheticScreen, stats: pd.DataFrame) -> tuple[int, int]:
    """Perturbations passing the strong filter, and those also keeping > 100 knocked-down cells."""
    stats = stats[~stats["genetic perturbation"].str.contains(CONTROL_LABEL)]
    strong = (
        (stats["Number of DEGs (anderson-darling)"] > 50)
        & (stats["percent knockdown"] <= -0.3)
        & (stats["number of cells (filtered)"] > 25)
    )
    symbols = stats["genetic perturbation"].str.split("_").str[1][strong].to_numpy()
    adata = screen.adata
    groups = pd.Series(np.arange(adata.n_obs)).groupby(adata.obs["gene"].astype(str).to_numpy()).indices
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    measured = [s for s in symbols if s in adata.var_names]
    # Knockdown filter: keep cells whose target is at most the controls' 10th percentile.
    target_expr = normalise_rows(adata.X[:, adata.var_names.get_indexer(measured)], totals, 1e4).tocsc()
    column = dict(zip(measured, range(len(measured)), strict=True))
    kept = 0
    for symbol in symbols:
        cells = groups[symbol]
        if symbol in column:
            values = target_expr[:, column[symbol]].toarray().ravel()
            cells = cells[values[cells] <= np.percentile(values[groups[CONTROL_LABEL]], 10)]
        kept += cells.size > 100
    return int(strong.sum()), kept


def run(preset: str, out: Path | None, seed: int, overrides: dict | None = None) -> None:
    config = SyntheticConfig.preset(preset, seed=seed, **(overrides or {}))
    print(f"== preset {preset} (seed {seed})")
    start = time.perf_counter()
    screen = simulate_perturbseq(config)
    simulated = time.perf_counter()
    # as write_synthetic_dataset makes them, so a dataset saved with --out is the workflow's
    stats = report_unmeasured_knockdown(compute_summary_stats(screen.adata, progress=False), screen)
    summarised = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out.parent if out else None) as scratch:
        target = out if out else Path(scratch) / "synthetic"
        save_synthetic_dataset(screen, stats, target, overwrite=True)
        written = time.perf_counter()
        size_gb = sum(f.stat().st_size for f in target.iterdir()) / 1024**3
    adata = screen.adata
    n_controls = int((adata.obs["gene"] == CONTROL_LABEL).sum())
    print(f"simulate            {simulated - start:8.1f} s")
    print(f"summary statistics  {summarised - simulated:8.1f} s")
    print(f"write               {written - summarised:8.1f} s  ({size_gb:.2f} GiB on disk)")
    print(f"total               {written - start:8.1f} s   peak RSS so far {peak_rss_gb():.2f} GiB")
    print(
        f"shape {adata.n_obs:,} cells x {adata.n_vars:,} genes, {adata.X.nnz / np.prod(adata.shape):.1%} non-zero; "
        f"{len(screen.perturbations):,} perturbations ({(~screen.perturbations.measured).sum()} targets not "
        f"measured), {n_controls:,} controls ({n_controls / adata.n_obs:.1%}); {len(screen.network):,} GRN edges"
    )
    data = stats[~stats["genetic perturbation"].str.contains(CONTROL_LABEL)]
    print(f"{'percentiles 5/25/50/75/95':42s} {'synthetic':>44s}   RPE1 (design §9)")
    for column, real in RPE1_FIGURES.items():
        ours = np.nanpercentile(data[column].astype(float), PERCENTILES)
        print(f"{column:42s} {np.array2string(ours, precision=3, floatmode='maxprec'):>44s}   {real}")
    n_strong, n_kept = design_filters(screen, stats)
    truth = screen.perturbations
    print(
        f"design §3: {n_strong} of {len(data)} pass the strong filter ({n_strong / len(data):.0%}; RPE1 1,564 of "
        f"2,550 = 61%), {n_kept} keep > 100 cells after the knockdown filter; "
        f"simulated truth: {truth.strong.mean():.0%} strong"
    )


def _override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    if key not in SyntheticConfig.__dataclass_fields__:
        raise argparse.ArgumentTypeError(f"--set {text}: SyntheticConfig has no field {key!r}")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            continue
    return key, value


def write_user_screen(preset: str, seed: int, h5ad: Path, network: Path | None, overrides: dict) -> None:
    """One screen saved as a user would bring it (module docstring)."""
    start = time.perf_counter()
    config = SyntheticConfig.preset(preset, seed=seed, **overrides)
    screen = simulate_perturbseq(config)
    h5ad.parent.mkdir(parents=True, exist_ok=True)
    saved_layout(screen.adata, config.layout, seed).write_h5ad(h5ad)
    if network is not None:
        screen.network.to_csv(network, index=False)
    adata = screen.adata
    print(
        f"{h5ad}: preset {preset}, {adata.n_obs:,} cells x {adata.n_vars:,} genes, "
        f"{adata.obs['gene'].nunique() - 1} perturbation labels, layout {config.layout}, "
        f"{time.perf_counter() - start:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=[*PRESETS, "all"], default="default")
    parser.add_argument("--out", type=Path, help="write the dataset here (a folder per preset with 'all')")
    parser.add_argument("--h5ad", type=Path, help="write only the counts file, as a user's screen")
    parser.add_argument("--network", type=Path, help="with --h5ad: also the true network as csv")
    parser.add_argument("--set", type=_override, action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.h5ad is not None:
        if args.preset == "all":
            parser.error("--h5ad writes one preset")
        write_user_screen(args.preset, args.seed, args.h5ad, args.network, dict(args.set))
        return
    presets = ["default", "rpe1"] if args.preset == "all" else [args.preset]
    for preset in presets:
        out = args.out / preset if args.out and len(presets) > 1 else args.out
        run(preset, out, args.seed, dict(args.set))


if __name__ == "__main__":
    main()
