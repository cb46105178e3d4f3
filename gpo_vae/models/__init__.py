"""Moved to :mod:`gpo_vae.module` (the torch modules; :mod:`gpo_vae.model` is the Python API);
this name goes in the next release. ``gpo_vae.models.<name>`` is ``gpo_vae.module.<name>``."""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any

warnings.warn(
    "gpo_vae.models moved to gpo_vae.module; the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)

# the old submodule paths name the new modules themselves (one class, not two copies)
for _name in ("config", "decoder", "distributions", "generate", "grn_loss", "guide", "layers", "module"):
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(f"gpo_vae.module.{_name}")


def __getattr__(name: str) -> Any:
    return getattr(importlib.import_module("gpo_vae.module"), name)
