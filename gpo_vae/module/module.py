"""The GPO-VAE module: generative model, guide and loss in plain torch (design §6).

Batch keys (dict of tensors, one row per cell): ``X`` (B, G) counts, ``D`` (B, T) dosage,
``qc`` (B,) 0/1 QC-fail flag (``total_qc``), ``library_size`` (B,), ``delta_x`` (B, T) (GRN term),
``cf_X`` (B, G) counterfactual counts (zeros if none), optionally ``has_cf`` (B,) bool
(default: ``cf_X.sum(1) != 0``) and, for a model of a screen with batches, ``batch`` (B,
n_batches) one-hot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from gpo_vae.module import grn_loss
from gpo_vae.module.config import ModelConfig
from gpo_vae.module.decoder import Decoder
from gpo_vae.module.distributions import (
    bernoulli_log_prob,
    gaussian_kl,
    normal_log_prob,
    standard_normal_log_prob,
)
from gpo_vae.module.guide import Guide, PlatedEffect, PlatedSample

Batch = Mapping[str, torch.Tensor]
#: Names of the loss terms, in the order they are summed.
LOSS_TERMS = (
    "reconstruction",
    "kl_z_basal",
    "kl_embedding",
    "kl_mask",
    "kl_qc_embedding",
    "counterfactual",
    "grn",
    "sparsity",
)


@dataclass
class LossOutput:
    """The loss to minimise and its terms (``loss == sum(terms.values())``), each a scalar."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


@dataclass
class InferenceOutputs:
    """What the guide computed for a batch (K particles, B cells).

    Attributes
    ----------
    plated
        The draw of M, E and qc_E.
    latent_offset, qc_offset
        D(M⊙E) (K, B, C) and q·qc_E (K, B, L).
    projected
        First-layer pre-activation of the basal encoder from the counts alone, (B, hidden).
    z_loc, z_scale
        Parameters of q(z_basal | ·), (K, B, L) ((B, L) for the mean-field encoder).
    z_basal
        The draw of z_basal, (K, B, L).
    """

    plated: PlatedSample | PlatedEffect
    latent_offset: torch.Tensor
    qc_offset: torch.Tensor
    projected: torch.Tensor
    z_loc: torch.Tensor
    z_scale: torch.Tensor
    z_basal: torch.Tensor

    def log_ratio(self) -> torch.Tensor:
        """log p(z_basal) − log q(z_basal | ·) summed over latent dims, (K, B)."""
        z = self.z_basal
        return (standard_normal_log_prob(z) - normal_log_prob(z, self.z_loc, self.z_scale)).sum(-1)


def active_rows(dosage: torch.Tensor) -> torch.Tensor:
    """Indices of the nodes with a non-zero dose in at least one row of ``dosage``."""
    return torch.nonzero((dosage != 0).any(dim=0)).squeeze(1)


def _inverse_counts(counts: torch.Tensor) -> torch.Tensor:
    counts = torch.as_tensor(counts, dtype=torch.float32).reshape(-1)
    return torch.where(counts > 0, 1.0 / counts.clamp(min=1.0), torch.zeros_like(counts))


