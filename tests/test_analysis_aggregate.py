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


# ----------------------------------------------------------------------------- q(z) from a model's training posteriors


class KnownEncoder(torch.nn.Module):
    """An encoder whose posteriors are given: each row of x is [μ (L), log σ² (L)]."""

    def __init__(self, dim: int):
        super().__init__()
        self.latent_dim, self.p = dim, torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def encode(self, x):
        from vaeviz.distributions import Posterior

        return Posterior(x[:, : self.latent_dim], logvar=x[:, self.latent_dim :])


def _posteriors_of_the_prior(n: int, seed: int, sigma: float = 0.1, dim: int = 2) -> np.ndarray:
    """n posteriors N(μ_i, σ²I) with μ_i ~ N(0, (1 − σ²)I): their mixture's expectation is exactly N(0, I)."""
    mu = np.random.default_rng(seed).standard_normal((n, dim)) * math.sqrt(1 - sigma**2)
    return np.concatenate([mu, np.full((n, dim), 2 * math.log(sigma))], 1)  # (n, 2L) rows [μ, log σ²]


@pytest.mark.parametrize("seed", [0, 1])
def test_holes_and_marginal_kl_vanish_as_components_grow_where_q_is_the_prior(seed):
    """Issue 14's known answer: 200 / 2,000 / 20,000 components gave a marginal KL of 0.403 / 0.068 / 0.009
    nats and a hole fraction of 18.9% / 1.8% / 0.2%. A finite mixture is a sample estimate of q(z): its gaps
    overestimate both, by less as N grows (here nested subsets of one training split, through `_holes`)."""
    from vaeviz.analysis.evaluate import EvalSettings, _holes

    enc, x = KnownEncoder(2), _posteriors_of_the_prior(20_000, seed)
    got = {n: _holes(enc, x, EvalSettings(n_components=n, n_samples=10_000, seed=seed)) for n in (200, 2000, 20_000)}
    assert [got[n]["n_components"] for n in got] == [200, 2000, 20_000]
    holes, kl = [got[n]["hole_fraction"] for n in got], [got[n]["marginal_kl"] for n in got]
    assert holes[0] > holes[1] > holes[2] and kl[0] > kl[1] > kl[2]  # monotone in N
    assert 0.08 < holes[0] < 0.30 and 0.004 < holes[1] < 0.04 and holes[2] < 0.006
    assert 0.25 < kl[0] < 0.70 and 0.035 < kl[1] < 0.13 and 0.0 <= kl[2] < 0.025
    assert kl[0] > 3 * kl[1] > 9 * kl[2]  # about 1/N: each tenfold N cuts the KL by well over 3


def test_fit_aggregate_takes_every_training_posterior_up_to_the_cap():
    from vaeviz.analysis.aggregate import components_that_fit, fit_aggregate

    enc, x = KnownEncoder(2), _posteriors_of_the_prior(300, seed=3)
    small = fit_aggregate(enc, x[:25])  # a small split: all of it
    assert small.n_components_ == 25 and small.bandwidth is None
    np.testing.assert_array_equal(small.mu_, x[:25, :2])
    np.testing.assert_allclose(small.var_, 0.01)
    assert fit_aggregate(enc, x, n_components=120).n_components_ == 120  # the first 120
    assert components_that_fit(2, full=False, max_bytes=8) == 1  # a budget below one component: still one
    assert components_that_fit(2, False, 8 * 11 * 100) == 100  # 11 floats each: K = 5, μ 2, σ² twice 4
    assert fit_aggregate(enc, x, max_bytes=8 * 11 * 100).n_components_ == 100  # what fits in memory
    assert components_that_fit(512, full=True) < 200 < components_that_fit(16, full=True)


def test_log_density_chunks_points_when_features_outnumber_components():
    """A full covariance has L(L+1)/2 + L + 1 features per point: chunks bound those too."""
    rng = np.random.default_rng(10)
    mu, a = rng.normal(size=(3, 6)), rng.normal(size=(3, 6, 6)) * 0.2
    tril = np.tril(a, -1) + np.eye(6)
    z = rng.normal(size=(40, 6))
    oracle = MixtureSameFamily(Categorical(torch.ones(3, dtype=torch.float64)),
                               MultivariateNormal(torch.tensor(mu), scale_tril=torch.tensor(tril)))
    got = AggregatePosterior(chunk_elements=30).fit(mu, scale_tril=tril).log_density(z)  # 28 features > 3 comps
    np.testing.assert_allclose(got, oracle.log_prob(torch.tensor(z)).numpy(), atol=1e-8)
    assert AggregatePosterior().fit(mu, scale_tril=tril).log_density(np.zeros((0, 6))).shape == (0,)
