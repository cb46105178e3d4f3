"""Moved to :mod:`gpo_vae.report.headline` (the console headline lives beside the report whose
names and wording it uses); importing from here still works, with a warning, for one release."""

from __future__ import annotations

import importlib
import warnings


def __getattr__(name: str) -> object:
    headline = importlib.import_module("gpo_vae.report.headline")
    if name in headline.__all__:
        warnings.warn(
            f"gpo_vae.evaluation.headline.{name} moved to gpo_vae.report.headline.{name}; import it "
            "from there (the old module goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(headline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
