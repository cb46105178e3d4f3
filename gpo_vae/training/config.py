"""Training hyperparameters (design §6), validated like every other config section."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["32", "bf16-mixed"]
#: seed_everything accepts 32-bit unsigned seeds only.
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class TrainingConfig:
    """How a model is optimised; defaults are the published settings.

    Attributes
    ----------
    max_epochs
        Upper bound on epochs (early stopping usually ends training first).
    max_steps
        Optional upper bound on optimisation steps (batches): a budget that fits any screen,
        since a small screen has few steps per epoch and a large one many; training ends at
        ``max_epochs`` or ``max_steps``, whichever comes first. None: epochs only (published).
    batch_size
        Training cells per step.
    eval_batch_size
        Cells per validation step; None = ``batch_size`` (memory only, not results).
    lr, weight_decay
        Adam learning rate and L2 weight decay.
    mask_lr_scale
        The mask logits learn at ``mask_lr_scale × lr`` (no weight decay on them when it is not
        1): with the published single rate, Adam moves a logit by at most ``lr`` per step, so
        4,500 steps at 3e-4 leave every edge within ±1.4 of its start.
    gradient_clip
        Maximum global gradient norm; None switches clipping off.
    early_stopping_patience
        Epochs without a lower ``val/loss`` before training stops.
    early_stopping_min_steps
        The patience is at least this many optimizer steps (0: epochs alone, as published). On a
        small screen an epoch is a handful of steps and the validation loss of shallow counts is
        noisy: 20 epochs of 5 steps stopped a real CRISPRa screen after 235–1,765 steps, its weak
        effects unlearnt (held-out ATE r −0.006 to 0.296 over seeds against the training mean's
        0.311); 500 steps trained on to 2,955–3,820 (0.301–0.328) (docs: Real cells).
    seed
        Seeds weights, particles and the (seed, epoch) data order.
    device
        ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    precision
        ``"32"`` (float32) or ``"bf16-mixed"`` (autocast to bfloat16); quote it in YAML.
    num_workers
        DataLoader worker processes (0 = batches built in the training process).
    cpu_threads
        torch intra-op CPU threads during training; None keeps torch's default. On a shared
        machine 1 can be far faster than contended threads; bitwise reproducibility holds for
        a fixed thread count.
    wandb, wandb_project
        Also log to Weights & Biases (needs the ``wandb`` extra); mode from ``$WANDB_MODE``,
        offline by default.
    max_time_minutes
        Optional wall-clock budget; training stops (best checkpoint kept) when it runs out.
    log_every_n_steps
        Interval of the per-step ``train/step_loss`` log.
    """

    max_epochs: int = 2000
    max_steps: int | None = None
    batch_size: int = 512
    eval_batch_size: int | None = None
    lr: float = 3e-4
    weight_decay: float = 1e-6
    mask_lr_scale: float = 1.0
    gradient_clip: float | None = 100.0
    early_stopping_patience: int = 30
    early_stopping_min_steps: int = 0
    seed: int = 0
    device: Device = "auto"
    precision: Precision = "32"
    num_workers: int = 0
    cpu_threads: int | None = None
    wandb: bool = False
    wandb_project: str = "gpo-vae"
    max_time_minutes: float | None = None
    log_every_n_steps: int = 50

    def __post_init__(self) -> None:
        problems = []
        for name in ("max_epochs", "batch_size", "log_every_n_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("eval_batch_size", "cpu_threads", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be at least 1 or null, got {value}")
        if not self.lr > 0:
            problems.append(f"lr must be positive, got {self.lr}")
        if not self.mask_lr_scale > 0:
            problems.append(f"mask_lr_scale must be positive, got {self.mask_lr_scale}")
        if not self.weight_decay >= 0:
            problems.append(f"weight_decay must be non-negative, got {self.weight_decay}")
        if self.gradient_clip is not None and not self.gradient_clip > 0:
            problems.append(f"gradient_clip must be positive or null, got {self.gradient_clip}")
        for name in ("early_stopping_patience", "early_stopping_min_steps", "num_workers"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be non-negative, got {getattr(self, name)}")
        if not 0 <= self.seed <= MAX_SEED:
            problems.append(f"seed must be in 0..{MAX_SEED}, got {self.seed}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device {self.device!r} is not auto, cpu or cuda")
        if self.precision not in ("32", "bf16-mixed"):
            problems.append(f"precision {self.precision!r} is not '32' or 'bf16-mixed'")
        if self.max_time_minutes is not None and not self.max_time_minutes > 0:
            problems.append(f"max_time_minutes must be positive or null, got {self.max_time_minutes}")
        if not self.wandb_project:
            problems.append("wandb_project must not be empty")
        if problems:
            raise ValueError("invalid TrainingConfig: " + "; ".join(problems))

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def patience_epochs(training: TrainingConfig, steps_per_epoch: int) -> int:
    """Epochs of patience: ``early_stopping_patience``, raised to cover ``early_stopping_min_steps``."""
    floor = -(-training.early_stopping_min_steps // max(1, steps_per_epoch))
    return max(training.early_stopping_patience, floor)
