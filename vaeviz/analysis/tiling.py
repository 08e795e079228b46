"""Posterior tilings: each probe point's q(z|x) as its 1σ ellipse, or as a cloud of samples.

The k-σ ellipse of N(μ, Σ) is {z : (z − μ)ᵀ Σ⁻¹ (z − μ) = k²} = {μ + k·A u : ‖u‖ = 1} for any A
with AAᵀ = Σ; we take A = chol(Σ). For latent dim > 2 the ellipse is drawn for the 2-D marginal
on two chosen dimensions, or for a linear projection z ↦ Bᵀz (e.g. PCA components B, (L, 2)),
under which N(μ, Σ) maps to N(Bᵀμ, BᵀΣB). Non-linear projections (UMAP) keep only the centres.
A deterministic encoder has Σ = 0: its ellipses collapse to their centres.

A small training split (at most SMALL_SPLIT examples, e.g. Micro-MNIST's 7 images in Taming VAEs Fig. 8) is
drawn whole: `split_posteriors` encodes every example with a checkpoint's weights and decodes its mean code.
"""

from __future__ import annotations

import numpy as np

from vaeviz.analysis.batching import decode_batched, encode_batched

SMALL_SPLIT = 100  # a training split of at most this many examples is drawn whole, with its decoded images


def covariances(mu, logvar=None, scale_tril=None) -> np.ndarray:
    """Full covariance matrices (P, L, L) from diagonal log σ², a Cholesky factor, or neither (zeros)."""
    mu = np.asarray(mu, dtype=np.float64)
    if scale_tril is not None:
        tril = np.asarray(scale_tril, dtype=np.float64)
        return tril @ np.swapaxes(tril, -1, -2)
    if logvar is not None:
        var = np.exp(np.asarray(logvar, dtype=np.float64))  # (P, L)
        return var[:, :, None] * np.eye(mu.shape[1])
    return np.zeros((*mu.shape, mu.shape[1]))


def dims_basis(latent_dim: int, dims=(0, 1)) -> np.ndarray:
    """The (L, 2) basis that picks latent dimensions `dims`."""
    return np.eye(latent_dim)[:, list(dims)]


def project(mu, cov, basis) -> tuple[np.ndarray, np.ndarray]:
    """Push N(μ, Σ) through z ↦ Bᵀz: μ (P, L), Σ (P, L, L), B (L, k) -> (P, k), (P, k, k)."""
    basis = np.asarray(basis, dtype=np.float64)
    return np.asarray(mu, dtype=np.float64) @ basis, basis.T @ cov @ basis


def _sqrt2x2(cov: np.ndarray) -> np.ndarray:
    """A with AAᵀ = Σ for PSD 2×2 matrices (P, 2, 2); lower-triangular, safe for singular Σ."""
    a = np.sqrt(np.clip(cov[:, 0, 0], 0.0, None))
    b = np.divide(cov[:, 1, 0], a, out=np.zeros_like(a), where=a > 0)
    c = np.sqrt(np.clip(cov[:, 1, 1] - b**2, 0.0, None))
    out = np.zeros_like(cov)
    out[:, 0, 0], out[:, 1, 0], out[:, 1, 1] = a, b, c
    return out


def ellipses(mu, logvar=None, scale_tril=None, dims=(0, 1), basis=None, n_std: float = 1.0, n_points: int = 48):
    """Closed outlines of the n_std-σ ellipses, (P, n_points + 1, 2); the last point repeats the first."""
    mu = np.asarray(mu, dtype=np.float64)
    basis = dims_basis(mu.shape[1], dims) if basis is None else basis
    centre, cov = project(mu, covariances(mu, logvar, scale_tril), basis)  # (P, 2), (P, 2, 2)
    t = np.linspace(0.0, 2 * np.pi, n_points + 1)
    circle = np.stack([np.cos(t), np.sin(t)])  # (2, T)
    outline = n_std * _sqrt2x2(cov) @ circle  # (P, 2, T)
    return centre[:, None, :] + np.swapaxes(outline, 1, 2)


def posterior_samples(mu, logvar=None, scale_tril=None, n: int = 64, seed: int = 0) -> np.ndarray:
    """n samples z = μ + A ε of every probe point's posterior, (P, n, L)."""
    mu = np.asarray(mu, dtype=np.float64)
    eps = np.random.default_rng(seed).standard_normal((mu.shape[0], n, mu.shape[1]))  # (P, n, L)
    if scale_tril is not None:
        return mu[:, None] + eps @ np.swapaxes(np.asarray(scale_tril, dtype=np.float64), -1, -2)
    if logvar is not None:
        return mu[:, None] + np.exp(0.5 * np.asarray(logvar, dtype=np.float64))[:, None] * eps
    return np.repeat(mu[:, None], n, 1)


def split_posteriors(model, x) -> dict[str, np.ndarray]:
    """Every example's q(z|x) in the arrays of a probe snapshot (`mu`, and `logvar` or `scale_tril` where the
    encoder has them) and `decoded`, the decoder's mean g(μ) of each example's mean code (N, D)."""
    q = encode_batched(model, x)
    out = {"mu": q.mu.double().numpy()}
    if q.logvar is not None:
        out["logvar"] = q.logvar.double().numpy()
    if q.scale_tril is not None:
        out["scale_tril"] = q.scale_tril.double().numpy()
    out["decoded"] = decode_batched(model, q.mu)
    return out
