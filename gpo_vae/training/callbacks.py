"""Lightning callbacks of a training run: stop on Ctrl-C, one progress line per run."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from gpo_vae.interrupt import RunInterrupted, stop_requested


class StopOnRequest(Callback):
    """Raise :class:`~gpo_vae.interrupt.RunInterrupted` before the next batch once a stop was
    requested: the epoch in progress is dropped, ``last.ckpt`` of the last finished one stays."""

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if stop_requested():
            raise RunInterrupted(f"training stopped by Ctrl-C in epoch {trainer.current_epoch}")

    def on_validation_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.on_train_batch_start(trainer)


class EpochProgress(Callback):
    """One tqdm line on standard error for a whole run: epochs done, steps, the validation loss."""

    def __init__(self, label: str, max_epochs: int) -> None:
        self.label = label
        self.max_epochs = max_epochs
        self.bar: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from tqdm.auto import tqdm

        total = self.max_epochs
        per_epoch = trainer.num_training_batches
        if trainer.max_steps and trainer.max_steps > 0 and per_epoch and math.isfinite(per_epoch):
            total = min(total, math.ceil(trainer.max_steps / per_epoch))  # the step budget ends it first
        self.bar = tqdm(
            total=total,
            initial=trainer.current_epoch,
            desc=self.label,
            unit="epoch",
            file=sys.stderr,
            mininterval=2.0,
            dynamic_ncols=True,
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is None:
            return
        loss = trainer.callback_metrics.get("val/loss")
        self.bar.set_postfix(
            step=trainer.global_step, val_loss=f"{float(loss):.4g}" if loss is not None else "-"
        )
        self.bar.update(1)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close()
