"""GPO-VAE: explainable perturbation-response modelling with a GRN-aligned latent mask.

From Python: ``gpo_vae.pp.prepare(adata)`` preprocesses a screen, ``gpo_vae.GPOVAEModel``
trains, loads and queries a model (both load on first use: ``import gpo_vae`` stays light).
"""

import importlib
import importlib.util
import os
import tempfile
from pathlib import Path

from gpo_vae.version import __version__


def _numba_cache_for_shared_installs() -> None:
    """scanpy caches numba-compiled functions beside its sources; in an environment another user
    installed (a lab's shared venv) that folder is read-only and the first scanpy call fails.
    Point numba at the user's own cache then (``$NUMBA_CACHE_DIR`` set by the user wins)."""
    if "NUMBA_CACHE_DIR" in os.environ:
        return
    spec = importlib.util.find_spec("scanpy")
    if spec is None or spec.origin is None or os.access(Path(spec.origin).parent, os.W_OK):
        return
    for folder in (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpo_vae" / "numba",
        Path(tempfile.gettempdir()) / f"gpo_vae-numba-{os.getuid()}",  # a user without a home
    ):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            os.environ["NUMBA_CACHE_DIR"] = str(folder)
            return


def _short_openmp_spin() -> None:
    """Idle OpenMP threads spin briefly, then sleep (``GOMP_SPINCOUNT=3000``; a wait policy or spin
    count the user set wins). torch's CPU threads otherwise spin for long between parallel regions:
    with other processes on the same cores they burn the cores the working threads need, and a
    training step ran 3.4–13× slower beside two busy processes; with the short spin 2.3×, at
    9–16 % of the quiet speed of the laptop-sized model and none at RPE1 shape
    (``benchmarks/threads.py``, docs). It takes effect when torch is imported after gpo_vae (the
    workflow, the tutorial) and changes no number: the thread count stays as it was."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "3000")


_numba_cache_for_shared_installs()
_short_openmp_spin()


def __getattr__(name: str) -> object:  # PEP 562: the heavy parts load on first use
    if name == "GPOVAEModel":
        return importlib.import_module("gpo_vae.model").GPOVAEModel
    if name == "pp":
        return importlib.import_module("gpo_vae.pp")
    raise AttributeError(f"module 'gpo_vae' has no attribute {name!r}")


__all__ = ["GPOVAEModel", "__version__", "pp"]
