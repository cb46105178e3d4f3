"""The decoder p(x | z): residual MLP, then a likelihood over the G genes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gpo_vae.module.config import Likelihood
from gpo_vae.module.distributions import (
    VAR_EPS,
    library_nb_data_part,
    library_nb_mean_part,
    normal_log_prob,
    sample_library_nb,
)
from gpo_vae.module.layers import ResidualTrunk


class Decoder(nn.Module):
    """Residual MLP (LeakyReLU) from the latent to the parameters of p(x | z).

    ``library_nb``: mean = library size × softmax(W h + b), one learned log-concentration per
    gene. ``poisson``: rate = softplus(W h + b). ``normal``: mean and variance exp(·) + 1e-4.
    As in the reference, only ``library_nb`` uses the library size.

    Parameters
    ----------
    n_input
        Width of the decoder input (L + C + L in concat mode, L in sum mode).
    n_genes
        G.
    n_layers
        Residual hidden layers (the published "1 layer × 400" is one).
    n_hidden
        Width of the hidden layers.
    likelihood
        ``library_nb``, ``poisson`` or ``normal``.
    """

    def __init__(
        self, n_input: int, n_genes: int, n_layers: int, n_hidden: int, likelihood: Likelihood
    ) -> None:
        super().__init__()
        self.likelihood = likelihood
        self.first = nn.Linear(n_input, n_hidden)
        self.trunk = ResidualTrunk(n_hidden, n_layers)
        self.out = nn.Linear(n_hidden, n_genes)
        if likelihood == "library_nb":
            self.log_concentration = nn.Parameter(torch.zeros(n_genes))
        elif likelihood == "normal":
            self.out_log_var = nn.Linear(n_hidden, n_genes)

    def _params(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (library_nb), rate (poisson) or mean and standard deviation (normal)."""
        h = self.trunk(self.first(z))
        # the likelihood is evaluated in float32 even under bf16 autocast
        raw = self.out(h).float()
        if self.likelihood == "library_nb":
            return raw, None
        if self.likelihood == "poisson":
            return F.softplus(raw), None
        return raw, torch.sqrt(torch.exp(self.out_log_var(h).float()) + VAR_EPS)

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor, library_size: torch.Tensor) -> torch.Tensor:
        """Σ over genes of log p(x | z), shape ``z.shape[:-1]``.

        ``z`` is (K, B, n_input) or (B, n_input), ``x`` (B, G) counts, ``library_size`` (B,).
        Particles are decoded one at a time: every (B, G) intermediate then stays small enough
        for the allocator to recycle its memory, where (K, B, G) blocks would be mapped afresh
        (and page-faulted in) on every step; the GEMMs keep B rows each.
        """
        particles = z.unbind(0) if z.dim() == 3 else (z,)
        if self.likelihood == "library_nb":
            data_part = library_nb_data_part(x, self.log_concentration)
            parts = [
                data_part
                + library_nb_mean_part(x, self._params(z_k)[0], library_size, self.log_concentration)
                for z_k in particles
            ]
        else:
            parts = [self._simple_log_likelihood(z_k, x) for z_k in particles]
        return torch.stack(parts) if z.dim() == 3 else parts[0]

    def _simple_log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        first, second = self._params(z)
        if self.likelihood == "poisson":
            return (torch.xlogy(x, first) - first).sum(-1) - torch.lgamma(x + 1.0).sum(-1)
        assert second is not None
        return normal_log_prob(x, first, second).sum(-1)

    def mean(self, z: torch.Tensor, library_size: torch.Tensor) -> torch.Tensor:
        """Expected counts E[x | z], shape (..., G)."""
        first, _ = self._params(z)
        if self.likelihood == "library_nb":
            return torch.softmax(first, dim=-1) * library_size.unsqueeze(-1)
        return first

    def sample(self, z: torch.Tensor, library_size: torch.Tensor) -> torch.Tensor:
        """One draw of x | z per row of ``z`` (integer-valued for the count likelihoods)."""
        if self.likelihood == "library_nb":
            return sample_library_nb(self.mean(z, library_size), self.log_concentration.float())
        first, second = self._params(z)
        if self.likelihood == "poisson":
            return torch.poisson(first)
        assert second is not None
        return first + second * torch.randn_like(first)
