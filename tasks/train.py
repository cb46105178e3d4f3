"""Stage 3, training: one GPO-VAE (or SAMS-VAE) run on a preprocessed artifact → its model.pt.

The run directory is content-addressed (artifact checksum + validated model and training
configs), so a finished run is reused even without redun's database and a killed one resumes.
The task returns ``model.pt`` as a ``File`` rather than the run ``Dir``: it is written once,
just before the run's ``.complete`` marker, so its hash changes exactly when the weights do,
while a ``Dir`` would also hash checkpoints and logs; its parent is the run directory
(``load_trained_model(Path(model.path).parent)``).
"""

import hashlib
import json
from pathlib import Path
from typing import Any

from redun import File, task

redun_namespace = "gpo_vae"


def run_key(artifact_sha256: str, model: dict[str, Any], training: dict[str, Any]) -> str:
    """Content address of a run: the artifact's checksum and the full (validated) configs."""
    parts = {"artifact": artifact_sha256, "model": model, "training": training}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# Resource hints for executors that place tasks (AWS Batch, Kubernetes); the local executor
# ignores them. GPU runs set gpus in a cluster profile (task options can be overridden there).
@task(version="1", cache=True, memory=16, vcpus=2)
def train_run(artifact: File, config: dict[str, Any], out_root: str) -> File:
    """Train (or reuse) the run of ``config`` (``model`` and ``training`` sections) on ``artifact``.

    ``artifact`` is the artifact's ``.h5ad`` (what ``preprocess_dataset`` returns); its
    directory holds the completeness marker whose checksum enters the run's address.
    """
    from gpo_vae.config import from_dict, to_dict
    from gpo_vae.module import ModelConfig
    from gpo_vae.preprocessing.artifact import artifact_checksum
    from gpo_vae.training.config import TrainingConfig
    from gpo_vae.training.train import MODEL_FILE, train_model

    unknown = sorted(set(config) - {"model", "training"})
    if unknown:
        raise ValueError(f"train_run takes the model and training sections only, not {unknown}")
    artifact_dir = Path(artifact.path).parent
    model = from_dict(ModelConfig, config.get("model", {}), "model")
    training = from_dict(TrainingConfig, config.get("training", {}), "training")
    key = run_key(artifact_checksum(artifact_dir), to_dict(model), to_dict(training))
    run_dir = train_model(
        artifact_dir, model, training, Path(out_root) / key, progress=False, progress_line=True
    )
    return File(str(run_dir / MODEL_FILE))
