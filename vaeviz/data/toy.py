"""Toy 2-D datasets drawn with numpy from `data.seed`: a Gaussian mixture, lines, circles, moons, pinwheel.

Each generator returns (N, 2) points in its own units, int64-able labels and class names; `toy_loader`
draws `data.size` rows (default `TOY_SIZE`) and min-max scales them into [0, 1] with one scale for both
axes, so a set keeps its aspect ratio. `data.noise` is in the units of the generator, before that scaling.
The pinwheel is the dataset of Johnson et al. 2016 (structured VAEs); moons and circles are in the spirit of
scikit-learn's `make_moons` and `make_circles`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vaeviz.config import DataConfig
from vaeviz.data.dataset import Pool

TOY_SIZE = 5000  # default rows of the toy 2-D sets


def _unit_scale(points: np.ndarray) -> np.ndarray:
    """Min-max scale (N, 2) points into [0, 1] with one scale for both axes, centred."""
    lo, hi = points.min(0), points.max(0)
    span = max(float((hi - lo).max()), 1e-12)
    return np.clip((points - (lo + hi) / 2) / span + 0.5, 0.0, 1.0).astype(np.float32)


def gaussian_mixture(rng, n, noise, cfg):
    """data.k modes of spread `noise` on a unit ring (data.layout=ring) or a grid of spacing 1."""
    y = rng.integers(cfg.k, size=n)
    i = np.arange(cfg.k)
    if cfg.layout == "ring":
        angle = 2 * np.pi * i / cfg.k
        centres = np.stack([np.cos(angle), np.sin(angle)], 1)  # (k, 2) on the unit circle
    else:
        side = math.ceil(math.sqrt(cfg.k))
        centres = np.stack([i % side, i // side], 1).astype(np.float64)  # (k, 2), spacing 1
    return centres[y] + noise * rng.standard_normal((n, 2)), y, [f"mode {j}" for j in i]


def lines(rng, n, noise, cfg):
    """Four segments of length 2 through the origin at 0°, 45°, 90°, 135°; noise across them."""
    y = rng.integers(4, size=n)
    angle = np.pi * y / 4
    along = rng.uniform(-1, 1, size=n)[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    across = noise * rng.standard_normal(n)[:, None] * np.stack([-np.sin(angle), np.cos(angle)], 1)
    return along + across, y, ["0°", "45°", "90°", "135°"]


def circles(rng, n, noise, cfg):
    """Two concentric circles of radius 1 (class 0) and 0.5 (class 1)."""
    y = rng.integers(2, size=n)
    angle = rng.uniform(0, 2 * np.pi, size=n)
    radius = np.where(y == 0, 1.0, 0.5)[:, None]
    points = radius * np.stack([np.cos(angle), np.sin(angle)], 1)
    return points + noise * rng.standard_normal((n, 2)), y, ["outer", "inner"]


def moons(rng, n, noise, cfg):
    """Two interleaved half circles of radius 1."""
    y = rng.integers(2, size=n)
    angle = rng.uniform(0, np.pi, size=n)
    upper = np.stack([np.cos(angle), np.sin(angle)], 1)
    lower = np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], 1)
    points = np.where((y == 0)[:, None], upper, lower)
    return points + noise * rng.standard_normal((n, 2)), y, ["upper", "lower"]


def pinwheel(rng, n, noise, cfg, arms=5, radial_std=0.3, rate=0.25):
    """Five arms: radius ~ N(1, radial_std), tangential noise `noise`, arm bent by rate·exp(radius)."""
    y = rng.integers(arms, size=n)
    f = rng.standard_normal((n, 2)) * [radial_std, noise] + [1.0, 0.0]  # (n, 2) radial, tangential
    angle = 2 * np.pi * y / arms + rate * np.exp(f[:, 0])
    c, s = np.cos(angle), np.sin(angle)
    points = np.stack([c * f[:, 0] - s * f[:, 1], s * f[:, 0] + c * f[:, 1]], 1)
    return points, y, [f"arm {j}" for j in range(arms)]


def toy_loader(generate, default_noise: float):
    """A loader that draws `cfg.size` points from `generate` and scales them into [0, 1]."""

    def load(cfg: DataConfig, root: Path) -> Pool:
        rng = np.random.default_rng([cfg.seed, 0])
        noise = default_noise if cfg.noise is None else cfg.noise
        points, y, names = generate(rng, cfg.size or TOY_SIZE, noise, cfg)
        return Pool(_unit_scale(points), y.astype(np.int64), class_names=names)

    return load


