"""What ``import gpo_vae`` sets up for the process (gpo_vae/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys

PRINT = "import os, gpo_vae; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"


def _imported(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    return subprocess.run(
        [sys.executable, "-c", PRINT], env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_openmp_threads_spin_briefly_unless_the_user_chose():
    """Long-spinning OpenMP threads collapse training when other processes share the cores
    (benchmarks/threads.py); the user's own wait policy or spin count is kept."""
    assert _imported() == "3000 None"
    assert _imported(GOMP_SPINCOUNT="50") == "50 None"
    assert _imported(OMP_WAIT_POLICY="ACTIVE") == "None ACTIVE"
