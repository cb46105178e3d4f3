"""The preprocessing stage's entry points (design §2–§5): raw counts in, one artifact out.

- :func:`preprocess`: a screen's AnnData in memory (what :func:`gpo_vae.pp.prepare` runs);
- :func:`preprocess_files`: a counts file, filtered on disk, preprocessed in memory;
- :func:`build_artifact`: a counts file into an artifact directory, a block of cells at a time
  in every step (what ``main`` runs).

The steps themselves, in order, are :mod:`gpo_vae.preprocessing.steps`; the two file entry
points are :mod:`gpo_vae.preprocessing.from_file`.
"""

from __future__ import annotations

from gpo_vae.preprocessing.config import PreprocessConfig
from gpo_vae.preprocessing.from_file import build_artifact, preprocess_files
from gpo_vae.preprocessing.steps import (
    MissingSummaryStatsError,
    cell_batches,
    filter_screen,
    preprocess,
    preprocess_filtered,
    read_screen_stats,
    stats_from_cells,
)

__all__ = [
    "MissingSummaryStatsError",
    "PreprocessConfig",
    "build_artifact",
    "cell_batches",
    "filter_screen",
    "preprocess",
    "preprocess_files",
    "preprocess_filtered",
    "read_screen_stats",
    "stats_from_cells",
]
