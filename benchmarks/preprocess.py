"""Time the preprocessing stage on the synthetic screen (default or RPE1 size).

    python benchmarks/preprocess.py [--preset rpe1|default] [--data DIR] [--no-doublets]

Simulates the screen into ``--data`` (reused when it already holds one), then runs the whole
preprocessing stage (filters, splits, QC with scrublet, DE nodes, OT pairing, ΔX, counterfactual
medians, normalisation statistics, writing the artifact) and prints seconds per sub-stage, the
peak resident memory of the process, and the artifact's shape. Simulation is not timed here
(``benchmarks/simulate.py`` does that).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

from gpo_vae.data.synthetic import SUMMARY_SHEET, SyntheticConfig, write_synthetic_dataset
from gpo_vae.preprocessing.artifact import write_artifact
from gpo_vae.preprocessing.config import PreprocessConfig, QCConfig
from gpo_vae.preprocessing.pipeline import preprocess_files


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["default", "rpe1"], default="rpe1")
    parser.add_argument("--data", type=Path, help="dataset folder (simulated there when absent)")
    parser.add_argument("--no-doublets", action="store_true", help="skip scrublet")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or Path(scratch) / "data"
        if not (data / "counts.h5ad").exists():
            # In a child process, so that the simulation's memory does not count in our peak RSS.
            start = time.perf_counter()
            child = multiprocessing.get_context("spawn").Process(
                target=write_synthetic_dataset, args=(data, SyntheticConfig.preset(args.preset))
            )
            child.start()
            child.join()
            if child.exitcode != 0:
                raise SystemExit(f"simulation failed (exit code {child.exitcode})")
            print(
                f"simulated {args.preset} screen into {data} in {time.perf_counter() - start:.1f} s (not timed)"
            )
        config = PreprocessConfig(qc=QCConfig(doublets=not args.no_doublets))
        start = time.perf_counter()
        read_start = time.perf_counter()
        artifact = preprocess_files(data / "counts.h5ad", data / "summary_stats.xlsx", SUMMARY_SHEET, config)
        total_preprocess = time.perf_counter() - read_start
        write_start = time.perf_counter()
        out = write_artifact(artifact, Path(scratch) / "artifact")
        write_seconds = time.perf_counter() - write_start
        total = time.perf_counter() - start

        record = json.loads(artifact.uns["record"])
        timings = record["timings"]
        print(f"\n== preprocessing, {args.preset} preset, {os.cpu_count()} CPU cores")
        print(f"input  {record['input']['cells']:,} cells x {record['input']['genes']:,} genes")
        print(
            f"output {artifact.n_obs:,} cells x {artifact.n_vars:,} genes, {len(artifact.uns['nodes'])} nodes "
            f"({artifact.uns['n_perturbed']} perturbed)"
        )
        other = total_preprocess - sum(timings.values())
        for name, seconds in timings.items():
            print(f"{name:<16}{seconds:8.1f} s")
        print(f"{'read + other':<16}{other:8.1f} s")
        print(
            f"{'write artifact':<16}{write_seconds:8.1f} s  ({sum(f.stat().st_size for f in out.iterdir()) / 1e9:.2f} GB)"
        )
        print(f"{'total':<16}{total:8.1f} s")
        print(f"peak RSS {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
