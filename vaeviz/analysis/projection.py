"""2-D projections of posterior means for latent dim > 2: PCA (linear) and UMAP (non-linear), cached.

- PCA (Pearson 1901; via the SVD of the centred data): the top-2 right singular vectors B (L, 2)
  are orthonormal, so a posterior N(μ, Σ) maps to N(Bᵀ(μ − m), BᵀΣB) and ellipses stay exact.
- UMAP (McInnes et al. 2018) keeps neighbourhoods, not Gaussians: only the centres are projected.
Projections are cached in memory (least recently used first out) and, when given a `key`
(e.g. "<run>-<step>"), on disk under $VAEVIZ_HOME/cache/projections/ so a page reload or a second
browser reuses them.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

METHODS = ("pca", "umap")
_MEMORY: OrderedDict[tuple, np.ndarray] = OrderedDict()
_MEMORY_SIZE = 32
_LOCK = threading.Lock()  # Streamlit serves sessions from several threads


class PCAProjection:
    """Top-k principal directions of codes; learned `mean_` (L,), `components_` (k, L), `explained_variance_` (k,)."""

    def __init__(self, n_components: int = 2):
        self.n_components = n_components

    def fit(self, mu) -> PCAProjection:
        mu = np.asarray(mu, dtype=np.float64)  # (N, L)
        self.mean_ = mu.mean(0)
        _, s, vt = np.linalg.svd(mu - self.mean_, full_matrices=False)
        k = min(self.n_components, vt.shape[0])
        signs = np.sign(vt[:k, np.abs(vt[:k]).argmax(1)].diagonal())  # deterministic sign: largest entry positive
        self.components_ = vt[:k] * signs[:, None]
        self.explained_variance_ = s[:k] ** 2 / max(len(mu) - 1, 1)
        return self

    @property
    def basis_(self) -> np.ndarray:
        """Orthonormal (L, k) basis for `tiling.ellipses(basis=...)`."""
        return self.components_.T

    def transform(self, mu) -> np.ndarray:
        return (np.asarray(mu, dtype=np.float64) - self.mean_) @ self.components_.T

    def fit_transform(self, mu) -> np.ndarray:
        return self.fit(mu).transform(mu)


def _umap(mu: np.ndarray, seed: int, n_neighbors: int) -> np.ndarray:
    import umap  # slow import (numba): only when asked for

    n_neighbors = max(2, min(n_neighbors, len(mu) - 1))
    return umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed).fit_transform(mu)


def _cache_file(key: str, method: str, seed: int, n_neighbors: int) -> Path:
    home = Path(os.environ.get("VAEVIZ_HOME", Path.home() / ".vaeviz"))
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
    suffix = f"-{seed}-{n_neighbors}" if method == "umap" else ""
    return home / "cache" / "projections" / f"{safe}-{method}{suffix}.npy"


def project(mu, method: str = "pca", key: str | None = None, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D coordinates (N, 2) of codes `mu` (N, L); cached under `key` when given.

    Codes of dimension ≤ 2 are returned as they are (padded with zeros for L = 1).
    """
    if method not in METHODS:
        raise ValueError(f"projection method must be one of {', '.join(METHODS)}, got {method!r}")
    mu = np.asarray(mu, dtype=np.float64)
    if mu.shape[1] <= 2:
        return np.pad(mu, ((0, 0), (0, 2 - mu.shape[1])))
    mem_key = (key, method, seed, n_neighbors, mu.shape) if key is not None else None
    with _LOCK:
        if mem_key in _MEMORY:
            _MEMORY.move_to_end(mem_key)
            return _MEMORY[mem_key]
    path = _cache_file(key, method, seed, n_neighbors) if key is not None else None
    out = np.load(path) if path is not None and path.exists() else None
    if out is None or out.shape != (len(mu), 2):
        out = PCAProjection(2).fit_transform(mu) if method == "pca" else _umap(mu, seed, n_neighbors)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, out)
            os.replace(tmp, path)  # readers never see half a file
    if mem_key is not None:
        with _LOCK:
            _MEMORY[mem_key] = out
            while len(_MEMORY) > _MEMORY_SIZE:
                _MEMORY.popitem(last=False)
    return out


def clear_cache() -> None:
    """Forget in-memory projections (files on disk stay)."""
    with _LOCK:
        _MEMORY.clear()
