"""Time the preprocessing stage on the synthetic screen (default or RPE1 size), with its memory.

    python benchmarks/preprocess.py [--preset rpe1|default] [--data DIR] [--no-doublets] [--in-memory]
                                    [--deg-chunk-size N] [--pairing-chunk-size N]
                                    [--doublet-chunks [--jobs N]]

Simulates the screen into ``--data`` (reused when it already holds one), then builds the artifact
(filters, splits, QC with scrublet, DE nodes, OT pairing, ΔX, counterfactual medians,
normalisation statistics, writing it) and prints seconds and the peak resident memory of each
sub-stage (sampled every 0.2 s by a thread), the whole run's peak RSS, and the artifact's shape.
By default as ``main`` builds it (:func:`~gpo_vae.preprocessing.from_file.build_artifact`: counts
read from disk a block of cells at a time); ``--in-memory`` as the Python API's
``preprocess_files`` + ``write_artifact`` (the kept cells' counts in memory); ``--deg-chunk-size N``
as ``main --deg-chunk-size N`` builds it: the DE test planned in chunks of N perturbations
(``plan_deg_of_file``, timed as ``deg plan``), the chunks run one after another here (``deg
chunks``: their total, the longest, the peak), then the artifact from their picks;
``--pairing-chunk-size N`` likewise for the OT pairing (``plan_pairing_of_file``, ``pairing plan``
and ``pairing chunks``); ``--doublet-chunks`` likewise for scrublet's chunks of cells, ``--jobs N``
of them at once, each in its own process (``doublet chunks``: the wall time, the longest, the
largest peak of a job). Simulation is not timed here (``benchmarks/simulate.py`` does that).
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
        picks = None
        if args.deg_chunk_size:
            picks = _deg_in_chunks(inputs, args.deg_chunk_size, Path(scratch) / "deg_chunks", sampler, start)
        pairing = None
        if args.pairing_chunk_size:
            pairing = _pairing_in_chunks(
                inputs, args.pairing_chunk_size, Path(scratch) / "pair_chunks", sampler, time.perf_counter()
            )
        doublets = None
        if args.doublet_chunks:
            doublets = _doublets_in_chunks(
                inputs, args.jobs, Path(scratch) / "doublet_chunks", sampler, time.perf_counter()
            )
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


def _deg_in_chunks(inputs: tuple, size: int, out: Path, sampler: RssSampler, start: float) -> dict:
    """Plan the DE chunks and run them in turn, printing their seconds and peaks; their picks."""
    from gpo_vae.preprocessing.deg_chunks import deg_chunk_picks, plan_deg_of_file

    clock = sampler.start_time
    chunks = plan_deg_of_file(*inputs, size, out)
    planned = time.perf_counter()
    picks, seconds = {}, []
    for chunk in chunks:
        began = time.perf_counter()
        picks.update(deg_chunk_picks(chunk.spec))
        seconds.append(time.perf_counter() - began)
    done = time.perf_counter()
    print(
        f"deg plan: {planned - start:.1f} s, {sampler.peak(start - clock, planned - clock):.2f} GB; "
        f"deg chunks: {len(chunks)} of ≤ {size} perturbations, {done - planned:.1f} s "
        f"(longest {max(seconds, default=0):.1f} s), {sampler.peak(planned - clock, done - clock):.2f} GB"
    )
    return picks


def _pairing_in_chunks(inputs: tuple, size: int, out: Path, sampler: RssSampler, start: float) -> dict:
    """Plan the pairing chunks and run them in turn, printing their seconds and peaks; the
    partners and the features' record."""
    from gpo_vae.preprocessing.pair_chunks import pair_chunk_partners, plan_pairing_of_file

    clock = sampler.start_time
    plan = plan_pairing_of_file(*inputs, size, out)
    planned = time.perf_counter()
    partners, seconds = {}, []
    for chunk in plan.chunks:
        began = time.perf_counter()
        partners.update(pair_chunk_partners(chunk.spec))
        seconds.append(time.perf_counter() - began)
    done = time.perf_counter()
    print(
        f"pairing plan: {planned - start:.1f} s, {sampler.peak(start - clock, planned - clock):.2f} GB; "
        f"pairing chunks: {len(plan.chunks)} of ≤ {size} perturbations, {done - planned:.1f} s "
        f"(longest {max(seconds, default=0):.1f} s), {sampler.peak(planned - clock, done - clock):.2f} GB"
    )
    return {"partners": partners, "record": plan.record} if plan.chunks else None


def _timed_doublet_chunk(spec: Path) -> tuple[dict, float, float]:
    from gpo_vae.preprocessing.doublet_chunks import doublet_chunk_calls

    began = time.perf_counter()
    calls = doublet_chunk_calls(spec)
    return calls, time.perf_counter() - began, peak_rss_gb()


def _doublets_in_chunks(inputs: tuple, jobs: int, out: Path, sampler: RssSampler, start: float) -> list[str]:
    """Plan scrublet's chunks and run them ``jobs`` at a time, each in a fresh process (as
    redun's process executor runs them), printing the wall seconds and each job's peak; the calls."""
    from concurrent.futures import ProcessPoolExecutor

    from gpo_vae.preprocessing.doublet_chunks import plan_doublets_of_file

    clock = sampler.start_time
    chunks = plan_doublets_of_file(*inputs, out)
    planned = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn, max_tasks_per_child=1) as pool:
        results = list(pool.map(_timed_doublet_chunk, [chunk.spec for chunk in chunks]))
    done = time.perf_counter()
    print(
        f"doublet plan: {planned - start:.1f} s, {sampler.peak(start - clock, planned - clock):.2f} GB; "
        f"doublet chunks: {len(chunks)}, {jobs} at a time, {done - planned:.1f} s "
        f"(longest {max((r[1] for r in results), default=0):.1f} s, "
        f"a job's peak ≤ {max((r[2] for r in results), default=0):.2f} GB)"
    )
    return [name for calls, _, _ in results for name in calls["doublets"]]


if __name__ == "__main__":
    main()
