"""Hyperparameters of the GPO-VAE module (design §6), with the published defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

Likelihood = Literal["library_nb", "poisson", "normal"]
LatentMode = Literal["concat", "sum"]
GrnVariant = Literal["logits", "probs"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and loss hyperparameters; defaults are the published RPE1 configuration.

    Attributes
    ----------
    n_latent
        L, size of z_basal and of the QC effect qc_E.
    decoder_n_layers, decoder_n_hidden
        Residual hidden layers of the decoder and their width ("1 × 400").
    basal_encoder_n_layers, basal_encoder_n_hidden
        Layers of the q(z_basal) encoder ("1 × 200").
    embedding_encoder_n_layers, embedding_encoder_n_hidden
        Layers of the q(E | M) and q(qc_E) encoders ("4 × 400").
    mask_prior
        π, prior probability of an edge of M.
    embedding_prior_scale
        s, prior standard deviation of E and qc_E.
    n_particles
        K, Monte-Carlo particles of the training loss.
    likelihood
        ``library_nb`` (negative binomial, mean = library size × softmax), ``poisson`` or ``normal``.
    mode
        ``concat``: decoder input [z_basal, D(E⊙M), q·qc_E]; ``sum``: their sum (mask width must be L).
    latent_mask
        False: M and E are T × T (GPO-VAE); True: T × L (SAMS-VAE), which rules out the GRN terms.
    mean_field
        q(z_basal | x̃) only, without the latent offsets.
    temperature
        Temperature of the relaxed Bernoulli q(M).
    mask_init_logit
        Initial value of every mask logit (when no prior matrix is given).
    alpha
        Reconstruction weight of the QC-pass branch; None = fraction of QC-fail cells in the batch.
    counterfactual_coeff
        β of term 3 (reference: ``beta``); 0 switches the term off.
    hop
        h, number of extra powers in the K-hop accumulation S.
    grn_coeff
        γ of term 4 (reference: ``gloss_coeff``); 0 switches the term off.
    fc_criteria
        c, offset subtracted from ΔX in term 4.
    grn_variant
        ``logits`` (S of the logits, target ΔX − c) or ``probs`` (row-normalised probabilities,
        min-max scaled S, target sigmoid(ΔX − c)).
    sparsity_coeff
        λ of term 5 (reference: ``penaly_coeff``); 0 switches the term off.
    grn_unmeasured
        Node columns whose gene is not measured (ΔX ≡ 0): ``skip`` leaves them out of term 4,
        ``zero`` fits them to 0 as the reference code does.
    """

    n_latent: int = 200
    decoder_n_layers: int = 1
    decoder_n_hidden: int = 400
    basal_encoder_n_layers: int = 1
    basal_encoder_n_hidden: int = 200
    embedding_encoder_n_layers: int = 4
    embedding_encoder_n_hidden: int = 400
    mask_prior: float = 0.3
    embedding_prior_scale: float = 1.0
    n_particles: int = 5
    likelihood: Likelihood = "library_nb"
    mode: LatentMode = "concat"
    latent_mask: bool = False
    mean_field: bool = False
    temperature: float = 1.0
    mask_init_logit: float = 0.0
    alpha: float | None = None
    counterfactual_coeff: float = 0.1
    hop: int = 5
    grn_coeff: float = 100.0
    fc_criteria: float = 0.5
    grn_variant: GrnVariant = "logits"
    sparsity_coeff: float = 10.0
    grn_unmeasured: Literal["skip", "zero"] = "skip"

    def __post_init__(self) -> None:
        problems = []
        if self.likelihood not in ("library_nb", "poisson", "normal"):
            problems.append(f"likelihood {self.likelihood!r} is not library_nb, poisson or normal")
        if self.mode not in ("concat", "sum"):
            problems.append(f"mode {self.mode!r} is not concat or sum")
        if self.grn_unmeasured not in ("skip", "zero"):
            problems.append(f"grn_unmeasured {self.grn_unmeasured!r} is not skip or zero")
        if self.grn_variant not in ("logits", "probs"):
            problems.append(f"grn_variant {self.grn_variant!r} is not logits or probs")
        if not 0.0 < self.mask_prior < 1.0:
            problems.append(f"mask_prior {self.mask_prior} is not in (0, 1)")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            problems.append(f"alpha {self.alpha} is not in [0, 1]")
        if self.latent_mask and (self.grn_coeff > 0 or self.sparsity_coeff > 0):
            problems.append("a latent-sized mask is no graph: set grn_coeff = sparsity_coeff = 0")
        for name in ("n_latent", "decoder_n_hidden", "basal_encoder_n_hidden", "n_particles"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        for name in ("decoder_n_layers", "hop", "embedding_encoder_n_hidden"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be non-negative")
        for name in ("basal_encoder_n_layers", "embedding_encoder_n_layers"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        for name in ("temperature", "embedding_prior_scale"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    @classmethod
    def sams_vae(cls, **overrides: Any) -> ModelConfig:
        """SAMS-VAE baseline: sum mode, latent-sized mask, no counterfactual/GRN/sparsity terms."""
        settings: dict[str, Any] = {
            "mode": "sum",
            "latent_mask": True,
            "counterfactual_coeff": 0.0,
            "grn_coeff": 0.0,
            "sparsity_coeff": 0.0,
        }
        settings.update(overrides)
        return cls(**settings)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
