"""Traversal codes, the manifold grid, lerp/slerp and batched decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from vaeviz.analysis.batching import decode_batched
from vaeviz.analysis.traversal import (
    decode_manifold,
    interpolate,
    lerp,
    manifold_codes,
    slerp,
    traversal_codes,
    traversal_grid,
)
from vaeviz.config import ModelConfig
from vaeviz.nets import build_model


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(latent_dim=3, hidden=[16]), (1, 4, 4))


def test_traversal_codes_vary_one_dimension_per_row():
    base, values = np.array([0.5, -1.0, 2.0]), np.linspace(-2, 2, 5)
    codes = traversal_codes(base, values, dims=[2, 0])
    assert codes.shape == (2, 5, 3)
    np.testing.assert_allclose(codes[0, :, 2], values)
    np.testing.assert_allclose(codes[0, :, :2], np.broadcast_to(base[:2], (5, 2)))
    np.testing.assert_allclose(codes[1, :, 0], values)
    np.testing.assert_allclose(codes[1, :, 1:], np.broadcast_to(base[1:], (5, 2)))


def test_traversal_grid_and_manifold_decode_like_the_model(model):
    codes, images = traversal_grid(model, np.zeros(3), np.linspace(-1, 1, 4))
    assert codes.shape == (3, 4, 3) and images.shape == (3, 4, 16)
    with torch.no_grad():
        want = model.decode_mean(torch.tensor(codes.reshape(-1, 3))).numpy().reshape(3, 4, 16)
    np.testing.assert_allclose(images, want, atol=1e-6)
    codes, images = decode_manifold(model, resolution=5, dims=(1, 2))
    assert images.shape == (5, 5, 16) and (images >= 0).all() and (images <= 1).all()
    np.testing.assert_allclose(decode_batched(model, codes, batch=7), images, atol=1e-6)


def test_manifold_codes_sit_at_prior_quantiles_top_row_largest():
    codes = manifold_codes(4, latent_dim=3, dims=(0, 2), base=[0.0, 0.7, 0.0])
    q = norm.ppf([0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(codes[0, :, 0], q, rtol=1e-6)  # x increases along a row
    np.testing.assert_allclose(codes[:, 0, 2], q[::-1], rtol=1e-6)  # y decreases down the rows
    np.testing.assert_allclose(codes[..., 1], 0.7, rtol=1e-6)
    np.testing.assert_allclose(manifold_codes(3, span=2.0)[1, :, 0], [-2, 0, 2])


def test_slerp_keeps_norm_and_constant_angular_speed():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=8), rng.normal(size=8)
    b *= np.linalg.norm(a) / np.linalg.norm(b)
    t = np.linspace(0, 1, 11)
    path = slerp(a, b, t)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(a), rtol=1e-12)
    np.testing.assert_allclose(path[0], a, atol=1e-12)
    np.testing.assert_allclose(path[-1], b, atol=1e-12)
    omega = np.arccos(a @ b / (a @ a))
    np.testing.assert_allclose(np.arccos(np.clip(path @ a / (a @ a), -1, 1)), t * omega, atol=1e-7)


def test_slerp_falls_back_to_lerp_when_parallel_or_zero():
    a = np.array([1.0, 2.0])
    t = np.array([0.0, 0.3, 1.0])
    np.testing.assert_allclose(slerp(a, 2 * a, t), lerp(a, 2 * a, t))
    np.testing.assert_allclose(slerp(a, -a, t), lerp(a, -a, t))
    np.testing.assert_allclose(slerp(np.zeros(2), a, t), lerp(np.zeros(2), a, t))
    np.testing.assert_allclose(lerp(a, 3 * a, 0.5), [2 * a])


def test_interpolate_decodes_the_path(model):
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    codes, images = interpolate(model, a, b, n=5, kind="slerp")
    assert codes.shape == (5, 3) and images.shape == (5, 16)
    np.testing.assert_allclose(codes[2], [np.sqrt(0.5), np.sqrt(0.5), 0.0], atol=1e-6)
    codes, _ = interpolate(model, a, b, n=5, kind="lerp")
    np.testing.assert_allclose(codes[2], [0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="lerp"):
        interpolate(model, a, b, kind="cubic")
