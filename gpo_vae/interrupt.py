"""One Ctrl-C stops a run at its next safe point, and says how to resume.

A process-wide :data:`STOP` event: the workflow's scheduler sets it on the first SIGINT (tasks
run in its threads), and :func:`sigint_requests_stop` sets it in a process whose main thread
runs a task itself (redun's process executor, or a notebook). Long stages check it where
stopping loses nothing: training before every batch (the last completed epoch's
``last.ckpt`` is kept and a rerun resumes from it), preprocessing and evaluation between their
sub-stages (they write nothing until they finish). A second Ctrl-C gets Python's default
behaviour back.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from gpo_vae.errors import UserError

STOP = threading.Event()


class RunInterrupted(UserError):
    """The user stopped the run; the message says what was kept and how to resume."""


def request_stop() -> None:
    """Ask every stage of this process to stop at its next safe point."""
    STOP.set()


def stop_requested() -> bool:
    return STOP.is_set()


def check_stop(what: str) -> None:
    """Raise :class:`RunInterrupted` when a stop was requested (``what`` says what stopped)."""
    if STOP.is_set():
        raise RunInterrupted(
            f"{what} stopped by Ctrl-C; nothing half-written was kept. Run the same command again."
        )


@contextlib.contextmanager
def sigint_requests_stop(message: str | None = None) -> Iterator[None]:
    """In the main thread: the first SIGINT sets :data:`STOP` (printing ``message``) instead of
    raising KeyboardInterrupt; the second restores the previous handler and raises. The block
    owns :data:`STOP` then (cleared on entry and exit, so a notebook can train again). Elsewhere
    (a worker thread cannot take signals; the scheduler owns the flag) the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    STOP.clear()

    def handler(signum: int, frame: Any) -> None:
        if STOP.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        STOP.set()
        if message:
            print(f"\n{message}", flush=True)  # after a progress bar's line

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        STOP.clear()
