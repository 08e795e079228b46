"""Distribution maths against torch.distributions oracles."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, MultivariateNormal, Normal, kl_divergence

from vaeviz.distributions import (
    Posterior,
    bernoulli_nll,
    gaussian_nll,
    kl_diag_std_normal,
    kl_full_std_normal,
    log_mean_exp,
    log_normal_full,
    sigma_free_nll,
)


def _random_tril(b, l, gen):
    a = torch.randn(b, l, l, generator=gen, dtype=torch.float64)
    tril = torch.tril(a, -1) + torch.diag_embed(torch.rand(b, l, generator=gen, dtype=torch.float64) + 0.3)
    return tril


@pytest.mark.parametrize("l", [1, 2, 7])
def test_kl_diag_matches_torch(l):
    g = torch.Generator().manual_seed(l)
    mu, logvar = torch.randn(64, l, generator=g), torch.randn(64, l, generator=g)
    ours = kl_diag_std_normal(mu, logvar)
    q = Normal(mu, torch.exp(0.5 * logvar))
    oracle = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    torch.testing.assert_close(ours, oracle, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("l", [1, 2, 5])
def test_kl_full_matches_torch(l):
    g = torch.Generator().manual_seed(10 + l)
    mu, tril = torch.randn(32, l, generator=g, dtype=torch.float64), _random_tril(32, l, g)
    ours = kl_full_std_normal(mu, tril)
    q = MultivariateNormal(mu, scale_tril=tril)
    p = MultivariateNormal(torch.zeros(l, dtype=torch.float64), torch.eye(l, dtype=torch.float64))
    torch.testing.assert_close(ours, kl_divergence(q, p), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(Posterior(mu, scale_tril=tril).kl(), kl_divergence(q, p), atol=1e-5, rtol=1e-5)


def test_full_log_density_and_samples_match_torch():
    g = torch.Generator().manual_seed(3)
    mu, tril = torch.randn(16, 3, generator=g, dtype=torch.float64), _random_tril(16, 3, g)
    q = Posterior(mu, scale_tril=tril)
    z = q.rsample(4)  # (4, 16, 3)
    oracle = MultivariateNormal(mu, scale_tril=tril).log_prob(z)
    torch.testing.assert_close(log_normal_full(z, mu, tril), oracle, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(q.log_prob(z), oracle, atol=1e-8, rtol=1e-8)


def test_full_covariance_samples_have_the_covariance():
    torch.manual_seed(0)
    tril = torch.tensor([[[1.0, 0.0], [0.8, 0.5]]], dtype=torch.float64)
    z = Posterior(torch.zeros(1, 2, dtype=torch.float64), scale_tril=tril).rsample(200_000)[:, 0]
    torch.testing.assert_close(torch.cov(z.T), (tril @ tril.mT)[0], atol=0.01, rtol=0.02)


def test_diag_log_prob_matches_torch():
    g = torch.Generator().manual_seed(4)
    mu, logvar = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    z = torch.randn(5, 8, 4, generator=g)
    oracle = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    torch.testing.assert_close(Posterior(mu, logvar).log_prob(z), oracle, atol=1e-5, rtol=1e-5)


def test_gaussian_nll_is_eq4_and_matches_torch():
    g = torch.Generator().manual_seed(5)
    x, mean = torch.rand(10, 6, generator=g), torch.rand(10, 6, generator=g)
    log_sigma = torch.randn(6, generator=g) * 0.3
    oracle = -Normal(mean, log_sigma.exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(gaussian_nll(x, mean, log_sigma), oracle, atol=1e-5, rtol=1e-5)
    sigma = 0.2  # eq. 4 by hand with a global σ
    by_hand = 6 / 2 * math.log(2 * math.pi) + 6 * math.log(sigma) + (x - mean).pow(2).sum(-1) / (2 * sigma**2)
    torch.testing.assert_close(gaussian_nll(x, mean, math.log(sigma)), by_hand, atol=1e-4, rtol=1e-5)


def test_bernoulli_nll_matches_torch_on_binary_data():
    g = torch.Generator().manual_seed(6)
    x, logits = (torch.rand(10, 6, generator=g) > 0.5).float(), torch.randn(10, 6, generator=g)
    oracle = -Bernoulli(logits=logits).log_prob(x).sum(-1)
    torch.testing.assert_close(bernoulli_nll(x, logits), oracle, atol=1e-5, rtol=1e-5)


def test_log_mean_exp_and_sigma_free_nll():
    x = torch.tensor([[0.0, math.log(3.0)]])
    assert float(log_mean_exp(x, 1)) == pytest.approx(math.log(2.0))
    # σ*² = 0.01 over 4 examples × 5 dims; NLL* = d/2 (log 2πσ*² + 1)
    assert sigma_free_nll(0.01 * 20, 4, 5) == pytest.approx(2.5 * (math.log(2 * math.pi * 0.01) + 1))


def test_deterministic_posterior():
    q = Posterior(torch.ones(3, 2))
    assert q.deterministic and torch.equal(q.rsample(), q.mu) and torch.equal(q.kl(), torch.zeros(3))
