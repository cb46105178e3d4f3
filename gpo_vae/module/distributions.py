"""Densities, samplers and KL divergences of the model, as plain tensor functions.

Functions take and return tensors (not ``torch.distributions`` objects) so that the hot path can
share work between particles: the terms of a likelihood that depend only on the data are computed
once per batch and broadcast over the particle dimension.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Added to the negative-binomial mean, as in the reference, so that log μ stays finite.
NB_MEAN_EPS = 1e-4
#: Added to a Gaussian variance predicted by an encoder head.
VAR_EPS = 1e-4
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def normal_log_prob(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(value; loc, scale²)."""
    return -0.5 * ((value - loc) / scale) ** 2 - torch.log(scale) - _HALF_LOG_2PI


def standard_normal_log_prob(value: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Elementwise log N(value; 0, scale²) for a constant scale."""
    return -0.5 * (value / scale) ** 2 - (math.log(scale) + _HALF_LOG_2PI)


def gaussian_kl(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(mu1, sigma1²) ‖ N(mu2, sigma2²)).

    ``log(σ₂/σ₁) + (σ₁² + (μ₁ − μ₂)²) / (2σ₂²) − 1/2``: the squared mean difference is divided by
    σ₂² (the reference's counterfactual term omits that factor).
    """
    ratio = (sigma1 / sigma2) ** 2
    return 0.5 * (ratio + ((mu1 - mu2) / sigma2) ** 2 - 1.0 - torch.log(ratio))


def bernoulli_log_prob(value: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Elementwise log Bernoulli(value; sigmoid(logits)), differentiable in value and logits."""
    return value * logits - F.softplus(logits)


def relaxed_bernoulli_straight_through(
    logits: torch.Tensor, temperature: float, sample_shape: tuple[int, ...] = ()
) -> torch.Tensor:
    """Hard {0, 1} sample of a relaxed Bernoulli with the straight-through gradient.

    The forward value is ``round(sigmoid((logits + logistic noise) / temperature))``; the backward
    pass treats it as the relaxed (soft) sample, so gradients reach the logits.
    """
    shape = sample_shape + logits.shape
    eps = torch.finfo(logits.dtype).eps
    uniform = torch.rand(shape, device=logits.device, dtype=logits.dtype).clamp(eps, 1.0 - eps)
    if not (torch.is_grad_enabled() and logits.requires_grad):
        # no gradient to carry: the same value, round(soft), in place (evaluation draws masks of
        # particles × nodes², so each temporary is one such tensor)
        noise = torch.log(uniform)
        noise.sub_(uniform.neg_().log1p_())
        del uniform
        return noise.add_(logits).div_(temperature).sigmoid_().clamp_(eps, 1.0 - eps).round_()
    noise = torch.log(uniform) - torch.log1p(-uniform)
    soft = torch.sigmoid((logits + noise) / temperature).clamp(eps, 1.0 - eps)
    hard = torch.round(soft)
    return hard + (soft - soft.detach())


def library_nb_log_prob(x: torch.Tensor, mean: torch.Tensor, log_concentration: torch.Tensor) -> torch.Tensor:
    """Elementwise log NB(x; mean + eps, θ) with θ = exp(log_concentration) per gene.

    The negative binomial of the reference's ``GammaPoisson(θ, θ / (mean + eps))``:
    ``lgamma(x + θ) − lgamma(θ) − lgamma(x + 1) + θ log θ − (θ + x) log(θ + m) + x log m``
    with m = mean + eps.
    """
    theta = torch.exp(log_concentration)
    m = mean + NB_MEAN_EPS
    return (
        torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
        + theta * torch.log(theta)
        - (theta + x) * torch.log(theta + m)
        + x * torch.log(m)
    )


class _LibraryNBMeanPart(torch.autograd.Function):
    """Σ_g [x log m − (θ + x) log(θ + m)], m = l · softmax(h) + eps, with a hand-written backward.

    Autograd of the same expression keeps about a dozen intermediates the size of the logits and
    makes as many passes over them; here the forward keeps only softmax(h), the backward
    recomputes m and works in place. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, logits, library_size, x, theta):  # type: ignore[override]
        probs = torch.softmax(logits, dim=-1)
        m = probs * library_size.unsqueeze(-1)
        m.add_(NB_MEAN_EPS)
        t = m + theta
        x_part = m.log_().mul_(x).sum(-1)
        theta_part = t.log_().mul_(theta + x).sum(-1)
        ctx.save_for_backward(probs, library_size, x, theta)
        return x_part - theta_part

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        probs, library_size, x, theta = ctx.saved_tensors
        lib = library_size.unsqueeze(-1)
        weight = grad_output.unsqueeze(-1)
        m = probs * lib
        m.add_(NB_MEAN_EPS)
        t = m + theta
        ratio = (theta + x) / t
        grad_theta = None
        if ctx.needs_input_grad[3]:
            # d/dθ of the mean part: −log(θ + m) − (θ + x)/(θ + m), summed over particles and cells
            grad_theta = -t.log_().add_(ratio).mul_(weight).sum(dim=tuple(range(t.dim() - 1)))
        grad_logits = None
        if ctx.needs_input_grad[0]:
            # d/dm = x/m − (θ + x)/(θ + m); through m = l p + eps and the softmax Jacobian
            grad_m = m.reciprocal_().mul_(x).sub_(ratio).mul_(weight * lib)
            inner = torch.linalg.vecdot(probs, grad_m).unsqueeze(-1)
            grad_logits = grad_m.sub_(inner).mul_(probs)
        return grad_logits, None, None, grad_theta


def library_nb_data_part(x: torch.Tensor, log_concentration: torch.Tensor) -> torch.Tensor:
    """Σ_g [lgamma(x + θ) − lgamma(θ) − lgamma(x + 1) + θ log θ] per cell, (B,).

    The part of the NB log-likelihood that does not involve the mean. A zero count contributes
    only θ log θ, so the lgamma terms are evaluated on the non-zero entries alone.
    """
    theta = torch.exp(log_concentration)
    cells, genes = torch.nonzero(x, as_tuple=True)
    counts = x[cells, genes]
    theta_nz = theta[genes]
    per_entry = torch.lgamma(counts + theta_nz) - torch.lgamma(theta_nz) - torch.lgamma(counts + 1.0)
    nonzero_part = torch.zeros(x.shape[0], dtype=per_entry.dtype, device=x.device).index_add(
        0, cells, per_entry
    )
    return nonzero_part + (theta * torch.log(theta)).sum()


def library_nb_mean_part(
    x: torch.Tensor, logits: torch.Tensor, library_size: torch.Tensor, log_concentration: torch.Tensor
) -> torch.Tensor:
    """Σ_g [x log m − (θ + x) log(θ + m)] with m = library_size × softmax(logits) + eps.

    Shape ``logits.shape[:-1]``; a fused autograd function (see :class:`_LibraryNBMeanPart`),
    differentiable in ``logits`` and ``log_concentration``.
    """
    theta = torch.exp(log_concentration)
    return _LibraryNBMeanPart.apply(logits, library_size.to(logits.dtype), x.to(logits.dtype), theta)


def sample_library_nb(mean: torch.Tensor, log_concentration: torch.Tensor) -> torch.Tensor:
    """Counts from NB(mean + eps, θ) as a Gamma-Poisson mixture (float tensor of integers)."""
    theta = torch.exp(log_concentration).expand_as(mean)
    rate = torch.distributions.Gamma(theta, theta / (mean + NB_MEAN_EPS)).sample()
    return torch.poisson(rate)
