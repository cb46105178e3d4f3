"""GPO-VAE: explainable perturbation-response modelling with a GRN-aligned latent mask."""

import importlib.util
import os
import tempfile
from pathlib import Path

__version__ = "0.1.0"


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


_numba_cache_for_shared_installs()
