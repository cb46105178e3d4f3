"""A run directory that cannot serve: named with what to do, never a traceback or a silent NaN."""

from __future__ import annotations

import shutil
from pathlib import Path

import anndata as ad
import pytest
import torch

from gpo_vae.errors import DamagedFileError, InputFileError
from gpo_vae.io import INSIDE_LOCK
from gpo_vae.training.run_dir import MODEL_FILE, load_trained_model
from gpo_vae.training.train import train_model
from tests.training.conftest import TINY_MODEL, TINY_TRAINING


@pytest.fixture(scope="module")
def run(artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_model(
        artifact_dir, TINY_MODEL, TINY_TRAINING, tmp_path_factory.mktemp("runs") / "r1", progress=False
    )


def _copy_with(run: Path, where: Path, change) -> Path:
    copy = where / "copy"
    shutil.copytree(run, copy)
    payload = torch.load(copy / MODEL_FILE, weights_only=True)
    change(payload["state_dict"])
    torch.save(payload, copy / MODEL_FILE)
    return copy


def test_non_finite_weights_are_named_instead_of_predicting_nan(run: Path, tmp_path: Path):
    def poison(state):
        name = next(k for k, v in state.items() if v.is_floating_point())
        state[name] = state[name] * float("nan")

    copy = _copy_with(run, tmp_path, poison)
    with pytest.raises(DamagedFileError, match=r"model\.pt: 1 weight tensors hold NaN or infinite values"):
        load_trained_model(copy)
    from gpo_vae import GPOVAEModel

    with pytest.raises(DamagedFileError, match=r"a lower training\.lr"):
        GPOVAEModel.load(copy)


def test_a_model_file_of_another_version_is_named_with_the_fix(run: Path, tmp_path: Path):
    copy = _copy_with(run, tmp_path, lambda state: state.pop(next(iter(state))))
    with pytest.raises(DamagedFileError, match=r"does not match this version's model \(Missing key"):
        load_trained_model(copy)


def test_the_run_lock_lives_inside_the_run_and_a_file_is_no_run_dir(
    run: Path, artifact_dir: Path, tmp_path: Path
):
    assert (run / INSIDE_LOCK).is_file()
    assert not [p.name for p in run.parent.iterdir() if p.name.endswith(".lock")]
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    with pytest.raises(InputFileError, match=r"run_dir .*not_a_folder: a file, not a folder"):
        train_model(artifact_dir, TINY_MODEL, TINY_TRAINING, a_file, progress=False)


def test_a_backed_anndata_is_prepared_like_one_in_memory(synthetic_dataset: dict[str, Path]):
    from gpo_vae import pp
    from gpo_vae.preprocessing.config import PreprocessConfig, QCConfig

    config = PreprocessConfig(qc=QCConfig(doublets=False))
    backed = pp.prepare(ad.read_h5ad(synthetic_dataset["counts"], backed="r"), config)
    memory = pp.prepare(ad.read_h5ad(synthetic_dataset["counts"]), config)
    assert backed.obs_names.equals(memory.obs_names)
    assert (backed.obs["split"] == memory.obs["split"]).all() and (backed.X != memory.X).nnz == 0
