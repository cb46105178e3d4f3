"""Where the tests find the real public reference files (``../shared/data``), and skipping without them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("GPO_VAE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)


def shared_file(relative: str) -> Path:
    """``SHARED_DATA / relative``, or skip the calling test with the reason when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"reference data {path} absent (point GPO_VAE_SHARED_DATA at the shared/data folder)")
    return path
