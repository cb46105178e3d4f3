"""Densities, KL and samplers of gpo_vae.module.distributions against torch and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, NegativeBinomial, Normal, kl_divergence

from gpo_vae.module.distributions import (
    NB_MEAN_EPS,
    bernoulli_log_prob,
    gaussian_kl,
    library_nb_data_part,
    library_nb_log_prob,
    library_nb_mean_part,
    normal_log_prob,
    relaxed_bernoulli_straight_through,
    sample_library_nb,
    standard_normal_log_prob,
)


def library_nb_log_prob_sum(
    x: torch.Tensor, logits: torch.Tensor, library: torch.Tensor, log_theta: torch.Tensor
) -> torch.Tensor:
    """What the decoder computes: data part once per cell plus the fused mean part."""
    return library_nb_data_part(x, log_theta) + library_nb_mean_part(x, logits, library, log_theta)


def test_library_nb_matches_torch_negative_binomial() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.poisson(5.0 * torch.rand(4, 6, generator=g), generator=g).double()
    mean = 10.0 * torch.rand(4, 6, generator=g).double()
    log_theta = torch.randn(6, generator=g).double()
    theta = log_theta.exp()
    # torch's NB: mean = total_count · exp(logits), so logits = log(m / θ) with m = mean + eps
    expected = NegativeBinomial(total_count=theta, logits=torch.log((mean + NB_MEAN_EPS) / theta)).log_prob(x)
    torch.testing.assert_close(library_nb_log_prob(x, mean, log_theta), expected)


def test_library_nb_sum_equals_elementwise_with_library_times_softmax() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.poisson(4.0 * torch.rand(5, 7, generator=g), generator=g).double()
    library = x.sum(1) + 1.0
    logits = torch.randn(3, 5, 7, generator=g).double()
    log_theta = torch.randn(7, generator=g).double()
    mean = torch.softmax(logits, -1) * library.unsqueeze(-1)
    expected = library_nb_log_prob(x, mean, log_theta).sum(-1)
    torch.testing.assert_close(library_nb_log_prob_sum(x, logits, library, log_theta), expected)


def test_library_nb_data_part_handles_all_zero_cells() -> None:
    x = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 7.0]], dtype=torch.float64)
    log_theta = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    theta = log_theta.exp()
    by_hand = (
        torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1.0) + theta * torch.log(theta)
    ).sum(-1)
    torch.testing.assert_close(library_nb_data_part(x, log_theta), by_hand)
    # an all-zero cell keeps only Σ θ log θ
    assert library_nb_data_part(x, log_theta)[0].item() == pytest.approx((theta * theta.log()).sum().item())


def test_library_nb_sum_gradients_match_autograd_of_the_elementwise_form() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.poisson(4.0 * torch.rand(5, 7, generator=g), generator=g).double()
    library = x.sum(1) + 1.0
    logits = torch.randn(3, 5, 7, generator=g).double().requires_grad_()
    log_theta = torch.randn(7, generator=g).double().requires_grad_()
    weights = torch.randn(3, 5, generator=g).double()
    fused = (weights * library_nb_log_prob_sum(x, logits, library, log_theta)).sum()
    fused_grads = torch.autograd.grad(fused, (logits, log_theta))
    plain = (
        weights * library_nb_log_prob(x, torch.softmax(logits, -1) * library.unsqueeze(-1), log_theta).sum(-1)
    ).sum()
    plain_grads = torch.autograd.grad(plain, (logits, log_theta))
    for ours, theirs in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(ours, theirs)
    assert torch.autograd.gradcheck(
        lambda a, b: library_nb_log_prob_sum(x, a, library, b), (logits, log_theta)
    )


def test_normal_log_probs_match_torch() -> None:
    value, loc, scale = torch.tensor([0.3, -1.0]), torch.tensor([1.0, 0.5]), torch.tensor([0.7, 2.0])
    torch.testing.assert_close(normal_log_prob(value, loc, scale), Normal(loc, scale).log_prob(value))
    torch.testing.assert_close(standard_normal_log_prob(value, 2.0), Normal(0.0, 2.0).log_prob(value))


def test_gaussian_kl_is_exact_where_the_reference_formula_is_not() -> None:
    mu1, s1, mu2, s2 = torch.tensor(0.0), torch.tensor(1.0), torch.tensor(1.0), torch.tensor(2.0)
    # by hand: log(2/1) + (1 + 1) / (2 · 4) − 1/2
    by_hand = math.log(2.0) + 2.0 / 8.0 - 0.5
    ours = gaussian_kl(mu1, s1, mu2, s2)
    assert ours.item() == pytest.approx(by_hand)
    torch.testing.assert_close(ours, kl_divergence(Normal(mu1, s1), Normal(mu2, s2)))
    # the reference's kldiv_normal leaves (μ1 − μ2)² undivided by σ2²
    reference = 0.5 * (s1**2 / s2**2 + (mu1 - mu2) ** 2 - 1.0 - torch.log(s1**2 / s2**2))
    assert reference.item() == pytest.approx(by_hand + 0.5 - 0.125)
    assert abs(reference.item() - ours.item()) > 0.3


def test_gaussian_kl_elementwise_matches_torch() -> None:
    g = torch.Generator().manual_seed(3)
    mu1, mu2 = torch.randn(2, 3, 4, generator=g)
    s1, s2 = torch.rand(2, 3, 4, generator=g) + 0.1
    torch.testing.assert_close(gaussian_kl(mu1, s1, mu2, s2), kl_divergence(Normal(mu1, s1), Normal(mu2, s2)))


def test_bernoulli_log_prob_matches_torch_and_is_differentiable_in_the_value() -> None:
    logits = torch.tensor([-2.0, 0.0, 1.5])
    value = torch.tensor([1.0, 0.0, 1.0], requires_grad=True)
    ours = bernoulli_log_prob(value, logits)
    torch.testing.assert_close(ours, Bernoulli(logits=logits).log_prob(value.detach()))
    ours.sum().backward()
    torch.testing.assert_close(value.grad, logits)  # d/dv [v·ℓ − softplus(ℓ)] = ℓ


def test_relaxed_bernoulli_is_hard_with_the_right_frequency_and_a_straight_through_gradient() -> None:
    torch.manual_seed(0)
    logits = torch.tensor([-1.5, 0.0, 2.0], requires_grad=True)
    sample = relaxed_bernoulli_straight_through(logits, temperature=1.0, sample_shape=(20000,))
    assert set(sample.detach().unique().tolist()) <= {0.0, 1.0}
    # P(round(sigmoid(ℓ + logistic noise)) = 1) = sigmoid(ℓ) at temperature 1
    torch.testing.assert_close(sample.detach().mean(0), torch.sigmoid(logits.detach()), atol=0.015, rtol=0)
    sample.sum().backward()
    assert logits.grad is not None and bool((logits.grad > 0).all())


def test_sample_library_nb_has_the_nb_mean_and_variance() -> None:
    torch.manual_seed(0)
    mean = torch.full((40000, 2), 6.0)
    log_theta = torch.log(torch.tensor([2.0, 20.0]))
    counts = sample_library_nb(mean, log_theta)
    assert bool((counts >= 0).all()) and torch.equal(counts, counts.round())
    torch.testing.assert_close(counts.mean(0), torch.full((2,), 6.0), atol=0.1, rtol=0)
    # NB variance m + m²/θ
    torch.testing.assert_close(counts.var(0), torch.tensor([6.0 + 18.0, 6.0 + 1.8]), rtol=0.05, atol=0)
