"""Moved to :mod:`gpo_vae.module.grn_loss` (the GRN terms of the loss); this name goes in the next
release. "grn" alone now means the graph statistics (:mod:`gpo_vae.grn`)."""

from __future__ import annotations

import warnings

from gpo_vae.module.grn_loss import (  # noqa: F401  (re-exported for one release)
    MIN_MAX_EPS,
    grn_accumulation,
    grn_alignment_loss,
    khop_accumulation,
    min_max_columns,
    sparsity_penalty,
)

warnings.warn(
    "gpo_vae.models.grn moved to gpo_vae.module.grn_loss; the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
