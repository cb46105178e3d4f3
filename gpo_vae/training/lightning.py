"""The Lightning training plan of a GPO-VAE module: optimisation step, logging, RNG checkpointing."""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from gpo_vae.module import GPOVAE, LossOutput
from gpo_vae.training.config import TrainingConfig

#: Keys of the random-number-generator states and of the training seconds in a checkpoint.
RNG_KEY = "gpo_vae_rng_states"
SECONDS_KEY = "gpo_vae_training_seconds"


def capture_rng_states() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and Python RNG states, as weights-only-loadable values."""
    # the legacy global state is what third-party code seeded by seed_everything draws from
    kind, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_states`."""
    torch.set_rng_state(states["torch"].cpu())
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))  # noqa: NPY002
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in states["cuda"]])


class GPOVAETrainingPlan(pl.LightningModule):
    """Adam on the module's loss; logs every loss term of training and validation cells.

    Logged per epoch (means over cells): ``train/loss``, ``train/<term>``, ``val/loss``,
    ``val/<term>`` for each of :data:`gpo_vae.module.LOSS_TERMS`; per step: ``train/step_loss``.
    Validation uses the same loss, plate weights included, so ``val/loss`` estimates the
    per-cell training objective on held-out cells. Gradient clipping is the Trainer's.

    Every checkpoint carries the RNG states at the moment it is written; after a resume they
    are restored when training starts, so the particles drawn from then on are the ones the
    uninterrupted run draws.
    """

    def __init__(self, model: GPOVAE, training: TrainingConfig) -> None:
        super().__init__()
        self.model = model
        self.training_config = training
        self._rng_to_restore: dict[str, Any] | None = None
        self._seconds_before = 0.0  # training seconds of earlier sessions (up to their checkpoint)
        self._session_start: float | None = None

    def training_seconds(self) -> float:
        """Wall seconds of training: earlier sessions up to their last checkpoint plus this one."""
        now = time.perf_counter()
        return self._seconds_before + (now - self._session_start if self._session_start else 0.0)

    def _log_loss(self, stage: str, out: LossOutput, n_cells: int) -> None:
        self.log(f"{stage}/loss", out.loss, on_step=False, on_epoch=True, batch_size=n_cells)
        for name, value in out.terms.items():
            self.log(f"{stage}/{name}", value, on_step=False, on_epoch=True, batch_size=n_cells)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model.loss(batch)
        n_cells = batch["X"].shape[0]
        self._log_loss("train", out, n_cells)
        self.log("train/step_loss", out.loss, on_step=True, on_epoch=False, batch_size=n_cells)
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._log_loss("val", self.model.loss(batch), batch["X"].shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        cfg = self.training_config
        if cfg.mask_lr_scale == 1.0:
            return torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        mask = self.model.guide.mask_logits
        others = [p for p in self.model.parameters() if p is not mask]
        return torch.optim.Adam(
            [
                {"params": others},
                {"params": [mask], "lr": cfg.lr * cfg.mask_lr_scale, "weight_decay": 0.0},
            ],
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = capture_rng_states()
        checkpoint[SECONDS_KEY] = self.training_seconds()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Restoring here would be undone by whatever draws numbers before the first epoch
        # (e.g. the Trainer's setup): keep the states until training starts.
        self._rng_to_restore = checkpoint.get(RNG_KEY)
        self._seconds_before = float(checkpoint.get(SECONDS_KEY, 0.0))

    def on_train_start(self) -> None:
        self._session_start = time.perf_counter()
        if self._rng_to_restore is not None:
            restore_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
