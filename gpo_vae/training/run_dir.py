"""A training run's directory: its files, its event log, and loading a finished run back.

See :mod:`gpo_vae.training.train` for the layout; this module reads what that one writes.
"""

from __future__ import annotations

import json
import os
import socket
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from gpo_vae.config import from_dict
from gpo_vae.errors import DamagedFileError, InputFileError
from gpo_vae.io import read_json, write_json_atomic
from gpo_vae.module import GPOVAE, ModelConfig

CONFIG_FILE = "config.json"
EVENTS_FILE = "events.jsonl"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best.ckpt"
LAST_CHECKPOINT = "last.ckpt"
FIT_FILE = "fit.json"
MODEL_FILE = "model.pt"
RUN_FILE = "run.json"
COMPLETE_MARKER = ".complete"
#: config.json entries that must match for a run directory to be resumed.
IDENTITY_KEYS = ("model", "training", "artifact_sha256")


def require_run_folder(run_dir: Path) -> None:
    """A run directory must be a folder (or not exist yet): a file there is named, not mkdir'd into."""
    if run_dir.exists() and not run_dir.is_dir():
        raise InputFileError(f"run_dir {run_dir}: a file, not a folder; give a folder for the run")


def check_or_write_config(run_dir: Path, config: dict[str, Any]) -> None:
    path = run_dir / CONFIG_FILE
    if path.exists():
        existing = read_json(path, f"delete the run directory {run_dir} and run again")
        differ = [key for key in IDENTITY_KEYS if existing.get(key) != config[key]]
        if differ:
            raise ValueError(
                f"{run_dir} holds another run ({CONFIG_FILE} differs in {', '.join(differ)}); "
                "use a new run directory"
            )
        return
    write_json_atomic(config, path)


def record_event(run_dir: Path, event: str, **fields: Any) -> None:
    """Append one line to the run's ``events.jsonl``: what happened, when, where."""
    line = {"event": event, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid(), **fields}
    with open(run_dir / EVENTS_FILE, "a") as handle:
        handle.write(json.dumps(line) + "\n")


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's events, oldest first (empty when there are none)."""
    path = Path(run_dir) / EVENTS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def resumable_epoch(run_dir: Path) -> int | None:
    """The epoch of the run's ``last.ckpt``, or None when there is none to resume from.

    Lightning writes a checkpoint in place, so a kill during that write can leave it truncated:
    such a file is moved aside (``last.ckpt.unreadable``, recorded in the events) and the run
    starts again from scratch rather than failing on every retry.
    """
    path = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    if not path.exists():
        return None
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception as err:  # any unreadable file: pickle, zip or key errors
        os.replace(path, path.with_name(LAST_CHECKPOINT + ".unreadable"))
        record_event(run_dir, "unreadable_checkpoint", error=f"{type(err).__name__}: {err}"[:300])
        return None


def _load_model_file(run_dir: Path) -> dict[str, Any]:
    """The payload of ``model.pt``; a damaged file is a :class:`DamagedFileError` saying what to do."""
    path = run_dir / MODEL_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DamagedFileError(
            f"{path}: missing from a finished run; delete the run directory {run_dir} and run again to retrain it."
        ) from None
    except Exception as err:  # truncated zip, pickle or key errors
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DamagedFileError(
            f"{path}: unreadable ({first}); the file is damaged (truncated?). Delete the run directory "
            f"{run_dir} and run again to retrain it."
        ) from None


def check_model_file(run_dir: Path) -> None:
    """Every member of a finished run's ``model.pt`` (a zip) reads back with its checksum."""
    path = run_dir / MODEL_FILE
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as err:
        bad = str(err)
    if bad is not None:
        raise DamagedFileError(
            f"{path}: damaged ({bad}); delete the run directory {run_dir} and run again to retrain it."
        )


def load_trained_model(run_dir: str | Path, device: str = "cpu") -> tuple[GPOVAE, dict[str, Any]]:
    """The best-val module of a finished run, in eval mode, and what describes it.

    Returns
    -------
    model
        :class:`~gpo_vae.module.GPOVAE` on ``device`` (``mask_probabilities``; :mod:`gpo_vae.module.generate`
        draws cells from it; :class:`gpo_vae.GPOVAEModel` wraps both).
    info
        ``node_names``, ``gene_names``, ``n_perturbed``, ``model_config`` and ``training_config``
        (dicts), ``best_epoch``, ``best_val_loss``, ``artifact_sha256`` and ``run`` (run.json).
    """
    run_dir = Path(run_dir)
    where = "a run directory: <results>/<dataset>/runs/<key>, or the folder GPOVAEModel.train wrote"
    if not run_dir.exists():
        raise InputFileError(f"{run_dir}: no such folder; give {where}")
    if not run_dir.is_dir():
        raise InputFileError(f"{run_dir}: a file, not a folder; give {where}")
    if not (run_dir / COMPLETE_MARKER).exists():
        raise InputFileError(
            f"{run_dir}: not a finished training run (no {COMPLETE_MARKER}: its training stopped or is "
            "still running); run the same main command (or GPOVAEModel.train) again to finish it"
        )
    payload = _load_model_file(run_dir)
    retrain = f"delete the run directory {run_dir} and run main (or GPOVAEModel.train) again to retrain it"
    try:
        model = GPOVAE(
            payload["n_genes"],
            payload["n_nodes"],
            payload["n_perturbed"],
            payload["node_cell_counts"],
            float(payload["qc_count"]),
            payload["mean_log"],
            payload["std_log"],
            from_dict(ModelConfig, payload["model_config"], "model"),
            node_measured=payload.get("node_measured"),
            n_batches=len(payload.get("batch_names", [])),
        )
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # ConfigError is a ValueError
        first = (str(err).splitlines() or [type(err).__name__])[0]
        if "state_dict" in first and isinstance(err, RuntimeError):
            first = "; ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise DamagedFileError(
            f"{run_dir / MODEL_FILE}: does not match this version's model ({first[:200]}): it was written by "
            f"another gpo-vae version, or changed; {retrain}."
        ) from None
    broken = [
        name
        for name, value in model.state_dict().items()
        if value.is_floating_point() and not value.isfinite().all()
    ]
    if broken:
        raise DamagedFileError(
            f"{run_dir / MODEL_FILE}: {len(broken)} weight tensors hold NaN or infinite values (e.g. {broken[0]}): "
            f"the training diverged or the file was changed, so nothing it predicts means anything; {retrain} "
            "(a lower training.lr steadies a diverging run)."
        )
    model.to(device).eval()
    info = {
        key: payload[key]
        for key in (
            "node_names",
            "gene_names",
            "n_perturbed",
            "model_config",
            "training_config",
            "best_epoch",
            "best_val_loss",
            "artifact_sha256",
        )
    }
    info["batch_names"] = list(payload.get("batch_names", []))
    info["run"] = read_json(
        run_dir / RUN_FILE, f"delete the run directory {run_dir} and run again to retrain it"
    )
    return model, info
