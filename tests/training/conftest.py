"""One preprocessed synthetic artifact per test session, and a tiny model for fast training."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpo_vae.data.synthetic import SyntheticConfig, write_synthetic_dataset
from gpo_vae.module import ModelConfig
from gpo_vae.preprocessing.artifact import write_artifact
from gpo_vae.preprocessing.config import PreprocessConfig, QCConfig
from gpo_vae.preprocessing.from_file import preprocess_files
from gpo_vae.training.config import TrainingConfig

#: Small enough for seconds per run on 2 shared cores, big enough to learn the mask.
TINY_MODEL = ModelConfig(
    n_latent=8,
    decoder_n_hidden=32,
    basal_encoder_n_hidden=32,
    embedding_encoder_n_layers=1,
    embedding_encoder_n_hidden=32,
    n_particles=2,
)
#: One thread: on the shared test machine two contended threads are far slower than one.
TINY_TRAINING = TrainingConfig(max_epochs=4, batch_size=256, early_stopping_patience=50, cpu_threads=1)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The default simulated screen's files (counts, summary statistics, true network …)."""
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("training") / "data", SyntheticConfig.preset("default")
    )


@pytest.fixture(scope="session")
def artifact_dir(synthetic_dataset: dict[str, Path]) -> Path:
    """The preprocessed artifact of the default screen (doublet detection off, for speed)."""
    adata = preprocess_files(
        synthetic_dataset["counts"],
        synthetic_dataset["summary_stats"],
        "TabS_synthetic_summary_stat",
        PreprocessConfig(qc=QCConfig(doublets=False)),
        progress=False,
    )
    return write_artifact(adata, synthetic_dataset["counts"].parent.parent / "artifact")