class GPOVAE(nn.Module):
    """GPO-VAE (or, with :meth:`ModelConfig.sams_vae`, the SAMS-VAE baseline).

    Parameters
    ----------
    n_genes, n_nodes, n_perturbed
        G, T and P (the first P nodes are perturbed genes, the other A = T − P are DEG nodes).
    node_cell_counts
        (T,) training cells that received each node (0 for DEG nodes): weights of the plated terms.
    qc_counts
        Training cells flagged QC-fail (a scalar or a 1-element tensor): weight of the qc_E term.
    mean_log, std_log
        (G,) training statistics of log(x + 1) for the basal encoder input.
    config
        Hyperparameters (default: published GPO-VAE).
    mask_prior_probs
        Optional (T, C) prior-network probabilities that initialise the mask logits.
    node_measured
        (T,) bool: the node's gene is measured. ΔX of a node that is not measured is 0 by
        definition, not an observation, so with ``config.grn_unmeasured == "skip"`` the GRN
        alignment term leaves those columns out (``zero``: the published code fits them to 0).
    n_batches
        Batches (cell lines) of the screen; above 1, the batch one-hot is a covariate of the basal
        encoder and of the decoder (scVI's way), and generation asks for a batch.
    effect_logits
        (T, T) effect-prior logits of the training cells
        (:func:`gpo_vae.grn.effects.effect_prior_logits`): the initial mask logits when
        ``config.mask_init == "effects"`` and term 4's target when ``config.grn_target ==
        "effects"``. Required to build such a module; when loading one, None (the state dict
        holds the values).
    """

    def __init__(
        self,
        n_genes: int,
        n_nodes: int,
        n_perturbed: int,
        node_cell_counts: torch.Tensor,
        qc_counts: torch.Tensor | float,
        mean_log: torch.Tensor,
        std_log: torch.Tensor,
        config: ModelConfig | None = None,
        mask_prior_probs: torch.Tensor | None = None,
        node_measured: torch.Tensor | None = None,
        n_batches: int = 0,
        effect_logits: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        self.n_batches = n_batches if n_batches > 1 else 0
        latent = config.n_latent
        self.n_genes, self.n_nodes, self.n_perturbed = n_genes, n_nodes, n_perturbed
        self.n_cols = latent if config.latent_mask else n_nodes
        if config.mode == "sum" and self.n_cols != latent:
            raise ValueError(
                f"sum mode adds D(E⊙M) to z_basal: mask width {self.n_cols} must equal n_latent {latent}"
            )
        counts = torch.as_tensor(node_cell_counts, dtype=torch.float32).reshape(-1)
        if counts.shape != (n_nodes,):
            raise ValueError(f"node_cell_counts has {counts.numel()} entries, expected {n_nodes}")
        if not 0 <= n_perturbed <= n_nodes or bool((counts[n_perturbed:] != 0).any()):
            raise ValueError("node_cell_counts must be 0 for the DEG nodes (index ≥ n_perturbed)")
        qc_inverse = _inverse_counts(torch.as_tensor(qc_counts))
        if qc_inverse.numel() != 1:
            raise ValueError("qc_counts must be one count (training cells flagged QC-fail)")
        self.register_buffer("node_weight", _inverse_counts(counts))
        self.register_buffer("qc_weight", qc_inverse.reshape(()))
        measured = (
            torch.ones(n_nodes, dtype=torch.bool) if node_measured is None else torch.as_tensor(node_measured)
        )
        if measured.shape != (n_nodes,):
            raise ValueError(f"node_measured has {measured.numel()} entries, expected {n_nodes}")
        self.register_buffer("node_measured", measured.to(torch.bool))
        if effect_logits is not None:
            effect_logits = torch.as_tensor(effect_logits, dtype=torch.float32)
            if effect_logits.shape != (n_nodes, n_nodes):
                raise ValueError(
                    f"effect_logits has shape {tuple(effect_logits.shape)}, expected {(n_nodes,) * 2}"
                )
        if config.grn_target == "effects":
            # zeros are a placeholder for a module whose state dict is loaded next
            target = effect_logits if effect_logits is not None else torch.zeros(n_nodes, n_nodes)
            self.register_buffer("grn_effect_target", target.clone())
        if config.mask_init == "effects" and effect_logits is not None and mask_prior_probs is None:
            mask_prior_probs = torch.sigmoid(effect_logits)
        self.guide = Guide(
            n_genes,
            n_nodes,
            self.n_cols,
            config,
            mean_log,
            std_log,
            mask_prior_probs,
            n_batches=self.n_batches,
        )
        n_input = (latent if config.mode == "sum" else 2 * latent + self.n_cols) + self.n_batches
        self.decoder = Decoder(
            n_input, n_genes, config.decoder_n_layers, config.decoder_n_hidden, config.likelihood
        )
        self._mask_prior_logit = math.log(config.mask_prior / (1.0 - config.mask_prior))

    # -- model ---------------------------------------------------------------------------------
    def decoder_input(
        self,
        z_basal: torch.Tensor,
        latent_offset: torch.Tensor,
        qc_offset: torch.Tensor,
        batch: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[z_basal, D(E⊙M), q·qc_E] (concat mode) or their sum (sum mode), then the batch one-hot
        ((B, n_batches), broadcast over particles) when the model has batches."""
        if self.config.mode == "sum":
            z = z_basal + latent_offset + qc_offset
        else:
            z = torch.cat([z_basal, latent_offset.to(z_basal.dtype), qc_offset.to(z_basal.dtype)], dim=-1)
        if not self.n_batches:
            return z
        if batch is None:
            raise ValueError(f"this model conditions on {self.n_batches} batches: pass the batch one-hot")
        return torch.cat([z, batch.to(z.dtype).expand(*z.shape[:-1], self.n_batches)], dim=-1)

    def offsets(
        self, plated: PlatedSample | PlatedEffect, dosage: torch.Tensor, qc: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent offset D(M⊙E) (K, B, C) and QC offset q·qc_E (K, B, L) of each cell."""
        effect = plated.effect()
        latent_offset = dosage[:, plated.rows].to(effect.dtype) @ effect
        qc_offset = qc.to(plated.qc_embedding.dtype).unsqueeze(-1) * plated.qc_embedding
        return latent_offset, qc_offset

    def inference(self, batch: Batch, plated: PlatedSample | PlatedEffect) -> InferenceOutputs:
        """Run the guide for the cells of ``batch`` given a draw of the global variables.

        z_basal is drawn from q(z_basal | x̃, D(M⊙E), q·qc_E) once per particle of ``plated``.
        """
        x, qc = batch["X"], batch["qc"].reshape(-1)
        latent_offset, qc_offset = self.offsets(plated, batch["D"], qc)
        projected = self.guide.project_counts(x, batch.get("batch"))
        loc, scale = self.guide.basal(projected, latent_offset, qc_offset)
        shape = (plated.n_particles, x.shape[0], self.config.n_latent)
        z_basal = loc + scale * torch.randn(shape, device=loc.device, dtype=loc.dtype)
        return InferenceOutputs(plated, latent_offset, qc_offset, projected, loc, scale, z_basal)

    def generative(self, batch: Batch, inference: InferenceOutputs) -> torch.Tensor:
        """log p(x | z) (K, B) of every cell under its own QC branch; x is never sampled.

        The cell's flag q already set its offset q·qc_E (0 for QC-pass cells), so one decoder
        pass per cell and particle evaluates exactly the branch its reconstruction term uses.
        """
        library = batch["library_size"].reshape(-1).to(torch.float32)
        z = self.decoder_input(
            inference.z_basal, inference.latent_offset, inference.qc_offset, batch.get("batch")
        )
        return self.decoder.log_likelihood(z, batch["X"], library)

    def _plated_terms(
        self, plated: PlatedSample, dosage: torch.Tensor, qc: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """log p − log q of E, M and qc_E, weighted per cell; each (K, B).

        A cell b receives the row terms of every node t it was dosed with, times 1/n_t (n_t =
        training cells dosed with t), and the qc_E term times 1/n_fail if it is QC-fail:
        ``Σ_t 1[D_bt ≠ 0] / n_t · Σ_j (log p − log q)(E_tj)`` and likewise for M. Summed over the
        N training cells, each node's term then counts once, so the batch mean of the per-cell
        ELBO estimates ELBO / N.
        """
        scale = self.config.embedding_prior_scale
        emb = standard_normal_log_prob(plated.embedding, scale) - normal_log_prob(
            plated.embedding, plated.embedding_loc, plated.embedding_scale
        )
        logits = self.guide.mask_logits[plated.rows]
        prior_logits = torch.full_like(logits, self._mask_prior_logit)
        mask = bernoulli_log_prob(plated.mask, prior_logits) - bernoulli_log_prob(plated.mask, logits)
        qc_e = standard_normal_log_prob(plated.qc_embedding, scale) - normal_log_prob(
            plated.qc_embedding, plated.qc_loc, plated.qc_scale
        )
        weight = (dosage[:, plated.rows] != 0).to(emb.dtype) * self.node_weight[plated.rows]
        qc_weight = (qc.reshape(-1) != 0).to(emb.dtype) * self.qc_weight
        return {
            "kl_embedding": torch.einsum("br,kr->kb", weight, emb.sum(-1)),
            "kl_mask": torch.einsum("br,kr->kb", weight, mask.sum(-1)),
            "kl_qc_embedding": qc_weight * qc_e.sum(dim=(-2, -1)).unsqueeze(-1),
        }

    # -- loss ------------------------------------------------------------------------------
    def loss(self, batch: Batch, n_particles: int | None = None) -> LossOutput:
        """Negative ELBO plus the counterfactual, GRN and sparsity terms, averaged over particles.

        Terms: ``reconstruction`` −mean[α(1−q) log p(x|z_good) + (1−α) q log p(x|z_bad)] (only the
        cell's own branch is decoded); ``kl_z_basal``, ``kl_embedding``, ``kl_mask``,
        ``kl_qc_embedding`` −mean(log p − log q) (plated terms weighted as in
        :meth:`_plated_terms`); ``counterfactual`` β Σ_cells,dims KL / K; ``grn`` γ mean|D S − t|;
        ``sparsity`` λ ‖σ(logits)‖₁ / T². Switched-off terms are exact zeros with no graph.
        """
        cfg = self.config
        k = n_particles or cfg.n_particles
        dosage, qc = batch["D"], batch["qc"].reshape(-1).to(torch.float32)
        plated = self.guide.sample_plated(k, active_rows(dosage))
        inference = self.inference(batch, plated)
        log_px = self.generative(batch, inference)
        alpha = qc.mean() if cfg.alpha is None else torch.tensor(cfg.alpha, device=qc.device)
        branch_weight = alpha * (1.0 - qc) + (1.0 - alpha) * qc
        terms = {
            "reconstruction": -(branch_weight * log_px).mean(),
            "kl_z_basal": -inference.log_ratio().mean(),
        }
        terms.update({name: -value.mean() for name, value in self._plated_terms(plated, dosage, qc).items()})
        zero = torch.zeros((), device=log_px.device)
        terms["counterfactual"] = zero
        if cfg.counterfactual_coeff > 0:
            terms["counterfactual"] = cfg.counterfactual_coeff * self._counterfactual_kl(batch, inference)
        with torch.autocast(device_type=dosage.device.type, enabled=False):
            logits = self.guide.mask_logits
            terms["grn"] = zero
            if cfg.grn_coeff > 0:
                accumulation = grn_loss.grn_accumulation(logits, cfg.hop, cfg.grn_variant)
                columns = self.node_measured if cfg.grn_unmeasured == "skip" else None
                if cfg.grn_target == "effects":
                    # the target D·Y is what the ΔX − c of the cells would be without their noise
                    delta_x = dosage.float() @ self.grn_effect_target + cfg.fc_criteria
                else:
                    delta_x = batch["delta_x"].float()
                alignment = grn_loss.grn_alignment_loss(
                    accumulation, dosage.float(), delta_x, cfg.fc_criteria, cfg.grn_variant, columns=columns
                )
                terms["grn"] = cfg.grn_coeff * alignment
            terms["sparsity"] = (
                cfg.sparsity_coeff * grn_loss.sparsity_penalty(logits) if cfg.sparsity_coeff > 0 else zero
            )
        terms = {name: terms[name] for name in LOSS_TERMS}
        return LossOutput(loss=torch.stack(list(terms.values())).sum(), terms=terms)

    def _counterfactual_kl(self, batch: Batch, inference: InferenceOutputs) -> torch.Tensor:
        """Σ over cells with a counterfactual and latent dims of KL(q(z|cfX, 1−q) ‖ q(z|x, 1−q)), / K.

        Both encoders see the same particle's D(M⊙E) and (1 − q)·qc_E.
        """
        cf_x = batch["cf_X"]
        has_cf = batch["has_cf"] if "has_cf" in batch else cf_x.sum(dim=1) != 0
        index = torch.nonzero(has_cf.reshape(-1)).squeeze(1)
        if index.numel() == 0:
            return torch.zeros((), device=cf_x.device)
        qc_embedding = inference.plated.qc_embedding
        flipped = 1.0 - batch["qc"].reshape(-1)[index].to(qc_embedding.dtype)
        offset = inference.latent_offset[:, index]
        qc_offset = flipped.unsqueeze(-1) * qc_embedding
        real_loc, real_scale = self.guide.basal(inference.projected[index], offset, qc_offset)
        cell_batch = batch["batch"][index] if "batch" in batch else None
        cf_loc, cf_scale = self.guide.basal(
            self.guide.project_counts(cf_x[index], cell_batch), offset, qc_offset
        )
        kl = gaussian_kl(cf_loc, cf_scale, real_loc, real_scale).sum(dim=(-2, -1))
        return kl.mean()  # over particles (a scalar already for the mean-field encoder)

    # -- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def iwelbo(
        self,
        batch: Batch,
        n_particles: int = 100,
        plated: PlatedSample | PlatedEffect | None = None,
        particle_chunk: int = 25,
    ) -> torch.Tensor:
        """Importance-weighted ELBO per cell, (B,): logsumexp_k[log p(x|z_k) + log p(z_k) − log q(z_k)] − log K.

        As in the reference's predictive IWELBO, the plated variables are a guide draw that is
        not scored (pass the same ``plated`` from :meth:`sample_plated` to every batch to share
        it), and each cell is scored under its own QC branch with weight 1. Particles are
        processed ``particle_chunk`` at a time to bound memory.
        """
        if plated is None:
            plated = self.guide.sample_plated(n_particles, active_rows(batch["D"]))
        if plated.n_particles != n_particles:
            raise ValueError(f"plated sample has {plated.n_particles} particles, expected {n_particles}")
        log_weights = []
        for start in range(0, n_particles, particle_chunk):
            inference = self.inference(batch, plated.particles(slice(start, start + particle_chunk)))
            log_weights.append(self.generative(batch, inference) + inference.log_ratio())
        return torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(n_particles)

    @torch.no_grad()
    def sample_plated(self, n_particles: int) -> PlatedEffect:
        """A guide draw of M, E and qc_E for all nodes, to share across IWELBO batches: kept as
        M ⊙ E and qc_E (:meth:`Guide.sample_effect <gpo_vae.module.guide.Guide.sample_effect>`),
        all that scoring reads."""
        return self.guide.sample_effect(n_particles)

    # -- the learned graph (generation: gpo_vae.module.generate) -----------------------------
    def mask_probabilities(self) -> torch.Tensor:
        """q(M) edge probabilities sigmoid(logits), (T, C), detached."""
        return torch.sigmoid(self.guide.mask_logits.detach())
