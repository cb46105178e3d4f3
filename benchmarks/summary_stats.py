"""Time the summary statistics computed from a screen's cells, from disk or in memory.

    python benchmarks/summary_stats.py --h5ad counts.h5ad [--in-memory]

From disk (as the workflow computes them for a screen given without statistics): the counts
stay in the file; one pass sums the rows, one copies them grouped by perturbation into a scratch
file, and each batch of perturbations is read back whole. ``--in-memory``: the whole matrix is
read first (as ``gpo_vae.pp.prepare`` does with a screen in memory). Prints seconds, the peak
resident memory and a checksum of the table (the two paths give the same one).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from _memory import peak_rss_gb

from gpo_vae.data.contract import read_counts_h5ad
from gpo_vae.data.contract_on_disk import open_counts_h5ad
from gpo_vae.data.layout import ScreenLayout
from gpo_vae.data.summary_stats import compute_summary_stats, write_summary_stats_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--h5ad", type=Path, required=True)
    parser.add_argument("--in-memory", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        if args.in_memory:
            adata = read_counts_h5ad(args.h5ad, ScreenLayout())
            read = time.perf_counter() - start
            table = compute_summary_stats(adata, progress=False)
        else:
            adata, counts = open_counts_h5ad(args.h5ad, ScreenLayout())
            read = time.perf_counter() - start
            table = compute_summary_stats(adata, progress=False, counts=counts, scratch_dir=scratch)
        total = time.perf_counter() - start
        digest = hashlib.sha256(
            write_summary_stats_csv(table, Path(scratch) / "s.csv").read_bytes()
        ).hexdigest()
    peak = peak_rss_gb()
    where = "in memory" if args.in_memory else "from disk"
    print(
        f"summary statistics {where}: {adata.n_obs:,} cells x {adata.n_vars:,} genes, {len(table) - 1} perturbations"
    )
    print(f"opening {read:.1f} s, total {total:.1f} s, peak RSS {peak:.2f} GB, table sha256 {digest[:16]}")


if __name__ == "__main__":
    main()
