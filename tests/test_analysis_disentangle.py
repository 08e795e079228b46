"""MIG on aligned and random codes; the MI/TC/dimKL decomposition against Gaussian closed forms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from vaeviz.analysis.disentangle import (
    discretize,
    entropy,
    factor_levels,
    kl_decomposition,
    mig,
    mutual_information,
)
from vaeviz.distributions import kl_diag_std_normal


def _factors(repeats=20):
    """A full factorial design of three factors with 3, 4 and 5 levels (independent by construction)."""
    grid = np.array(list(itertools.product(range(3), range(4), range(5))), dtype=float)
    return np.tile(grid, (repeats, 1))


def test_mig_is_one_for_a_factor_aligned_code():
    v = _factors()
    codes = np.concatenate([v[:, [2, 0, 1]] * 0.7 - 1.0, np.zeros((len(v), 1))], 1)  # permuted, scaled, + dead dim
    assert mig(codes, v) == pytest.approx(1.0, abs=1e-12)


def test_mig_is_small_for_a_random_code():
    v = np.random.default_rng(0).integers(0, 5, size=(10_000, 3))
    codes = np.random.default_rng(1).normal(size=(10_000, 4))
    assert 0.0 <= mig(codes, v) < 0.05


def test_mig_drops_when_one_code_holds_two_factors():
    v = _factors()
    mixed = np.stack([v[:, 0] * 5 + v[:, 2], v[:, 1], v[:, 2]], 1)  # code 0 knows factors 0 and 2
    assert mig(mixed, v) < 0.7


def test_plug_in_information_and_entropy():
    a = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    assert entropy(a) == pytest.approx(math.log(4))
    assert mutual_information(a, a) == pytest.approx(math.log(4))
    assert mutual_information(a, a // 2) == pytest.approx(math.log(2))
    assert mutual_information(a, np.array([0, 1] * 4)) == pytest.approx(0.0, abs=1e-12)


def test_discretize_and_factor_levels():
    x = np.array([[0.0, 5.0], [0.5, 5.0], [1.0, 5.0]])
    np.testing.assert_array_equal(discretize(x, 4), [[0, 0], [2, 0], [3, 0]])
    levels = factor_levels(np.array([[0.3, 0.0], [0.1, 1.0], [0.3, 2.0]]))
    np.testing.assert_array_equal(levels, [[1, 0], [0, 1], [1, 2]])
    assert factor_levels(np.linspace(0, 1, 100), max_levels=20).max() == 19


def test_decomposition_is_zero_when_every_posterior_is_the_prior():
    out = kl_decomposition(np.zeros((50, 3)), np.zeros((50, 3)))
    for key in ("mi", "tc", "dim_kl", "kl"):
        assert abs(out[key]) < 1e-12


def test_decomposition_matches_gaussian_closed_forms():
    """μ ~ N(0, C), q(z|x) = N(μ, s²I) -> q(z) = N(0, C + s²I): MI, TC and dimKL in closed form."""
    cov, s2, n = np.array([[1.0, 0.8], [0.8, 1.0]]), 0.3, 2000
    mu = np.random.default_rng(0).multivariate_normal([0, 0], cov, size=n)
    logvar = np.full((n, 2), math.log(s2))
    sig = cov + s2 * np.eye(2)
    out = kl_decomposition(mu, logvar, seed=1, chunk=300)
    assert out["mi"] == pytest.approx(0.5 * math.log(np.linalg.det(sig) / s2**2), abs=0.05)
    assert out["tc"] == pytest.approx(0.5 * (np.log(np.diag(sig)).sum() - math.log(np.linalg.det(sig))), abs=0.03)
    assert out["dim_kl"] == pytest.approx(sum(0.5 * (v - 1 - math.log(v)) for v in np.diag(sig)), abs=0.02)
    rate = float(kl_diag_std_normal(torch.tensor(mu), torch.tensor(logvar)).mean())
    assert out["kl"] == pytest.approx(out["mi"] + out["tc"] + out["dim_kl"])
    assert out["kl"] == pytest.approx(rate, abs=0.05)


def test_independent_codes_have_small_total_correlation():
    mu = np.random.default_rng(2).normal(size=(2000, 3))
    out = kl_decomposition(mu, np.full((2000, 3), math.log(0.3)), seed=3)
    assert abs(out["tc"]) < 0.03


@pytest.mark.parametrize("full", [False, True])
def test_decomposition_agrees_with_the_beta_tcvae_estimator_on_the_whole_split(full):
    """Same samples, uniform weights 1/N: the chunked analysis estimator equals the objective's."""
    from vaeviz.distributions import Posterior
    from vaeviz.objectives.beta_tcvae import kl_decomposition as objective_decomposition

    rng = np.random.default_rng(4)
    n, dim = 120, 3
    mu, logvar = rng.normal(size=(n, dim)), rng.normal(-1.0, 0.3, size=(n, dim))
    tril = np.tril(rng.normal(size=(n, dim, dim)) * 0.2, -1) + np.eye(dim) * np.exp(0.5 * logvar)[:, None]
    q = Posterior(torch.tensor(mu), scale_tril=torch.tensor(tril) if full else None,
                  logvar=None if full else torch.tensor(logvar))
    z = q.rsample(generator=torch.Generator().manual_seed(0))
    uniform = torch.full((n, n), -math.log(n), dtype=torch.float64)  # log w_ij = −log N
    want = [float(t.mean()) for t in objective_decomposition(z, q, uniform)]
    got = kl_decomposition(mu, scale_tril=tril, z=z, chunk=7) if full else kl_decomposition(mu, logvar, z=z, chunk=7)
    np.testing.assert_allclose([got["mi"], got["tc"], got["dim_kl"]], want, rtol=1e-9, atol=1e-9)
    assert got["kl"] == pytest.approx(float((q.log_prob(z) - (-0.5 * (z**2 + math.log(2 * math.pi))).sum(-1)).mean()))
