"""Time the preprocessing stage on the synthetic screen (default or RPE1 size), with its memory.

    python benchmarks/preprocess.py [--preset rpe1|default] [--data DIR] [--no-doublets] [--in-memory]
                                    [--deg-chunk-size N] [--pairing-chunk-size N] [--doublet-chunks]
                                    [--jobs N]

Simulates the screen into ``--data`` (reused when it already holds one), then builds the artifact
(filters, splits, QC with scrublet, DE nodes, OT pairing, ΔX, counterfactual medians,
normalisation statistics, writing it) and prints seconds and the peak resident memory of each
sub-stage (sampled every 0.2 s by a thread), the whole run's peak RSS, and the artifact's shape.
By default as ``main`` builds it (:func:`~gpo_vae.preprocessing.from_file.build_artifact`: counts
read from disk a block of cells at a time); ``--in-memory`` as the Python API's
``preprocess_files`` + ``write_artifact`` (the kept cells' counts in memory). ``--deg-chunk-size
N``, ``--pairing-chunk-size N`` and ``--doublet-chunks`` as ``main`` builds it with those options:
the stage planned here (``plan_deg_of_file``, ``plan_pairing_of_file``, ``plan_doublets_of_file``;
printed as ``deg plan``, ``pairing plan``, ``doublets plan``), its chunks run ``--jobs N`` at a
time, each in a process of its own as redun's process executor runs them (``... chunks``: their
wall seconds, the longest, the largest peak of a job), then the artifact from their results. Simulation is not timed here (``benchmarks/simulate.py`` does that).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _memory import peak_rss_gb

from gpo_vae.data.synthetic import SUMMARY_SHEET, SyntheticConfig, write_synthetic_dataset
from gpo_vae.preprocessing import from_file, steps
from gpo_vae.preprocessing.artifact import RECORD_FILE, read_artifact_on_disk, write_artifact
from gpo_vae.preprocessing.config import PreprocessConfig, QCConfig
from gpo_vae.preprocessing.from_file import build_artifact, preprocess_files

_pipeline_timed = steps._timed

#: (stage, start, end) in perf_counter seconds, as the pipeline's stage timer saw them.
STAGES: list[tuple[str, float, float]] = []


@contextmanager
def _recorded(timings: dict[str, float], name: str) -> Iterator[None]:
    begin = time.perf_counter()
    with _pipeline_timed(timings, name):
        yield
    STAGES.append((name, begin, time.perf_counter()))


# the benchmark reads each stage's start and end off the pipeline's own stage timer
steps._timed = from_file._timed = _recorded


class RssSampler(threading.Thread):
    """Resident memory of this process every ``interval`` seconds: (seconds since start, GB)."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval, self.samples, self._stop_event = interval, [], threading.Event()
        self.start_time = time.perf_counter()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def run(self) -> None:
        with open("/proc/self/statm") as statm:
            while not self._stop_event.is_set():
                statm.seek(0)
                rss = int(statm.read().split()[1]) * self._page / 1024**3
                self.samples.append((time.perf_counter() - self.start_time, rss))
                time.sleep(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def peak(self, start: float, stop: float) -> float:
        inside = [gb for t, gb in self.samples if start <= t <= stop]
        return max(inside) if inside else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["default", "rpe1"], default="rpe1")
    parser.add_argument("--data", type=Path, help="dataset folder (simulated there when absent)")
    parser.add_argument("--no-doublets", action="store_true", help="skip scrublet")
    parser.add_argument("--in-memory", action="store_true", help="preprocess_files + write_artifact")
    parser.add_argument(
        "--deg-chunk-size", type=int, default=0, help="the DE test in chunks of N perturbations"
    )
    parser.add_argument(
        "--pairing-chunk-size", type=int, default=0, help="the OT pairing in chunks of N perturbations"
    )
    parser.add_argument("--doublet-chunks", action="store_true", help="scrublet's chunks as separate jobs")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="with --doublet-chunks: chunks run at once, each in its own process",
    )
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
        inputs = (data / "counts.h5ad", data / "summary_stats.xlsx", SUMMARY_SHEET, config)
        sampler = RssSampler()
        sampler.start()
        start = time.perf_counter()
        scratch_dir = Path(scratch)
        picks = pairing = doublets = None
        if args.deg_chunk_size:
            picks = _in_chunks(
                "deg", inputs, scratch_dir / "deg_chunks", sampler, args.jobs, args.deg_chunk_size
            )
        if args.pairing_chunk_size:
            pairing = _in_chunks(
                "pairing", inputs, scratch_dir / "pair_chunks", sampler, args.jobs, args.pairing_chunk_size
            )
        if args.doublet_chunks:
            doublets = _in_chunks("doublets", inputs, scratch_dir / "doublet_chunks", sampler, args.jobs)
        if args.in_memory:
            out = write_artifact(preprocess_files(*inputs, print_table=False), Path(scratch) / "artifact")
        else:
            out = build_artifact(
                *inputs,
                Path(scratch) / "artifact",
                print_table=False,
                deg_picks=picks,
                pairing=pairing,
                doublets=doublets,
            )
        total = time.perf_counter() - start
        sampler.stop()
        peak = peak_rss_gb()  # before anything reads the artifact back

        record = json.loads((out / RECORD_FILE).read_text())
        artifact, _ = read_artifact_on_disk(out)  # its shape and labels: the matrices stay on disk
        path = "in memory (preprocess_files)" if args.in_memory else "from disk (build_artifact)"
        print(f"\n== preprocessing {path}, {args.preset} preset, {os.cpu_count()} CPU cores")
        print(f"input  {record['input']['cells']:,} cells x {record['input']['genes']:,} genes")
        print(
            f"output {artifact.n_obs:,} cells x {artifact.n_vars:,} genes, {len(artifact.uns['nodes'])} nodes "
            f"({artifact.uns['n_perturbed']} perturbed)"
        )
        print(f"{'stage':<16}{'seconds':>8}  peak RSS")
        clock, last = sampler.start_time, start - sampler.start_time
        for name, began, ended in STAGES:
            began, ended = began - clock, ended - clock
            if began > last + 0.5:  # reading, or writing the artifact: between the timed stages
                print(f"{'(read/write)':<16}{began - last:8.1f}  {sampler.peak(last, began):.2f} GB")
            print(f"{name:<16}{ended - began:8.1f}  {sampler.peak(began, ended):.2f} GB")
            last = ended
        end = start + total - clock
        print(f"{'(read/write)':<16}{end - last:8.1f}  {sampler.peak(last, end):.2f} GB")
        size = sum(f.stat().st_size for f in out.iterdir()) / 1e9
        print(f"{'total':<16}{total:8.1f}  artifact {size:.2f} GB")
        print(f"peak RSS {peak:.2f} GB (sampled {max(gb for _, gb in sampler.samples):.2f} GB)")


