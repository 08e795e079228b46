"""Latent traversals, the decoded 2-D manifold and interpolations between codes.

- Traversal: vary one latent dimension over a list of values with the others held at a base code
  (Higgins et al. 2017, fig. 1/7).
- Manifold: decode a regular grid over two latent dimensions; by default the grid sits at prior
  quantiles Φ⁻¹((i + ½)/R), as in Kingma & Welling 2014, fig. 4.
- Spherical interpolation (Shoemake 1985; used for latent codes by White 2016):
  slerp(a, b; t) = sin((1 − t)ω)/sin ω · a + sin(tω)/sin ω · b with cos ω = âᵀb̂. When a and b are
  (near-)parallel or anti-parallel, sin ω ≈ 0 and we fall back to the linear interpolation.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from vaeviz.analysis.batching import decode_batched


def traversal_codes(base, values, dims=None) -> np.ndarray:
    """Codes (n_dims, V, L): row r is `base` with dimension dims[r] set to each of `values`."""
    base, values = np.asarray(base, dtype=np.float32), np.asarray(values, dtype=np.float32)
    dims = range(base.shape[0]) if dims is None else dims
    rows = []
    for d in dims:
        codes = np.repeat(base[None], len(values), 0)  # (V, L)
        codes[:, d] = values
        rows.append(codes)
    return np.stack(rows)


def traversal_grid(model, base, values, dims=None, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Codes (n_dims, V, L) and their decoded images (n_dims, V, D)."""
    codes = traversal_codes(base, values, dims)
    return codes, decode_batched(model, codes, batch)


def manifold_codes(resolution: int, latent_dim: int = 2, dims=(0, 1), base=None, span: float | None = None):
    """A grid of codes (R, R, L) over two dimensions: row i has y decreasing (top row = largest y).

    Values are the prior quantiles Φ⁻¹((i + ½)/R) when `span` is None, else linspace(−span, span).
    """
    if span is None:
        values = norm.ppf((np.arange(resolution) + 0.5) / resolution)
    else:
        values = np.linspace(-span, span, resolution)
    base = np.zeros(latent_dim) if base is None else np.asarray(base, dtype=np.float64)
    codes = np.repeat(np.repeat(base[None, None], resolution, 0), resolution, 1)  # (R, R, L)
    codes[:, :, dims[0]] = values[None, :]
    codes[:, :, dims[1]] = values[::-1, None]
    return codes.astype(np.float32)


def decode_manifold(model, resolution: int = 16, dims=(0, 1), base=None, span=None) -> tuple[np.ndarray, np.ndarray]:
    """Codes (R, R, L) and decoded images (R, R, D) of the 2-D manifold."""
    codes = manifold_codes(resolution, model.latent_dim, dims, base, span)
    return codes, decode_batched(model, codes)


def lerp(a, b, t) -> np.ndarray:
    """(1 − t) a + t b for each t: a, b (L,), t (T,) -> (T, L)."""
    a, b, t = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), np.atleast_1d(t)[:, None]
    return (1.0 - t) * a + t * b


def slerp(a, b, t, eps: float = 1e-6) -> np.ndarray:
    """Spherical interpolation from a to b, (T, L); linear when a, b are (anti-)parallel or zero."""
    a, b, t = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), np.atleast_1d(t)[:, None]
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < eps or nb < eps:
        return lerp(a, b, t[:, 0])
    omega = np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0))
    sin = np.sin(omega)
    if sin < eps:
        return lerp(a, b, t[:, 0])
    return (np.sin((1.0 - t) * omega) * a + np.sin(t * omega) * b) / sin


def interpolate(model, a, b, n: int = 10, kind: str = "slerp") -> tuple[np.ndarray, np.ndarray]:
    """n codes from a to b (inclusive) by `kind` ('lerp' or 'slerp') and their decoded images."""
    if kind not in ("lerp", "slerp"):
        raise ValueError(f"interpolation kind must be 'lerp' or 'slerp', got {kind!r}")
    codes = (slerp if kind == "slerp" else lerp)(a, b, np.linspace(0.0, 1.0, n)).astype(np.float32)
    return codes, decode_batched(model, codes)
