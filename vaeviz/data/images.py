"""Built-in image sets, nothing to download: scikit-learn's 8×8 digits and procedural 32×32 shapes.

- digits: the 1,797 8×8 handwritten digits (UCI optical recognition set) shipped with scikit-learn,
  scaled from 0..16 into [0, 1], 10 classes.
- shapes: dSprites-like images (Matthey et al. 2017, the β-VAE disentanglement set) drawn with numpy
  from `data.seed`: a square, ellipse or triangle with known factors shape, scale, rotation, x and y
  (uniform over `SHAPES_FACTOR_RANGES`), rendered from signed distance functions with anti-aliased edges.
  The factors travel with the data for disentanglement metrics (MIG).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vaeviz.config import DataConfig
from vaeviz.data.dataset import Pool
from vaeviz.data.files import check_budget


def load_digits(cfg: DataConfig, root: Path) -> Pool:
    """The 1,797 digits as (N, 1, 8, 8) in [0, 1], classes 0..9."""
    from sklearn import datasets  # shipped with scikit-learn, no download

    d = datasets.load_digits()
    x = (d.images[:, None] / 16.0).astype(np.float32)  # (1797, 1, 8, 8)
    return Pool(x, d.target.astype(np.int64), class_names=[str(i) for i in range(10)])


SHAPES_SIZE = 10_000  # default rows of the shapes dataset
SHAPE_NAMES = ["square", "ellipse", "triangle"]
SHAPES_SIDE = 32  # image side in pixels
SHAPES_FACTOR_RANGES = {  # declared range [lo, hi] of each factor, in factor_names order
    "shape": (0.0, 2.0),  # index into SHAPE_NAMES
    "scale": (0.5, 1.0),  # circumradius as a fraction of _RADIUS
    "rotation": (0.0, np.pi / 2),  # radians; below every shape's period except the square's
    "x": (0.0, 1.0),  # centre, 0 = leftmost column that keeps the largest shape inside
    "y": (0.0, 1.0),  # centre, 0 = top
}
_RADIUS = 8.0  # circumradius in pixels at scale 1


def _sdf_square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) - np.float32(1 / math.sqrt(2))


def _sdf_ellipse(u, v, a=1.0, b=0.5):
    q = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    grad = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2) / np.maximum(q, 1e-6)  # |∇q|
    return (q - 1) / np.maximum(grad, 1e-6)  # first-order distance to the boundary


def _sdf_triangle(u, v):
    """Equilateral, circumradius 1: the largest signed distance to its three edge lines."""
    phi = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
    edges = [u * np.float32(np.cos(p)) + v * np.float32(np.sin(p)) for p in phi]
    return np.maximum(np.maximum(edges[0], edges[1]), edges[2]) - np.float32(0.5)


_SDFS = [_sdf_square, _sdf_ellipse, _sdf_triangle]  # by SHAPE_NAMES index


def sample_shape_factors(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 5) float32 factors, uniform over SHAPES_FACTOR_RANGES (shape uniform over its 3 values)."""
    lo, hi = np.array(list(SHAPES_FACTOR_RANGES.values()), dtype=np.float64).T
    factors = rng.uniform(lo, hi, size=(n, len(lo)))
    factors[:, 0] = rng.integers(len(SHAPE_NAMES), size=n)
    return factors.astype(np.float32)


def render_shapes(factors: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """(N, 5) factors -> (N, 1, 32, 32) float32 images, edges anti-aliased by their signed distance."""
    factors = np.asarray(factors, dtype=np.float32)
    side, margin = SHAPES_SIDE, _RADIUS + 0.5
    pix = np.arange(side, dtype=np.float32)
    out = np.empty((len(factors), 1, side, side), np.float32)
    for start in range(0, len(factors), chunk):
        f = factors[start : start + chunk]
        shape, scale, rot, x, y = (f[:, j, None, None] for j in range(5))  # each (B, 1, 1)
        dx = pix[None, None, :] - (margin + x * (side - 1 - 2 * margin))  # (B, 1, W)
        dy = pix[None, :, None] - (margin + y * (side - 1 - 2 * margin))  # (B, H, 1)
        radius = scale * _RADIUS
        u = (np.cos(rot) * dx + np.sin(rot) * dy) / radius  # (B, H, W) in units of the circumradius
        v = (np.cos(rot) * dy - np.sin(rot) * dx) / radius
        dist = np.zeros_like(u)
        for s, sdf in enumerate(_SDFS):
            rows = np.rint(shape[:, 0, 0]) == s
            dist[rows] = sdf(u[rows], v[rows]) * radius[rows]  # pixels
        out[start : start + chunk, 0] = np.clip(0.5 - dist, 0.0, 1.0)
    return out


def load_shapes(cfg: DataConfig, root: Path) -> Pool:
    """`data.size` shapes (default SHAPES_SIZE) from `data.seed`, labelled by shape, with their factors."""
    n = cfg.size or SHAPES_SIZE
    check_budget(n * SHAPES_SIDE**2 * 4, f"dataset 'shapes' with data.size={n} ({SHAPES_SIDE}×{SHAPES_SIDE} images)")
    rng = np.random.default_rng([cfg.seed, 0])
    factors = sample_shape_factors(rng, n)
    return Pool(
        render_shapes(factors),
        factors[:, 0].astype(np.int64),
        factors=factors,
        factor_names=list(SHAPES_FACTOR_RANGES),
        class_names=list(SHAPE_NAMES),
    )


