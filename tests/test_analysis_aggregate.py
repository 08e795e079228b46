"""Aggregate posterior densities, holes and marginal KL against torch.distributions and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch.distributions import Categorical, Independent, MixtureSameFamily, MultivariateNormal, Normal

from vaeviz.analysis.aggregate import AggregatePosterior, log_prior


def _diag_mixture(n=50, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)), rng.normal(-1.0, 0.5, size=(n, dim))


def _oracle_diag(mu, logvar):
    comps = Independent(Normal(torch.tensor(mu), torch.tensor(np.exp(0.5 * logvar))), 1)
    return MixtureSameFamily(Categorical(torch.ones(len(mu), dtype=torch.float64)), comps)


def test_single_standard_posterior_equals_prior_on_grid():
    agg = AggregatePosterior().fit(np.zeros((1, 2)), np.zeros((1, 2)))
    g = agg.grid(bounds=4.0, resolution=64)
    assert g.log_q.shape == (64, 64) and g.xs[0] == -4.0 and g.ys[-1] == 4.0
    np.testing.assert_allclose(g.log_q, g.log_p, atol=1e-5)
    full = AggregatePosterior().fit(np.zeros((1, 3)), scale_tril=np.eye(3)[None])
    np.testing.assert_allclose(full.grid(4.0, 32, dims=(0, 2)).log_ratio, 0.0, atol=1e-5)


def test_log_density_matches_mixture_oracle_diag_and_full():
    mu, logvar = _diag_mixture()
    z = np.random.default_rng(1).normal(size=(200, 3)) * 2
    oracle = _oracle_diag(mu, logvar).log_prob(torch.tensor(z)).numpy()
    np.testing.assert_allclose(AggregatePosterior(chunk_elements=64).fit(mu, logvar).log_density(z), oracle, atol=1e-8)
    a = np.random.default_rng(2).normal(size=(50, 3, 3)) * 0.4
    tril = np.tril(a, -1) + np.eye(3) * np.exp(np.random.default_rng(3).normal(-0.5, 0.3, size=(50, 1, 3)))
    mvn = MultivariateNormal(torch.tensor(mu), scale_tril=torch.tensor(tril))
    oracle = MixtureSameFamily(Categorical(torch.ones(50, dtype=torch.float64)), mvn).log_prob(torch.tensor(z))
    np.testing.assert_allclose(AggregatePosterior().fit(mu, scale_tril=tril).log_density(z), oracle.numpy(), atol=1e-8)


def test_grid_fast_path_matches_pointwise_density_even_far_from_components():
    rng = np.random.default_rng(4)
    mu = np.concatenate([rng.normal(size=(300, 2)), [[0.0, 9.0], [9.0, 0.0]]])  # two far, narrow outliers
    logvar = np.concatenate([np.full((300, 2), -3.0), np.full((2, 2), 2 * np.log(0.01))])
    agg = AggregatePosterior().fit(mu, logvar)
    g = agg.grid(((-2.0, 10.0), (-3.0, 10.0)), resolution=97)
    gx, gy = np.meshgrid(g.xs, g.ys)
    exact = agg.log_density(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(gx.shape)
    assert np.isfinite(g.log_q).all() and g.log_q.min() < -745  # exp() underflows there: handled exactly
    np.testing.assert_allclose(g.log_q, exact, rtol=1e-9, atol=1e-9)


def test_marginal_on_two_dims_matches_oracle_for_full_covariance():
    mu = np.random.default_rng(5).normal(size=(20, 4))
    a = np.random.default_rng(6).normal(size=(20, 4, 4)) * 0.3
    tril = np.tril(a, -1) + np.eye(4) * 0.7
    cov = torch.tensor(tril @ np.swapaxes(tril, 1, 2))[:, [1, 3]][:, :, [1, 3]]
    oracle = MixtureSameFamily(Categorical(torch.ones(20)), MultivariateNormal(torch.tensor(mu[:, [1, 3]]), cov))
    g = AggregatePosterior().fit(mu, scale_tril=tril).grid(3.0, 16, dims=(1, 3))
    gx, gy = np.meshgrid(g.xs, g.ys)
    want = oracle.log_prob(torch.tensor(np.stack([gx, gy], -1))).numpy()
    np.testing.assert_allclose(g.log_q, want, atol=1e-8)


def test_hole_fraction_zero_when_q_is_the_prior():
    agg = AggregatePosterior().fit(np.zeros((1, 5)), np.zeros((1, 5)))
    assert agg.hole_fraction(tau=0.1, n_samples=5000) == 0.0
    np.testing.assert_allclose(agg.log_ratio(np.random.default_rng(0).normal(size=(10, 5))), 0.0, atol=1e-12)


def test_hole_fraction_is_the_prior_mass_of_an_uncovered_half_space():
    """q = prior truncated to z₁ > a (narrow components at its quantiles, exact N(0,1) in z₂, z₃)."""
    a, n = 0.3, 1000
    u = norm.cdf(a) + (1 - norm.cdf(a)) * (np.arange(n) + 0.5) / n
    mu = np.zeros((n, 3))
    mu[:, 0] = norm.ppf(u)
    logvar = np.zeros((n, 3))
    logvar[:, 0] = 2 * np.log(0.01)
    agg = AggregatePosterior().fit(mu, logvar)
    assert agg.hole_fraction(tau=0.1, n_samples=10_000, seed=1) == pytest.approx(norm.cdf(a), abs=0.02)


def test_marginal_kl_zero_for_prior_and_analytic_for_shifted_gaussian():
    prior = AggregatePosterior().fit(np.zeros((1, 2)), np.zeros((1, 2)))
    assert abs(prior.marginal_kl(n_samples=2000)) < 1e-12
    m, s2, dim = np.array([1.0, -0.5, 0.2]), 0.6, 3
    shifted = AggregatePosterior().fit(m[None], np.full((1, dim), np.log(s2)))
    analytic = 0.5 * (dim * s2 + m @ m - dim - dim * math.log(s2))
    assert shifted.marginal_kl(n_samples=20_000, seed=2) == pytest.approx(analytic, rel=0.05)
    # a mixture of identical components is the same single Gaussian
    many = AggregatePosterior().fit(np.repeat(m[None], 100, 0), np.full((100, dim), np.log(s2)))
    assert many.marginal_kl(n_samples=20_000, seed=2) == pytest.approx(analytic, rel=0.05)


def test_sample_draws_from_the_mixture():
    mu = np.array([[-2.0, 0.0], [2.0, 0.0]])
    z = AggregatePosterior().fit(mu, np.full((2, 2), np.log(0.25))).sample(40_000, seed=3)
    assert z.mean(0) == pytest.approx([0.0, 0.0], abs=0.03)
    assert z.var(0) == pytest.approx([4.25, 0.25], rel=0.03)  # between-component 4 + within 0.25


def test_deterministic_codes_need_a_bandwidth():
    mu = np.random.default_rng(7).normal(size=(30, 2))
    with pytest.raises(ValueError, match="deterministic.*bandwidth"):
        AggregatePosterior().fit(mu)
    kde = AggregatePosterior(bandwidth=0.3).fit(mu)
    oracle = _oracle_diag(mu, np.full_like(mu, 2 * np.log(0.3)))
    np.testing.assert_allclose(kde.log_density(mu), oracle.log_prob(torch.tensor(mu)).numpy(), atol=1e-9)
    scott = AggregatePosterior(bandwidth="scott").fit(mu)
    np.testing.assert_allclose(scott.var_[0], (mu.std(0, ddof=1) * 30 ** (-1 / 6)) ** 2)


def test_log_prior_and_hole_mask():
    z = np.array([[0.0, 0.0], [1.0, 2.0]])
    np.testing.assert_allclose(log_prior(z), [-math.log(2 * math.pi), -math.log(2 * math.pi) - 2.5])
    g = AggregatePosterior().fit(np.array([[2.0, 0.0]]), np.zeros((1, 2))).grid(3.0, 7)
    mask = g.hole_mask(tau=0.1)  # log q/p = 2x − 2 < log 0.1  ⇔  x < 1 − 1.151
    np.testing.assert_array_equal(mask, np.broadcast_to(g.xs < 1 + math.log(0.1) / 2, mask.shape))


def test_grid_on_an_orthonormal_projection_matches_the_projected_mixture():
    mu, logvar = _diag_mixture(n=30, dim=3, seed=8)
    basis, _ = np.linalg.qr(np.random.default_rng(9).normal(size=(3, 2)))
    g = AggregatePosterior().fit(mu, logvar).grid(3.0, 12, basis=basis)
    cov = torch.tensor(basis.T @ (np.exp(logvar)[:, :, None] * np.eye(3)) @ basis)
    oracle = MixtureSameFamily(Categorical(torch.ones(30)), MultivariateNormal(torch.tensor(mu @ basis), cov))
    gx, gy = np.meshgrid(g.xs, g.ys)
    np.testing.assert_allclose(g.log_q, oracle.log_prob(torch.tensor(np.stack([gx, gy], -1))).numpy(), atol=1e-8)
    np.testing.assert_allclose(g.log_p, log_prior(np.stack([gx, gy], -1).reshape(-1, 2)).reshape(12, 12))
    with pytest.raises(ValueError, match="orthonormal"):
        AggregatePosterior().fit(mu, logvar).grid(3.0, 4, basis=2 * basis)
