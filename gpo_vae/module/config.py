"""Hyperparameters of the GPO-VAE module (design §6), with the published defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

Likelihood = Literal["library_nb", "poisson", "normal"]
LatentMode = Literal["concat", "sum"]
GrnVariant = Literal["logits", "probs"]
MaskInit = Literal["constant", "effects"]
GrnTarget = Literal["cells", "effects"]
EffectStatistic = Literal["zscore", "deconvolved"]
PredictionBasal = Literal["prior", "encoded_controls"]
UnmeasuredColumns = Literal["skip", "zero"]


#: The fields that take one of a few names, and those names (from their ``Literal`` types).
CHOICES: dict[str, tuple[str, ...]] = {
    "likelihood": get_args(Likelihood),
    "mode": get_args(LatentMode),
    "grn_unmeasured": get_args(UnmeasuredColumns),
    "grn_variant": get_args(GrnVariant),
    "mask_init": get_args(MaskInit),
    "grn_target": get_args(GrnTarget),
    "effect_statistic": get_args(EffectStatistic),
    "prediction_basal": get_args(PredictionBasal),
}


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
    mask_init
        ``constant``: every logit starts at ``mask_init_logit`` (published); ``effects``: from
        the training cells' standardised mean effects on the node genes
        (:func:`gpo_vae.grn.effects.effect_prior_logits`), about ``mask_init_density`` of the
        candidate edges starting above p = 0.5.
    mask_init_density
        Expected share of candidate pairs that are edges, for ``mask_init: effects``.
    grn_target
        What term 4 aligns D S with: ``cells`` (per-cell |ΔX| − c, published) or ``effects``
        (the cell's perturbation's effect-prior logits, its noise averaged over its cells).
    effect_statistic
        The effect statistic ``mask_init`` and ``grn_target`` ``effects`` read: ``zscore`` (|effect
        z|, total effects) or ``deconvolved`` (its network deconvolution: the direct part of the
        total effects, :func:`gpo_vae.grn.effects.effect_statistic`).
    prediction_basal
        Where generated cells take z_basal from: ``prior`` (N(0, I), published) or
        ``encoded_controls`` (q(z_basal | x) of the training control cells, the counterfactual
        way: a perturbation's cells are those controls with its latent offset added).
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
    grn_unmeasured: UnmeasuredColumns = "skip"
    mask_init: MaskInit = "constant"
    mask_init_density: float = 0.05
    grn_target: GrnTarget = "cells"
    effect_statistic: EffectStatistic = "zscore"
    prediction_basal: PredictionBasal = "prior"

    @property
    def needs_effects(self) -> bool:
        """The module is built with the training cells' effect statistics."""
        return self.mask_init == "effects" or self.grn_target == "effects"

    def __post_init__(self) -> None:
        problems = []
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                options = ", ".join(allowed[:-1]) + " or " + allowed[-1]
                problems.append(f"{name} {value!r} is not {options}")
        if not 0.0 < self.mask_init_density < 1.0:
            problems.append(f"mask_init_density {self.mask_init_density} is not in (0, 1)")
        if self.latent_mask and self.needs_effects:
            problems.append(
                "a latent-sized mask has no node columns: mask_init and grn_target need a GRN mask"
            )
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
