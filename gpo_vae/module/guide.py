"""The guide q(M) q(E | M) q(qc_E) q(z_basal | x, D, q) (design §6)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Self

import torch
from torch import nn

from gpo_vae.module.config import ModelConfig
from gpo_vae.module.distributions import relaxed_bernoulli_straight_through
from gpo_vae.module.layers import GaussianMLP, linear_columns

#: Prior-network probabilities are clamped to [eps, 1 − eps] before taking logits.
PRIOR_PROB_EPS = 1e-6


class _Particles:
    """A draw whose fields after ``rows`` hold the particles first."""

    @property
    def n_particles(self) -> int:
        return getattr(self, dataclasses.fields(self)[1].name).shape[0]

    def particles(self, index: slice) -> Self:
        """The same draw restricted to some particles."""
        return dataclasses.replace(
            self,
            **{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self) if f.name != "rows"},
        )


@dataclass
class PlatedSample(_Particles):
    """K particles of the global variables, drawn for a subset of node rows.

    Only rows of nodes that receive a dose somewhere in a batch affect that batch's loss (every
    use of E and M goes through D), so the guide draws only those rows.

    Attributes
    ----------
    rows
        (R,) node indices whose rows of M and E were drawn.
    mask
        (K, R, C) hard mask sample (straight-through gradient).
    embedding, embedding_loc, embedding_scale
        (K, R, C) sample of E and the parameters of q(E | M) it was drawn from.
    qc_embedding, qc_loc, qc_scale
        (K, 1, L) sample of qc_E and the parameters of q(qc_E).
    """

    rows: torch.Tensor
    mask: torch.Tensor
    embedding: torch.Tensor
    embedding_loc: torch.Tensor
    embedding_scale: torch.Tensor
    qc_embedding: torch.Tensor
    qc_loc: torch.Tensor
    qc_scale: torch.Tensor

    def effect(self) -> torch.Tensor:
        """M ⊙ E, (K, R, C): the rows that D maps to a cell's latent offset."""
        return self.mask * self.embedding


@dataclass
class PlatedEffect(_Particles):
    """K particles of what inference reads of a plated draw: M ⊙ E and qc_E.

    The same draw as :meth:`Guide.sample_plated` (same random numbers, same values) without M, E
    and the parameters of q(E | M), which only training's KL terms use: a quarter of the memory,
    for the IWELBO draw that evaluation shares across batches (particles × nodes × latents).

    Attributes
    ----------
    rows
        (R,) node indices whose rows were drawn.
    latent_effect
        (K, R, C) M ⊙ E.
    qc_embedding
        (K, 1, L) sample of qc_E.
    """

    rows: torch.Tensor
    latent_effect: torch.Tensor
    qc_embedding: torch.Tensor

    def effect(self) -> torch.Tensor:
        """M ⊙ E, (K, R, C)."""
        return self.latent_effect


