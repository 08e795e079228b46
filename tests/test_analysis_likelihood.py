"""ELBO, σ-free NLL, IWAE and active units against a linear-Gaussian model with closed-form log p(x)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

from vaeviz.analysis.likelihood import active_units, elbo_terms, iwae_bound, iwae_per_example, sigma_free_nll
from vaeviz.distributions import Posterior, gaussian_nll, kl_diag_std_normal
from vaeviz.nets import DecoderOut
from vaeviz.objectives.base import Objective

SIGMA = 0.5


class LinearGaussian(nn.Module):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s²I); q(z|x) exact (full) or a shifted, widened diagonal."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, exact: bool):
        super().__init__()
        self.w, self.b, self.exact = nn.Parameter(w), nn.Parameter(b), exact
        self.dim, self.latent_dim = w.shape
        self.cov = torch.linalg.inv(torch.eye(self.latent_dim) + w.T @ w / SIGMA**2)  # exact posterior Σ

    def encode(self, x):
        mu = (x - self.b) @ self.w @ self.cov / SIGMA**2  # Σ Wᵀ(x − b)/s², (B, L)
        if self.exact:
            return Posterior(mu, scale_tril=torch.linalg.cholesky(self.cov).expand(len(x), -1, -1))
        logvar = torch.log(1.5 * torch.diagonal(self.cov)).expand(len(x), -1)
        return Posterior(mu + 0.3, logvar=logvar)

    def decode(self, z):
        return DecoderOut(z @ self.w.T + self.b)

    def decode_mean(self, z):
        return torch.sigmoid(self.decode(z).logits)


@dataclass
class _NoParams:
    pass


class IdentityGaussian(Objective):
    """−log N(x; logits, s²I): a Gaussian decoder whose mean is the raw output (no sigmoid)."""

    def nll(self, p):
        return gaussian_nll(p.x, p.out.logits, math.log(SIGMA))


def _setup(exact: bool, n: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(5, 2, generator=g), torch.randn(5, generator=g)
    model = LinearGaussian(w, b, exact)
    z = torch.randn(n, 2, generator=g)
    x = z @ w.T + b + SIGMA * torch.randn(n, 5, generator=g)
    log_px = MultivariateNormal(b, w @ w.T + SIGMA**2 * torch.eye(5)).log_prob(x)  # closed form
    return model, IdentityGaussian(_NoParams(), 5), x, log_px


def test_iwae_exact_posterior_equals_log_px_for_every_example():
    model, obj, x, log_px = _setup(exact=True)
    got = iwae_per_example(model, obj, x, k=1)
    np.testing.assert_allclose(got, log_px.numpy(), atol=1e-3)


def test_iwae_bounds_are_ordered_and_tight():
    model, obj, x, log_px = _setup(exact=False)
    elbo = elbo_terms(model, obj, x)["elbo"]
    iwae10, iwae1000 = iwae_bound(model, obj, x, k=10), iwae_bound(model, obj, x, k=1000, chunk=4096)
    truth = float(log_px.mean())
    assert elbo <= iwae10 <= iwae1000 <= truth + 0.05
    assert abs(iwae1000 - truth) < 0.5
    assert elbo < truth - 0.5  # the encoder is deliberately off, so the bounds have room to differ


def test_iwae_chunking_does_not_change_the_estimate():
    model, obj, x, _ = _setup(exact=False, n=50)
    a = iwae_per_example(model, obj, x, k=64, chunk=50 * 64)
    b = iwae_per_example(model, obj, x, k=64, chunk=7)
    c = iwae_per_example(model, obj, x, k=64, batch=3)
    assert a.shape == (50,)
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-5)  # the noise of example i is fixed: the same samples
    np.testing.assert_allclose(c, a, rtol=1e-6, atol=1e-5)
    assert not np.allclose(iwae_per_example(model, obj, x, k=64, seed=1), a, atol=1e-3)  # another seed: others


def test_elbo_terms_do_not_depend_on_the_chunk_size():
    model, obj, x, _ = _setup(exact=False, n=300)
    whole = elbo_terms(model, obj, x, batch=300)
    for batch in (1, 7, 256):
        got = elbo_terms(model, obj, x, batch=batch)
        for key, value in whole.items():
            assert got[key] == pytest.approx(value, rel=1e-6), (batch, key)


def test_elbo_terms_match_the_closed_form_elbo():
    model, obj, x, _ = _setup(exact=False, n=4000)
    q = model.encode(x)
    var = q.logvar.exp()
    with torch.no_grad():  # E_q −log p(x|z) = d/2 log 2πs² + (‖x − Wμ − b‖² + tr(W diag(v) Wᵀ)) / 2s²
        resid = (x - q.mu @ model.w.T - model.b).pow(2).sum(1) + (model.w.pow(2) @ var.T).sum(0)
        dist = 2.5 * math.log(2 * math.pi * SIGMA**2) + resid / (2 * SIGMA**2)
        rate = kl_diag_std_normal(q.mu, q.logvar)
    got = elbo_terms(model, obj, x, batch=512)
    assert got["rate"] == pytest.approx(float(rate.mean()), rel=1e-5)
    assert got["distortion"] == pytest.approx(float(dist.mean()), rel=0.02)
    assert got["elbo"] == pytest.approx(-got["rate"] - got["distortion"])


class HalfDecoder(nn.Module):
    """Decodes everything to 0.5 (logits 0): MSE = mean (x − 0.5)²."""

    dim, latent_dim = 6, 2

    def encode(self, x):
        return Posterior(torch.zeros(len(x), 2))

    def decode(self, z):
        return DecoderOut(torch.zeros(len(z), 6))


def test_sigma_free_nll_closed_form():
    x = torch.rand(100, 6, generator=torch.Generator().manual_seed(1))
    obj = IdentityGaussian(_NoParams(), 6)
    sigma2 = float((x - 0.5).double().pow(2).mean())
    expected = 3.0 * (math.log(2 * math.pi * sigma2) + 1.0)
    assert sigma_free_nll(HalfDecoder(), obj, x, batch=33) == pytest.approx(expected, rel=1e-9)
    x_train = 0.5 + 0.5 * (x - 0.5)  # half the error: σ*² of the training split is a quarter of x's MSE
    expected = 3.0 * (math.log(2 * math.pi * sigma2 / 4) + 4.0)  # d/2 (log 2πσ*² + r), r = MSE_x / MSE_train = 4
    assert sigma_free_nll(HalfDecoder(), obj, x, batch=33, x_train=x_train) == pytest.approx(expected, rel=1e-6)


def test_deterministic_encoder_has_no_iwae():
    with pytest.raises(ValueError, match="deterministic"):
        iwae_bound(HalfDecoder(), IdentityGaussian(_NoParams(), 6), torch.rand(4, 6), k=3)


def test_active_units_threshold():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(5000, 4)) * np.array([1.0, 0.03, 0.5, 0.2])  # variances 1, 9e-4, .25, .04
    assert active_units(mu) == 3
    assert active_units(mu, threshold=0.1) == 2
    assert active_units(mu[:1]) == 0
