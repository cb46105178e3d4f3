"""Peak resident memory of the calling process, its own."""

from __future__ import annotations

import resource
from pathlib import Path

_STATUS = Path("/proc/self/status")


def peak_rss_gb() -> float:
    """This process's peak resident memory in GiB.

    Linux's ``VmHWM`` where there is one: ``ru_maxrss`` of a process started by ``spawn`` (a
    worker of a process pool, a benchmark's stage in a process of its own) carries its parent's
    resident memory at the fork (a worker of a 1.5 GB parent read 1.48 GB before doing anything;
    its VmHWM 0.016 GB). Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**3 if peak > 1 << 40 else peak / 1024**2
