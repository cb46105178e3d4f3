"""Train a GPO-VAE on a preprocessed artifact into a run directory, resumably; load it back.

A run directory holds::

    config.json            model + training config, artifact checksum, seed (written first)
    checkpoints/best.ckpt  best val/loss so far (Lightning checkpoint, RNG states included)
    checkpoints/last.ckpt  end of the latest epoch: what a killed run resumes from
    checkpoints/fit.json   written when fitting ended (epochs, timing, device)
    logs/version_<n>/      CSV logs, one version per session (metrics.csv, hparams.yaml)
    wandb/                 only with training.wandb
    model.pt               best-val weights + all that rebuilds the module (load_trained_model)
    run.json               provenance, epochs, best epoch and val loss, seconds, device
    .complete              written last: the run is finished and is never trained again
    events.jsonl           one line per call: fit (from scratch or resumed at an epoch),
                           complete, reused; with time, host and pid

Concurrent calls on one run directory take turns (:func:`gpo_vae.io.exclusive_lock`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger

from gpo_vae import runtime
from gpo_vae.config import to_dict
from gpo_vae.grn.effects import effect_prior_logits, effect_statistic, prior_logit, training_effect_zscores
from gpo_vae.interrupt import RunInterrupted, sigint_requests_stop
from gpo_vae.io import (
    exclusive_lock,
    provenance,
    recorded_path,
    temp_sibling,
    write_json_atomic,
    write_text_atomic,
)
from gpo_vae.module import GPOVAE, ModelConfig
from gpo_vae.preprocessing import artifact
from gpo_vae.preprocessing.artifact import dataset_checksum
from gpo_vae.training.callbacks import EpochProgress, StopOnRequest
from gpo_vae.training.config import TrainingConfig, patience_epochs
from gpo_vae.training.data import ArtifactCells, CellDataModule, CountsPlace, TrainingStatistics, counts_place
from gpo_vae.training.lightning import GPOVAETrainingPlan
from gpo_vae.training.run_dir import (
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    COMPLETE_MARKER,
    CONFIG_FILE,
    EVENTS_FILE,
    FIT_FILE,
    IDENTITY_KEYS,
    LAST_CHECKPOINT,
    MODEL_FILE,
    RUN_FILE,
    check_model_file,
    check_or_write_config,
    load_trained_model,
    read_events,
    record_event,
    require_run_folder,
    resumable_epoch,
)
from gpo_vae.wandb_logging import require_wandb

WANDB_REASON = "training.wandb is true"

PRECISION = {"32": "32-true", "bf16-mixed": "bf16-mixed"}


def build_model(model_config: ModelConfig, cells: ArtifactCells, statistics: TrainingStatistics) -> GPOVAE:
    """A freshly initialised module shaped for ``cells``, weighted by the training statistics.

    A config that asks for effect statistics (``mask_init`` or ``grn_target`` ``effects``) gets
    them from the training cells alone.
    """
    effect_logits = None
    if model_config.needs_effects:
        zscores = training_effect_zscores(cells)
        effect_logits = torch.as_tensor(
            effect_prior_logits(
                effect_statistic(zscores, model_config.effect_statistic),
                cells.n_perturbed,
                model_config.mask_init_density,
                prior_logit(model_config.mask_prior),
            ),
            dtype=torch.float32,
        )
    return GPOVAE(
        cells.n_genes,
        cells.n_nodes,
        cells.n_perturbed,
        torch.as_tensor(statistics.node_cell_counts, dtype=torch.float32),
        float(statistics.qc_count),
        torch.as_tensor(statistics.mean_log, dtype=torch.float32),
        torch.as_tensor(statistics.std_log, dtype=torch.float32),
        model_config,
        node_measured=torch.as_tensor(cells.node_measured),
        n_batches=cells.n_batches,
        effect_logits=effect_logits,
    )


def _wandb_logger(training: TrainingConfig, run_dir: Path) -> Logger:
    require_wandb(WANDB_REASON)
    from pytorch_lightning.loggers import WandbLogger

    return WandbLogger(
        project=training.wandb_project,
        name=run_dir.name,
        save_dir=str(run_dir),
        mode=os.environ.get("WANDB_MODE", "offline"),
    )


@contextlib.contextmanager
def _torch_globals_restored(threads: int | None) -> Iterator[None]:
    """Set the CPU thread count for training; afterwards restore it and the deterministic-algorithms
    flag, which the Trainer switches process-wide."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        with runtime.cpu_threads(threads):
            yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@contextlib.contextmanager