class Guide(nn.Module):
    """Variational posterior of GPO-VAE (and of SAMS-VAE with a latent-sized mask).

    Parameters
    ----------
    n_genes, n_nodes
        G and T.
    n_cols
        Width C of a mask row: T (GRN mask) or L (latent mask).
    config
        Model hyperparameters.
    mean_log, std_log
        (G,) training-set mean and standard deviation of log(x + 1); the basal encoder sees
        x̃ = (log(x + 1) − mean_log) / std_log. A zero or non-finite std is replaced by 1.
    mask_prior_probs
        Optional (T, C) edge probabilities (prior network) that initialise the mask logits.
    n_batches
        Batches (cell lines) of the screen; above 1, the batch's one-hot is a covariate of the
        basal encoder (the last ``n_batches`` input columns), as scVI conditions on the batch.
    """

    def __init__(
        self,
        n_genes: int,
        n_nodes: int,
        n_cols: int,
        config: ModelConfig,
        mean_log: torch.Tensor,
        std_log: torch.Tensor,
        mask_prior_probs: torch.Tensor | None = None,
        n_batches: int = 0,
    ) -> None:
        super().__init__()
        self.n_genes, self.n_nodes, self.n_cols = n_genes, n_nodes, n_cols
        self.n_batches = n_batches if n_batches > 1 else 0
        self.temperature = config.temperature
        self.mean_field = config.mean_field
        latent = config.n_latent
        if mask_prior_probs is None:
            logits = torch.full((n_nodes, n_cols), float(config.mask_init_logit))
        else:
            if tuple(mask_prior_probs.shape) != (n_nodes, n_cols):
                raise ValueError(
                    f"mask_prior_probs has shape {tuple(mask_prior_probs.shape)}, expected {(n_nodes, n_cols)}"
                )
            logits = torch.logit(mask_prior_probs.float().clamp(PRIOR_PROB_EPS, 1.0 - PRIOR_PROB_EPS))
        self.mask_logits = nn.Parameter(logits)
        self.embedding_encoder = GaussianMLP(
            n_cols + n_nodes, n_cols, config.embedding_encoder_n_layers, config.embedding_encoder_n_hidden
        )
        self.qc_encoder = GaussianMLP(
            latent, latent, config.embedding_encoder_n_layers, config.embedding_encoder_n_hidden
        )
        self.register_buffer("qc_encoder_input", torch.ones(1, latent))
        n_offsets = 0 if config.mean_field else n_cols + latent
        self.basal_encoder = GaussianMLP(
            n_genes + n_offsets + self.n_batches,
            latent,
            config.basal_encoder_n_layers,
            config.basal_encoder_n_hidden,
        )
        std_log = torch.as_tensor(std_log, dtype=torch.float32)
        mean_log = torch.as_tensor(mean_log, dtype=torch.float32)
        if std_log.shape != (n_genes,) or mean_log.shape != (n_genes,):
            raise ValueError(f"mean_log and std_log must have shape ({n_genes},)")
        bad = ~torch.isfinite(std_log) | (std_log <= 0)
        self.register_buffer("std_log", torch.where(bad, torch.ones_like(std_log), std_log))
        self.register_buffer("mean_log", torch.nan_to_num(mean_log, nan=0.0, posinf=0.0, neginf=0.0))

    def _embedding_params(self, mask: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.embedding_encoder.first
        # the one-hot half of the input selects a column of the weight: gather it, no matmul
        one_hot_part = first.weight[:, self.n_cols :].t()[rows] + first.bias
        pre = linear_columns(first, mask, 0, self.n_cols) + one_hot_part
        return self.embedding_encoder.from_preactivation(pre)

    def _qc_params(self, n_particles: int) -> tuple[torch.Tensor, torch.Tensor]:
        loc, scale = self.qc_encoder(self.qc_encoder_input)
        shape = (n_particles, *loc.shape)
        return loc.expand(shape), scale.expand(shape)

    def sample_plated(self, n_particles: int, rows: torch.Tensor | None = None) -> PlatedSample:
        """Draw M, E | M and qc_E for ``n_particles`` particles (all node rows when rows is None)."""
        if rows is None:
            rows = torch.arange(self.n_nodes, device=self.mask_logits.device)
        mask = relaxed_bernoulli_straight_through(self.mask_logits[rows], self.temperature, (n_particles,))
        loc, scale = self._embedding_params(mask, rows)
        qc_loc, qc_scale = self._qc_params(n_particles)
        return PlatedSample(
            rows=rows,
            mask=mask,
            embedding=loc + scale * torch.randn_like(loc),
            embedding_loc=loc,
            embedding_scale=scale,
            qc_embedding=qc_loc + qc_scale * torch.randn_like(qc_loc),
            qc_loc=qc_loc,
            qc_scale=qc_scale,
        )

    @torch.no_grad()
    def sample_effect(self, n_particles: int, rows: torch.Tensor | None = None) -> PlatedEffect:
        """:meth:`sample_plated`'s draw (the same random numbers in the same order, so the same
        values) kept as M ⊙ E and qc_E only, built in place: one (K, R, C) tensor held instead of
        four, about four at the peak instead of six."""
        if rows is None:
            rows = torch.arange(self.n_nodes, device=self.mask_logits.device)
        mask = relaxed_bernoulli_straight_through(self.mask_logits[rows], self.temperature, (n_particles,))
        loc, scale = self._embedding_params(mask, rows)
        # E = loc + scale · ε, then M ⊙ E: the products and sums of sample_plated, in place
        effect = torch.randn_like(loc).mul_(scale).add_(loc).mul_(mask)
        del mask, loc, scale
        qc_loc, qc_scale = self._qc_params(n_particles)
        return PlatedEffect(rows, effect, qc_loc + qc_scale * torch.randn_like(qc_loc))

    def plated_mode(self, rows: torch.Tensor) -> PlatedSample:
        """One deterministic "particle": M = 1[p > 0.5], E = mean of q(E | M), qc_E = its mean."""
        mask = (self.mask_logits[rows] > 0).to(self.mask_logits.dtype).unsqueeze(0)
        loc, scale = self._embedding_params(mask, rows)
        qc_loc, qc_scale = self._qc_params(1)
        return PlatedSample(rows, mask, loc, loc, scale, qc_loc, qc_loc, qc_scale)

    def project_counts(self, x: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-activation of the basal encoder's first layer from the counts (and the batch
        one-hot, (B, n_batches), when the screen has batches), (B, hidden).

        Computed once per cell and shared by all particles and by both QC offsets.
        """
        x_tilde = (torch.log1p(x) - self.mean_log) / self.std_log
        first = self.basal_encoder.first
        pre = linear_columns(first, x_tilde, 0, self.n_genes) + first.bias
        if self.n_batches:
            if batch is None:
                raise ValueError(f"this model conditions on {self.n_batches} batches: pass the batch one-hot")
            width = first.in_features
            pre = pre + linear_columns(first, batch.to(pre.dtype), width - self.n_batches, width)
        return pre

    def basal(
        self, projected: torch.Tensor, latent_offset: torch.Tensor | None, qc_offset: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z_basal | x̃, D(M⊙E), q·qc_E): (loc, scale), shape (K, B, L) ((B, L) if mean-field).

        ``projected`` is :meth:`project_counts` of the cells; the offsets are (K, B, C) and
        (K, B, L) and are ignored by the mean-field encoder.
        """
        pre = projected
        if not self.mean_field:
            assert latent_offset is not None and qc_offset is not None
            first, g, c = self.basal_encoder.first, self.n_genes, self.n_cols
            pre = (
                pre
                + linear_columns(first, latent_offset, g, g + c)
                + linear_columns(first, qc_offset, g + c, first.in_features - self.n_batches)
            )
        return self.basal_encoder.from_preactivation(pre)
