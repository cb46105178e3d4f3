"""Where and how computation runs: the torch device a config asks for, and the CPU thread count.

torch is imported inside the functions, so importing this module (the workflow does, through
the tasks) stays light.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["cpu_threads", "resolve_device"]


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
