"""The configuration of one run: a section per stage, loaded from one YAML file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpo_vae.config import load_config
from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.module.config import ModelConfig
from gpo_vae.preprocessing.config import PreprocessConfig
from gpo_vae.training.config import TrainingConfig


@dataclass(frozen=True)
class RunConfig:
    """Sections: ``preprocess`` (design §2–§5), ``model`` and ``training`` (design §6),
    ``evaluation`` (design §7–§8)."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)


def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a run config YAML (unknown keys and bad values name the key)."""
    return load_config(RunConfig, path, overrides)
