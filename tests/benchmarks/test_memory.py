"""The benchmarks' peak memory is the process's own, not its parent's."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from tests.benchmark_modules import load_benchmark


def _child_peak() -> float:
    return load_benchmark("_memory").peak_rss_gb()


def test_a_spawned_worker_does_not_report_its_parents_memory():
    """ru_maxrss of a spawned worker starts at its parent's resident memory; a benchmark stage run
    in a process of its own (scale.py, grn.py) must report what it used itself."""
    peak_rss_gb = load_benchmark("_memory").peak_rss_gb
    ballast = bytearray(400 * 2**20)
    ballast[:: 2**12] = b"\x01" * len(ballast[:: 2**12])  # touched: resident
    parent = peak_rss_gb()
    assert parent >= 0.39
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1) as pool:
        child = pool.submit(_child_peak).result()
    assert 0 < child < parent - 0.3, (child, parent)
    del ballast
