"""Posterior ellipses and samples against their Gaussian definitions."""

from __future__ import annotations

import numpy as np
import pytest

from vaeviz.analysis.tiling import covariances, ellipses, posterior_samples, project


def _mahalanobis2(points, centre, cov):
    d = points - centre[:, None, :]  # (P, T, 2)
    return np.einsum("pti,pij,ptj->pt", d, np.linalg.inv(cov), d)


def _random_tril(p, dim, seed):
    rng = np.random.default_rng(seed)
    return np.tril(rng.normal(size=(p, dim, dim)) * 0.5, -1) + np.eye(dim) * rng.uniform(0.2, 1.0, size=(p, 1, dim))


def test_diagonal_ellipses_lie_at_one_sigma():
    mu, logvar = np.array([[0.0, 1.0], [2.0, -1.0]]), np.log(np.array([[0.25, 1.0], [4.0, 0.01]]))
    out = ellipses(mu, logvar, n_points=32)
    assert out.shape == (2, 33, 2)
    np.testing.assert_allclose(out[:, 0], out[:, -1])
    np.testing.assert_allclose(_mahalanobis2(out, mu, covariances(mu, logvar)), 1.0, atol=1e-12)
    np.testing.assert_allclose(out[1, :, 0].max() - out[1, :, 0].min(), 4.0, atol=1e-9)  # 2σ wide along x
    two = ellipses(mu, logvar, n_std=2.0)
    np.testing.assert_allclose(_mahalanobis2(two, mu, covariances(mu, logvar)), 4.0, atol=1e-12)


def test_full_covariance_ellipse_on_two_chosen_dims():
    mu, tril = np.random.default_rng(0).normal(size=(5, 3)), _random_tril(5, 3, 1)
    out = ellipses(mu, scale_tril=tril, dims=(2, 0))
    cov = (tril @ np.swapaxes(tril, 1, 2))[:, [2, 0]][:, :, [2, 0]]
    np.testing.assert_allclose(_mahalanobis2(out, mu[:, [2, 0]], cov), 1.0, atol=1e-10)
    x, y = out[..., 0], out[..., 1]  # shoelace area of the polygon -> π √det Σ
    area = 0.5 * np.abs((x[:, :-1] * y[:, 1:] - x[:, 1:] * y[:, :-1]).sum(1))
    np.testing.assert_allclose(area, np.pi * np.sqrt(np.linalg.det(cov)), rtol=0.01)


def test_projection_matches_sample_covariance():
    mu, tril = np.zeros((1, 4)), _random_tril(1, 4, 2)
    basis, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(4, 2)))
    centre, cov = project(mu, covariances(mu, scale_tril=tril), basis)
    z = posterior_samples(mu, scale_tril=tril, n=200_000, seed=4)[0] @ basis  # (n, 2)
    np.testing.assert_allclose(np.cov(z.T), cov[0], atol=0.02)
    out = ellipses(mu, scale_tril=tril, basis=basis)
    np.testing.assert_allclose(_mahalanobis2(out, centre, cov), 1.0, atol=1e-10)


def test_posterior_samples_moments_and_deterministic_encoder():
    mu, logvar = np.array([[1.0, -2.0]]), np.log(np.array([[0.5, 2.0]]))
    z = posterior_samples(mu, logvar, n=100_000, seed=5)
    assert z.shape == (1, 100_000, 2)
    assert z[0].mean(0) == pytest.approx([1.0, -2.0], abs=0.02)
    assert z[0].var(0) == pytest.approx([0.5, 2.0], rel=0.02)
    points = np.array([[0.5, 0.5], [1.0, 2.0]])
    np.testing.assert_array_equal(posterior_samples(points, n=3)[1], np.repeat(points[1:], 3, 0))
    np.testing.assert_allclose(ellipses(points), np.repeat(points[:, None], 49, 1))  # Σ = 0: a point
