"""Where and how computation runs: the torch device a config asks for, the CPU thread count, and
memory handed back to the operating system between stages.

torch is imported inside the functions, so importing this module (the workflow does, through
the tasks) stays light.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = [
    "cpu_cores",
    "cpu_threads",
    "in_background",
    "ordered_map",
    "release_freed_memory",
    "resolve_device",
    "work_threads",
]

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def resolve_device(device: str) -> str:
    """``cpu`` or ``cuda`` for a config's ``auto`` / ``cpu`` / ``cuda`` (an error if CUDA is missing)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    return device


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` torch CPU threads inside the block (None: leave as is), then restore."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_cores() -> int:
    """The cores this process may run on: its affinity mask (which ``taskset`` and container CPU
    sets narrow) where the OS has one, else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


#: Threads a stage's CPU work runs on at most, however many cores there are: each thread holds
#: its own batch (the counterfactual medians about 100 MB a thread), and redun may run several
#: stages at once in one process. ``$GPO_VAE_THREADS`` sets another number.
MAX_WORK_THREADS = 8


def work_threads() -> int:
    """Threads for a stage's CPU work (:func:`ordered_map`): ``$GPO_VAE_THREADS`` when set, else
    the cores (:func:`cpu_cores`), at most :data:`MAX_WORK_THREADS`."""
    value = os.environ.get("GPO_VAE_THREADS", "").strip()
    if not value:
        return min(cpu_cores(), MAX_WORK_THREADS)
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        from gpo_vae.errors import UserError

        raise UserError(
            f"GPO_VAE_THREADS={value!r}: give a whole number of threads ≥ 1 (e.g. GPO_VAE_THREADS=4), "
            f"or unset it to use the cores, at most {MAX_WORK_THREADS}"
        )
    return threads


def in_background(function: Callable[[], _Result]) -> Callable[[], _Result]:
    """Start ``function()`` on another core now; the returned callable waits for its result (or
    raises its error). For work that releases the GIL (hashing a file) beside work that holds one
    core. The thread is a daemon, so an error elsewhere does not wait for it to finish; with one
    work thread (one core, or ``GPO_VAE_THREADS=1``) ``function`` runs when its result is asked for.
    """
    if work_threads() <= 1:
        return function
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, function()))
        except BaseException as err:  # handed to the caller, who decides
            outcome.append((False, err))

    thread = threading.Thread(target=run, name="in_background", daemon=True)
    thread.start()

    def result() -> _Result:
        thread.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    return result


def ordered_map(
    function: Callable[[_Item], _Result], items: Iterable[_Item], threads: int | None = None
) -> Iterator[_Result]:
    """``map(function, items)`` on ``threads`` threads (None: :func:`work_threads`), in order.

    For work that releases the GIL (numpy sorts, scipy's sparse kernels, annoy's queries). At most
    two results per thread are computed ahead of the one consumed, so memory stays that of a few
    items however many there are (``ThreadPoolExecutor.map`` submits them all at once).
    """
    threads = work_threads() if threads is None else threads
    if threads <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@functools.cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_freed_memory() -> bool:
    """Hand the heap memory this process freed back to the operating system (glibc's
    ``malloc_trim``); True when it could. Elsewhere a no-op (False).

    glibc raises its mmap threshold after large frees, so the many mid-sized arrays a stage
    allocates and frees stay in the heap, counted in the process's resident memory, until
    trimmed: after the filters of a 242,000-cell screen 0.6 GB of it. Trimming between stages
    makes each stage's peak its own.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
