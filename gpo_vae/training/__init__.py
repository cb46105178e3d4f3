"""Training: Lightning plan and data module over the sparse artifact, resumable runs (design §6).

Only the config is imported eagerly: the run config (and so the workflow) reads it without
paying for Lightning's import; the rest loads on first use.
"""

from __future__ import annotations

from gpo_vae._lazy import lazy_attributes
from gpo_vae.training.config import TrainingConfig

_LAZY = {
    "ArtifactCells": "gpo_vae.training.data",
    "CellBatchSampler": "gpo_vae.training.data",
    "CellDataModule": "gpo_vae.training.data",
    "TrainingStatistics": "gpo_vae.training.data",
    "training_statistics": "gpo_vae.training.data",
    "GPOVAETrainingPlan": "gpo_vae.training.lightning",
    "load_trained_model": "gpo_vae.training.train",
    "train_model": "gpo_vae.training.train",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = ["TrainingConfig", *_LAZY]