def _chunk_functions(stage: str) -> tuple:
    """(plan of a counts file, a chunk's job) of a stage preprocessing can spread."""
    if stage == "deg":
        from gpo_vae.preprocessing.deg_chunks import deg_chunk_picks, plan_deg_of_file

        return plan_deg_of_file, deg_chunk_picks
    if stage == "pairing":
        from gpo_vae.preprocessing.pair_chunks import pair_chunk_partners, plan_pairing_of_file

        return plan_pairing_of_file, pair_chunk_partners
    from gpo_vae.preprocessing.doublet_chunks import doublet_chunk_calls, plan_doublets_of_file

    return plan_doublets_of_file, doublet_chunk_calls


def _timed_job(stage: str, spec: Path) -> tuple[object, float, float]:
    began = time.perf_counter()
    result = _chunk_functions(stage)[1](spec)
    return result, time.perf_counter() - began, peak_rss_gb()


def _in_chunks(
    stage: str, inputs: tuple, out: Path, sampler: RssSampler, jobs: int = 1, size: int | None = None
) -> object:
    """Plan ``stage``'s chunks here, then run them ``jobs`` at a time, each in a fresh process
    (as redun's process executor runs them); print the plan's seconds and peak, the chunks' wall
    seconds, the longest and the largest peak of a job; return what preprocessing takes."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    clock, start = sampler.start_time, time.perf_counter()
    plan = _chunk_functions(stage)[0](*inputs, *([] if size is None else [size]), out)
    chunks = plan.chunks if stage == "pairing" else plan
    planned = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn, max_tasks_per_child=1) as pool:
        timed = list(pool.map(partial(_timed_job, stage), [chunk.spec for chunk in chunks]))
    done = time.perf_counter()
    per_chunk = "" if size is None else f" of ≤ {size} perturbations"
    print(
        f"{stage} plan: {planned - start:.1f} s, {sampler.peak(start - clock, planned - clock):.2f} GB; "
        f"{stage} chunks: {len(chunks)}{per_chunk}, {jobs} at a time, {done - planned:.1f} s "
        f"(longest {max((t[1] for t in timed), default=0):.1f} s, "
        f"a job's peak ≤ {max((t[2] for t in timed), default=0):.2f} GB)"
    )
    results = [result for result, _, _ in timed]
    if stage == "deg":
        return {group: gene for picks in results for group, gene in picks.items()}
    if stage == "pairing":
        partners = {cell: partner for part in results for cell, partner in part.items()}
        return {"partners": partners, "record": plan.record} if chunks else None
    return [name for calls in results for name in calls["doublets"]]


if __name__ == "__main__":
    main()
