"""The redun training task: content-addressed run directories, reused without redun's database."""

from __future__ import annotations

from pathlib import Path

import pytest
from redun import File

from gpo_vae.config import to_dict
from gpo_vae.io import INSIDE_LOCK
from gpo_vae.preprocessing.artifact import ARTIFACT_FILE, MARKER_FILE
from tasks.train import run_key, train_run
from tests.training.conftest import TINY_MODEL, TINY_TRAINING


def test_run_key_depends_on_artifact_and_every_setting():
    model, training = to_dict(TINY_MODEL), to_dict(TINY_TRAINING)
    key = run_key("abc", model, training)
    assert key == run_key("abc", dict(reversed(model.items())), training)  # order-free
    assert key != run_key("abd", model, training)
    assert key != run_key("abc", {**model, "hop": 4}, training)
    assert key != run_key("abc", model, {**training, "seed": 1})


def test_train_run_trains_once_and_reuses_the_run(artifact_dir, tmp_path):
    artifact = File(str(artifact_dir / ARTIFACT_FILE))
    config = {"model": to_dict(TINY_MODEL), "training": to_dict(TINY_TRAINING.replace(max_epochs=1))}
    model_file = train_run.func(artifact, config, str(tmp_path))
    path = Path(model_file.path)
    sha = (artifact_dir / MARKER_FILE).read_text().strip()
    assert path.name == "model.pt" and path.parent == tmp_path / run_key(
        sha, config["model"], config["training"]
    )
    assert (path.parent / ".complete").exists()
    written = path.stat().st_mtime_ns

    # the same settings spelled with defaults omitted address the same, finished run
    sparse = {
        "model": {k: v for k, v in config["model"].items() if v != to_dict(type(TINY_MODEL)())[k]},
        "training": {"max_epochs": 1, "batch_size": 256, "early_stopping_patience": 50, "cpu_threads": 1},
    }
    assert Path(train_run.func(artifact, sparse, str(tmp_path)).path) == path
    assert path.stat().st_mtime_ns == written
    # the run's lock lives inside it: nothing else beside the run
    assert [p.name for p in tmp_path.iterdir()] == [path.parent.name]
    assert (path.parent / INSIDE_LOCK).is_file()


def test_train_run_rejects_other_sections(artifact_dir, tmp_path):
    with pytest.raises(ValueError, match="model and training sections only"):
        train_run.func(File(str(artifact_dir / ARTIFACT_FILE)), {"preprocess": {}}, str(tmp_path))
