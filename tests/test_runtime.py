"""Where computation runs, and memory handed back between stages."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from gpo_vae.runtime import release_freed_memory


@pytest.mark.skipif(not release_freed_memory(), reason="not glibc: nothing to trim")
def test_freed_heap_memory_is_handed_back_to_the_operating_system():
    """Arrays glibc put in the heap (after a large free raised its mmap threshold) stay in the
    process's resident memory when freed, until trimmed: a stage's freed memory no longer
    counts in the next stage's peak. In a fresh process, so the heap is this test's alone."""
    script = textwrap.dedent(
        """
        import numpy as np
        from gpo_vae.runtime import release_freed_memory

        def rss_mb():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

        big = np.ones(16 * 2**20 // 8)
        del big  # glibc now serves arrays under 16 MB from the heap
        arrays = [np.ones(8 * 2**20 // 8) for _ in range(40)]
        last = arrays[-1]  # on top of the heap: the rest cannot shrink the heap by itself
        del arrays
        freed = rss_mb()
        release_freed_memory()
        print(freed, rss_mb())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    freed, trimmed = (float(x) for x in result.stdout.split())
    assert freed - trimmed > 250  # of the 312 MB freed


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_ordered_map_keeps_order_and_computes_only_a_few_items_ahead(threads: int) -> None:
    """Results come in the items' order whatever order threads finish in, and no more than two
    per thread are started before the first is taken (``ThreadPoolExecutor.map`` starts all)."""
    import threading
    import time

    from gpo_vae.runtime import ordered_map

    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.002 * ((7 * i) % 5))  # later items often finish first
        return i * i

    results = ordered_map(work, range(40), threads)
    first = next(results)
    time.sleep(0.05)
    assert len(started) <= max(1, 2 * threads)
    assert [first, *results] == [i * i for i in range(40)]
    assert sorted(started) == list(range(40))


def test_ordered_map_passes_a_workers_error_on() -> None:
    from gpo_vae.runtime import ordered_map

    def work(i: int) -> int:
        if i == 5:
            raise ValueError("item 5")
        return i

    with pytest.raises(ValueError, match="item 5"):
        list(ordered_map(work, range(10), 2))


@pytest.mark.parametrize("cores", [1, 2])
def test_in_background_runs_beside_the_caller_and_passes_its_result_or_error_on(monkeypatch, cores) -> None:
    import threading

    import gpo_vae.runtime as runtime

    monkeypatch.delenv("GPO_VAE_THREADS", raising=False)
    monkeypatch.setattr(runtime, "cpu_cores", lambda: cores)
    release = threading.Event()
    ran_in: list[str] = []

    def work() -> int:
        ran_in.append(threading.current_thread().name)
        if cores > 1:  # runs before the caller asks for it, beside the caller
            assert release.wait(5)
        return 42

    result = runtime.in_background(work)
    release.set()
    assert result() == 42
    assert ran_in == (["in_background"] if cores > 1 else [threading.current_thread().name])

    def fail() -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        runtime.in_background(fail)()


def test_work_threads_are_the_cores_at_most_eight_unless_set(monkeypatch) -> None:
    import threading

    import gpo_vae.runtime as runtime
    from gpo_vae.errors import UserError

    monkeypatch.delenv("GPO_VAE_THREADS", raising=False)
    for cores, expected in [(1, 1), (2, 2), (64, runtime.MAX_WORK_THREADS)]:
        monkeypatch.setattr(runtime, "cpu_cores", lambda cores=cores: cores)
        assert runtime.work_threads() == expected
    monkeypatch.setenv("GPO_VAE_THREADS", "12")
    assert runtime.work_threads() == 12
    monkeypatch.setenv("GPO_VAE_THREADS", "1")  # one thread: the caller's own
    names = list(runtime.ordered_map(lambda _: threading.current_thread().name, range(3)))
    assert names == [threading.current_thread().name] * 3
    for bad in ("0", "four", "-2"):
        monkeypatch.setenv("GPO_VAE_THREADS", bad)
        with pytest.raises(UserError, match=f"GPO_VAE_THREADS='{bad}'"):
            runtime.work_threads()
