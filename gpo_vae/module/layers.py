"""Building blocks shared by the encoders and the decoder: residual MLP trunk and Gaussian head.

Layer layout follows the reference: a block is ``Linear → LeakyReLU``; after the first block every
block adds its input back (residual). An encoder of "n layers × h" has n blocks; the decoder of
"n layers × h" has n + 1 (the input block plus n residual hidden layers), then a linear output.
The first block's ``Linear`` is owned by the caller so that it can be applied to the pieces of a
concatenated input separately (see :func:`linear_columns`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gpo_vae.module.distributions import VAR_EPS


def linear_columns(layer: nn.Linear, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """``x @ W[:, start:stop].T``: the contribution of one slice of a concatenated input, no bias.

    Lets a layer defined on ``[a, b]`` be evaluated as ``W_a a + W_b b + bias``, so that a part
    shared by several inputs (the cell's counts across particles) is multiplied only once.
    """
    return F.linear(x, layer.weight[:, start:stop])


class ResidualTrunk(nn.Module):
    """LeakyReLU of the first block's pre-activation, then ``n_residual`` residual blocks.

    Parameters
    ----------
    n_hidden
        Width of every block.
    n_residual
        Number of residual blocks ``h ← h + LeakyReLU(W h + b)``.
    """

    def __init__(self, n_hidden: int, n_residual: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(n_hidden, n_hidden) for _ in range(n_residual))

    def forward(self, preactivation: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(preactivation)
        for block in self.blocks:
            h = h + F.leaky_relu(block(h))
        return h


class GaussianHead(nn.Module):
    """Mean and standard deviation ``sqrt(exp(log_var) + 1e-4)`` from a hidden representation."""

    def __init__(self, n_hidden: int, n_output: int) -> None:
        super().__init__()
        self.loc = nn.Linear(n_hidden, n_output)
        self.log_var = nn.Linear(n_hidden, n_output)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # float32 even under autocast: these parameters feed log densities and KL terms
        loc = self.loc(h).float()
        scale = torch.sqrt(torch.exp(self.log_var(h).float()) + VAR_EPS)
        return loc, scale


class GaussianMLP(nn.Module):
    """Residual MLP with a Gaussian output: ``n_layers`` blocks of width ``n_hidden``.

    Parameters
    ----------
    n_input, n_output
        Input width and output (latent) width.
    n_layers
        Number of blocks (≥ 1); the first maps the input to ``n_hidden``.
    n_hidden
        Width of the blocks.
    """

    def __init__(self, n_input: int, n_output: int, n_layers: int, n_hidden: int) -> None:
        super().__init__()
        self.first = nn.Linear(n_input, n_hidden)
        self.trunk = ResidualTrunk(n_hidden, n_layers - 1)
        self.head = GaussianHead(n_hidden, n_output)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.from_preactivation(self.first(x))

    def from_preactivation(self, preactivation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Finish the network from the first block's pre-activation ``W x + b``."""
        return self.head(self.trunk(preactivation))
