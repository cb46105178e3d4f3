"""Which backend a preprocessing step runs on: rapids-singlecell on a CUDA device, or the CPU.

rapids-singlecell and cupy (the ``gpu`` extra) are imported only to check that they work.
"""

from __future__ import annotations

from typing import Literal

from gpo_vae.preprocessing.config import Backend


def rapids_available() -> bool:
    """Whether rapids-singlecell and cupy import and a CUDA device is visible."""
    try:
        import cupy
        import rapids_singlecell  # noqa: F401
    except Exception:  # ImportError, or CUDA libraries failing at import time
        return False
    try:
        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


def resolve_backend(backend: Backend) -> Literal["cpu", "rapids"]:
    """``"auto"`` → ``"rapids"`` only when :func:`rapids_available`, else ``"cpu"``; others forced."""
    if backend == "cpu":
        return "cpu"
    if backend == "rapids":
        if not rapids_available():
            raise RuntimeError(
                "backend='rapids' needs rapids-singlecell, cupy and a CUDA device: install the `gpu` "
                "extra (pip install 'gpo-vae[gpu]') on a machine with an NVIDIA GPU, or use backend='cpu'."
            )
        return "rapids"
    if backend == "auto":
        return "rapids" if rapids_available() else "cpu"
    raise ValueError(f"backend must be 'auto', 'cpu' or 'rapids', got {backend!r}")
