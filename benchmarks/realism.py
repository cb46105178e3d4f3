"""Is the simulator realistic? A real screen and simulated screens of its shape, side by side.

    python benchmarks/realism.py [--real PATH] [--batch-key cell_type] [--presets glioma,default,panel]
                                 [--seeds 0,1,2] [--markdown]

For the real screen (default: the one in ``../shared/data/screens``) and, for every preset, a
simulated screen of the same shape (genes, perturbations, cells, controls, unmeasured targets,
batches: :func:`gpo_vae.evaluation.realism.matching_shape`; depth, dispersion and effects stay the
preset's), prints the figures of :func:`gpo_vae.evaluation.realism.screen_statistics`: library-size
quantiles, NB overdispersion and zero share by expression level, ‖ATE‖ and DEGs per
perturbation, the ATE's split-half reliability and the batch (cell line) effect against the
perturbation effect. Each simulated figure is the mean over ``--seeds``; ``within`` says whether it
sits inside the stated tolerance of the real one (:data:`gpo_vae.evaluation.realism.TOLERANCES`), and
the last lines count, per preset, the figures within tolerance and name the one furthest out.
Seconds and peak memory are printed at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _memory import peak_rss_gb  # noqa: E402
from _pool import markdown  # noqa: E402

from gpo_vae.data.synthetic import PRESETS, SyntheticConfig, simulate_perturbseq  # noqa: E402
from gpo_vae.evaluation.realism import (  # noqa: E402
    TOLERANCES,
    compare_statistics,
    matching_shape,
    screen_statistics,
)

REAL = ROOT.parent / "shared" / "data" / "screens" / "mcfaline23_glioma_crispri.h5ad"


def simulated_statistics(
    preset: str, shape: dict, seeds: list[int], batch_key: str | None
) -> dict[str, float]:
    """Mean figures over ``seeds`` of the preset's screen in ``shape``."""
    rows = []
    for seed in seeds:
        config = SyntheticConfig.preset(preset, seed=seed, **shape)
        adata = simulate_perturbseq(config).adata
        rows.append(screen_statistics(adata, batch_key=config.batch_column if batch_key else None, seed=seed))
    return pd.DataFrame(rows).mean().to_dict()


def misfit(row: pd.Series) -> float:
    """How far a simulated figure is from the real one, in units of its tolerance."""
    kind, amount = TOLERANCES[row["statistic"]]
    limit = amount * abs(row["real"]) if kind == "relative" else amount
    return abs(row["simulated"] - row["real"]) / limit if limit > 0 else np.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REAL)
    parser.add_argument("--perturbation-key", default="gene")
    parser.add_argument("--control-label", default="non-targeting")
    parser.add_argument("--batch-key", default="cell_type", help="obs column of the batches ('' for none)")
    parser.add_argument("--presets", default="glioma,default,panel")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    presets = [p for p in args.presets.split(",") if p]
    unknown = sorted(set(presets) - set(PRESETS))
    if unknown:
        parser.error(f"unknown presets {unknown}; choose from {list(PRESETS)}")
    if not args.real.is_file():
        parser.error(f"--real {args.real}: no such file (the real screen lives in ../shared/data/screens)")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    start = time.perf_counter()
    real = ad.read_h5ad(args.real)
    real.obs = real.obs.copy()
    batch_key = args.batch_key or None
    shape = matching_shape(real, args.perturbation_key, args.control_label, batch_key)
    real_stats = screen_statistics(real, args.perturbation_key, args.control_label, batch_key)
    print(f"real screen {args.real.name}: {real.n_obs:,} cells x {real.n_vars:,} genes; shape {shape}")
    table = pd.DataFrame({"statistic": list(real_stats), "real": list(real_stats.values())})
    summary = []
    for preset in presets:
        sim = simulated_statistics(preset, shape, seeds, batch_key)
        compared = compare_statistics(real_stats, sim)
        table[preset] = compared["simulated"].to_numpy()
        table[f"{preset} within"] = compared["within"].map({True: "yes", False: "NO", None: ""}).to_numpy()
        judged = compared[compared["within"].notna()].copy()
        judged["misfit"] = judged.apply(misfit, axis=1)
        worst = judged.sort_values("misfit").iloc[-1]
        summary.append(
            f"{preset}: {int(judged['within'].astype(bool).sum())} of {len(judged)} figures within tolerance; "
            f"furthest out: {worst['statistic']} (real {worst['real']:.3g}, simulated {worst['simulated']:.3g}, "
            f"{worst['misfit']:.1f}x its tolerance)"
        )
    table.insert(
        2, "tolerance", [compare_statistics({k: 0}, {}).iloc[0]["tolerance"] for k in table["statistic"]]
    )
    with pd.option_context(
        "display.width", 250, "display.max_columns", 30, "display.float_format", "{:.4g}".format
    ):
        print(table.to_string(index=False))
    print("\n".join(summary))
    if args.markdown:
        shown = table.copy()
        for column in shown.columns:
            if shown[column].dtype.kind == "f":
                shown[column] = shown[column].map(lambda v: "" if np.isnan(v) else f"{v:.3g}")
        print(markdown(shown))
    peak = peak_rss_gb()
    print(f"{time.perf_counter() - start:.1f} s, peak RSS {peak:.2f} GiB, seeds {seeds}")


if __name__ == "__main__":
    main()