def _lightning_info_shown(shown: bool) -> Iterator[None]:
    """Hide Lightning's info lines (devices, tips, restore messages) when not ``shown``."""
    logger = logging.getLogger("pytorch_lightning")
    level = logger.level
    if not shown:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _fit(
    cells: ArtifactCells,
    model_config: ModelConfig,
    training: TrainingConfig,
    run_dir: Path,
    progress: bool,
    callbacks: Sequence[Callback],
    progress_line: bool = False,
) -> dict[str, Any]:
    """Run (or resume) trainer.fit; return what run.json reports about it."""
    device = runtime.resolve_device(training.device)
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    last = checkpoint_dir / LAST_CHECKPOINT
    resume = last.exists()
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="logs")]
    if training.wandb:
        loggers.append(_wandb_logger(training, run_dir))
    with (
        _torch_globals_restored(training.cpu_threads),
        _lightning_info_shown(progress),
        warnings.catch_warnings(),
    ):
        # batches are built in-process by one sparse slice; extra workers are a choice, not a fix
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")  # resume
        # Lightning 2.6 calls a torch.utils._pytree API that torch 2.13 deprecates: not ours to fix
        warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*", FutureWarning)
        pl.seed_everything(training.seed, workers=True, verbose=False)
        datamodule = CellDataModule(
            cells,
            training.batch_size,
            training.eval_batch_size,
            training.seed,
            training.num_workers,
            pin_memory=device == "cuda",
        )
        plan = GPOVAETrainingPlan(build_model(model_config, cells, datamodule.statistics()), training)
        best = ModelCheckpoint(
            dirpath=checkpoint_dir,
            filename=Path(BEST_CHECKPOINT).stem,
            monitor="val/loss",
            mode="min",
            save_top_k=1,
            save_last=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
            # Saved (and, below, judged) when validation ends, not at the train-epoch end that a
            # resumed run replays without a validation pass: a run stopped between the two resumes.
            save_on_train_epoch_end=False,
        )
        early = EarlyStopping(
            monitor="val/loss",
            mode="min",
            patience=patience_epochs(training, -(-cells.rows("train").size // training.batch_size)),
            check_on_train_epoch_end=False,
        )
        extra: list[Callback] = [StopOnRequest()]
        if progress_line and not progress:
            extra.append(EpochProgress(f"training {run_dir.name}", training.max_epochs))
        trainer = pl.Trainer(
            accelerator="gpu" if device == "cuda" else "cpu",
            devices=1,
            precision=PRECISION[training.precision],  # type: ignore[arg-type]
            max_epochs=training.max_epochs,
            max_steps=training.max_steps if training.max_steps is not None else -1,
            max_time=timedelta(minutes=training.max_time_minutes) if training.max_time_minutes else None,
            gradient_clip_val=training.gradient_clip,
            gradient_clip_algorithm="norm",
            callbacks=[early, best, *extra, *callbacks],
            logger=loggers,
            log_every_n_steps=training.log_every_n_steps,
            num_sanity_val_steps=0,  # a sanity pass would draw particles the resumed run does not
            deterministic="warn",  # deterministic kernels where torch has them, warn elsewhere
            use_distributed_sampler=False,  # the sampler already fixes the order
            enable_progress_bar=progress,
            enable_model_summary=progress,
            default_root_dir=str(run_dir),
        )
        for logger in loggers:
            logger.log_hyperparams(json.loads((run_dir / CONFIG_FILE).read_text()))
        trainer.fit(plan, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    if not best.best_model_path:
        raise RuntimeError(f"{run_dir}: training ended before any validation; no best checkpoint")
    best_epoch = int(torch.load(best.best_model_path, map_location="cpu", weights_only=True)["epoch"])
    return {
        "epochs": trainer.current_epoch,
        "steps": int(trainer.global_step),
        "best_epoch": best_epoch,
        "best_val_loss": float(best.best_model_score),
        "stopped_early": early.stopped_epoch > 0,
        "training_seconds": plan.training_seconds(),
        "resumed": resume,
        "device": device if device == "cpu" else f"cuda ({torch.cuda.get_device_name()})",
        "precision": training.precision,
    }


def _save_model(run_dir: Path, payload: dict[str, Any]) -> None:
    """model.pt from the best checkpoint's weights, written through a temporary file."""
    checkpoint = torch.load(run_dir / CHECKPOINT_DIR / BEST_CHECKPOINT, map_location="cpu", weights_only=True)
    prefix = "model."
    payload["state_dict"] = {
        key[len(prefix) :]: value for key, value in checkpoint["state_dict"].items() if key.startswith(prefix)
    }
    tmp = temp_sibling(run_dir / MODEL_FILE, is_dir=False, suffix=".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, run_dir / MODEL_FILE)
    finally:
        tmp.unlink(missing_ok=True)


def train_model(
    artifact_dir: str | Path,
    model_config: ModelConfig,
    training_config: TrainingConfig,
    run_dir: str | Path,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    progress_line: bool = False,
    counts: CountsPlace = "auto",
) -> Path:
    """Train on a preprocessed artifact into ``run_dir`` (layout in the module docstring).

    A finished run (``.complete`` present) of the same configs and artifact is returned as is
    (another one is an error); a run directory with
    ``checkpoints/last.ckpt`` but no marker (killed) resumes from it and ends with the same
    weights as an uninterrupted run. Device and precision come from ``training_config``.

    Parameters
    ----------
    artifact_dir
        A complete artifact directory (:func:`gpo_vae.preprocessing.artifact.write_artifact`).
    model_config, training_config
        The module's and the optimisation's hyperparameters.
    run_dir
        Where the run lives; an existing one must hold the same configs and artifact.
    progress
        Show Lightning's progress bar, model summary and info lines.
    callbacks
        Extra Lightning callbacks (monitoring, or a test's simulated interruption).
    progress_line
        Without ``progress``: one line on standard error (epochs, steps, validation loss).
    counts
        Where the count matrix is read from (:meth:`~gpo_vae.training.data.ArtifactCells.read`):
        ``auto`` keeps it in memory while it takes at most a quarter of the memory available,
        else each batch reads its cells from the artifact; the run is the same either way, so it
        is no setting of the run (the ``fit`` event in ``events.jsonl`` says which was used).

    A Ctrl-C (or :func:`gpo_vae.interrupt.request_stop`) stops training before the next batch:
    nothing is finalised (no ``model.pt``, no ``.complete``), ``checkpoints/last.ckpt`` of the
    last finished epoch stays, and :class:`~gpo_vae.interrupt.RunInterrupted` says how to resume.

    Returns
    -------
    Path
        ``run_dir``.
    """
    run_dir = Path(run_dir)
    sha = artifact.artifact_checksum(artifact_dir)
    config = {
        "model": to_dict(model_config),
        "training": to_dict(training_config),
        "artifact_sha256": sha,
        "artifact_path": recorded_path(artifact_dir, run_dir),
        "dataset_sha256": dataset_checksum(artifact_dir),
        "seed": training_config.seed,
    }
    # One writer per run directory: a concurrent call (another workflow on the same shared
    # results) waits here, then finds the finished run and reuses it.
    require_run_folder(run_dir)
    if training_config.wandb and not (run_dir / COMPLETE_MARKER).exists():
        require_wandb(WANDB_REASON)  # before any work (or folder), not after an epoch
    with exclusive_lock(run_dir, inside=True):
        if (run_dir / COMPLETE_MARKER).exists():
            check_or_write_config(run_dir, config)  # never hand back a run of other settings
            check_model_file(run_dir)
            record_event(run_dir, "reused")
            return run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        check_or_write_config(run_dir, config)
        place = counts_place(artifact_dir) if counts == "auto" else counts
        cells = ArtifactCells.read(artifact_dir, counts=place)
        fit_file = run_dir / CHECKPOINT_DIR / FIT_FILE
        if not fit_file.exists():
            record_event(run_dir, "fit", resume_from_epoch=resumable_epoch(run_dir), counts=place)
            stopping = "Ctrl-C: training stops before the next batch (Ctrl-C again aborts at once)."
            try:
                with sigint_requests_stop(stopping):
                    summary = _fit(
                        cells, model_config, training_config, run_dir, progress, callbacks, progress_line
                    )
            except RunInterrupted as err:
                epoch = resumable_epoch(run_dir)
                record_event(run_dir, "interrupted", resume_from_epoch=epoch)
                kept = (
                    f"{run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT} holds {epoch + 1} finished epochs: run the "
                    "same command again to resume from there"
                    if epoch is not None
                    else "no epoch had finished: run the same command again to start it anew"
                )
                raise RunInterrupted(f"{err}; {kept}.") from None
            write_json_atomic(summary, fit_file)
        summary = json.loads(fit_file.read_text())
        statistics = CellDataModule(cells, training_config.batch_size).statistics()
        _save_model(
            run_dir,
            {
                "model_config": config["model"],
                "training_config": config["training"],
                "n_genes": cells.n_genes,
                "n_nodes": cells.n_nodes,
                "n_perturbed": cells.n_perturbed,
                "node_cell_counts": torch.as_tensor(statistics.node_cell_counts),
                "qc_count": statistics.qc_count,
                "mean_log": torch.as_tensor(statistics.mean_log),
                "std_log": torch.as_tensor(statistics.std_log),
                "node_names": cells.nodes,
                "gene_names": cells.genes,
                "node_measured": torch.as_tensor(cells.node_measured),
                "batch_names": cells.batch_names,
                "best_epoch": summary["best_epoch"],
                "best_val_loss": summary["best_val_loss"],
                "artifact_sha256": sha,
            },
        )
        write_json_atomic({**provenance(config), **summary}, run_dir / RUN_FILE)
        write_text_atomic(sha + "\n", run_dir / COMPLETE_MARKER)
        record_event(run_dir, "complete")
        return run_dir


__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINT_DIR",
    "COMPLETE_MARKER",
    "CONFIG_FILE",
    "EVENTS_FILE",
    "FIT_FILE",
    "IDENTITY_KEYS",
    "LAST_CHECKPOINT",
    "MODEL_FILE",
    "RUN_FILE",
    "build_model",
    "load_trained_model",
    "read_events",
    "record_event",
    "train_model",
]


#: Names that moved in 0.2: the old import still works, with a warning, for one release.
_MOVED = {
    "artifact_checksum": "gpo_vae.preprocessing.artifact",
    "cpu_threads": "gpo_vae.runtime",
    "resolve_device": "gpo_vae.runtime",
}


def __getattr__(name: str) -> object:
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(
            f"gpo_vae.training.train.{name} moved to {_MOVED[name]}.{name}; import it from there "
            "(the old name goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
