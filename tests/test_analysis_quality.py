"""Fréchet distance against scipy's sqrtm and closed forms; the cached digits classifier."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.datasets import load_digits
from torch import nn

from vaeviz.analysis import quality
from vaeviz.analysis.quality import (
    SampleClassifier,
    classifier_key,
    frechet_by_sampler,
    frechet_distance,
    gaussian_frechet,
    load_or_fit_classifier,
    reconstruction_accuracy,
    sample_frechet,
)
from vaeviz.config import DataConfig
from vaeviz.distributions import Posterior
from vaeviz.samplers import GaussianSampler, GMMSampler


def _random_cov(dim, seed):
    a = np.random.default_rng(seed).normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def test_gaussian_frechet_matches_sqrtm_formula():
    rng = np.random.default_rng(0)
    mu_a, mu_b, cov_a, cov_b = rng.normal(size=6), rng.normal(size=6), _random_cov(6, 1), _random_cov(6, 2)
    ref = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * scipy.linalg.sqrtm(cov_a @ cov_b).real)
    assert gaussian_frechet(mu_a, cov_a, mu_b, cov_b) == pytest.approx(ref, rel=1e-9)
    assert gaussian_frechet(mu_a, cov_a, mu_a, cov_a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_samples_one_dimensional_closed_form():
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 2.0, size=(200_000, 1)), rng.normal(-0.5, 0.5, size=(200_000, 1))
    assert frechet_distance(a, b) == pytest.approx(1.5**2 + 1.5**2, rel=0.01)  # (m₁−m₂)² + (s₁−s₂)²
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target
    return x[:1400], y[:1400], x[1400:], y[1400:]


class Identity(nn.Module):
    """A perfect autoencoder: the code is the data and decoding returns it."""

    def __init__(self, dim):
        super().__init__()
        self.dim, self.latent_dim, self.p = dim, dim, nn.Parameter(torch.zeros(1))

    def encode(self, x):
        return Posterior(x.flatten(1))

    def decode_mean(self, z):
        return z


def test_classifier_learns_digits_and_caches(digits, vaeviz_home, monkeypatch):
    xtr, ytr, xte, yte = digits
    key = classifier_key(DataConfig(name="digits", n=7))
    assert key == classifier_key(DataConfig(name="digits")) != classifier_key(DataConfig(name="digits", seed=1))
    clf = load_or_fit_classifier(key, xtr, ytr, steps=400)
    assert clf.score(xte, yte) > 0.9
    assert clf.features(xte).shape == (len(xte), 128)
    assert (vaeviz_home / "classifiers" / f"{key}.pt").exists()
    monkeypatch.setattr(SampleClassifier, "fit", None)  # a second fit would fail: it must come from the cache
    again = load_or_fit_classifier(key, xtr, ytr, steps=400)
    np.testing.assert_array_equal(again.features(xte), clf.features(xte))
    model = Identity(64)
    assert reconstruction_accuracy(again, model, xte, yte) == pytest.approx(clf.score(xte, yte))
    assert sample_frechet(again, model, xte, xte) == pytest.approx(0.0, abs=1e-6)
    noisy = np.clip(xte + np.random.default_rng(0).normal(0, 0.3, xte.shape), 0, 1).astype(np.float32)
    assert sample_frechet(again, model, xte, noisy) > 1.0
    assert quality.classifier_path(key) == vaeviz_home / "classifiers" / f"{key}.pt"
    samplers = {"gaussian": GaussianSampler().fit(xtr), "gmm": GMMSampler(10).fit(xtr)}  # the codes are the data
    fd = frechet_by_sampler(again, model, xte, samplers, n=400)
    assert set(fd) == {"prior", "gaussian", "gmm"} and all(v > 0 for v in fd.values())
    assert fd["gmm"] < fd["prior"] and fd["gaussian"] < fd["prior"]  # N(0, I) "pixels" are far from digits
