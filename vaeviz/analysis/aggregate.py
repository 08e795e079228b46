"""The aggregate posterior q(z) = 1/N Σ_i N(z; μ_i, Σ_i), its holes and its KL to the prior.

- Aggregate posterior (Hoffman & Johnson 2016, "ELBO surgery", eq. 2): the mixture of every
  example's q(z|x_i) with equal weights; p(z) = N(0, I).
- Densities use the matmul form of the Gaussian exponent: (z − μ)ᵀP(z − μ) = zᵀPz − 2zᵀPμ + μᵀPμ,
  so log N(z; μ_i, Σ_i) for M points and N components is one (M, K) @ (K, N) product of quadratic
  features [z_a z_b, z, 1], followed by a log-sum-exp over N, in float64 and chunks over M.
- On a 2-D grid with diagonal covariances each component factorises, N(x)N(y), so the density is
  one (R, N) @ (N, R) product of per-axis Gaussians (scaled by each row's maximum); points where
  that sum underflows fall back to the exact log-sum-exp.
- Hole fraction: the prior mass of {z : q(z)/p(z) < τ}, estimated with z ~ p (Monte Carlo).
- Marginal KL(q(z) ‖ p(z)) = E_q[log q(z) − log p(z)], z ~ q by picking i then z ~ N(μ_i, Σ_i),
  with log q evaluated over the full mixture (all N components).
Deterministic encoders (RAE, AE) have no posterior variance: pass `bandwidth` (a float σ, or
"scott" for Scott's rule σ_j = std(μ_j)·N^(−1/(L+4))) to treat each code as an isotropic
Gaussian kernel; without it `fit` refuses with a message saying so.

Which posteriors: `fit_aggregate` builds q(z) of a model from its TRAINING posteriors, the first
min(N_COMPONENTS, N_train) of them (every one of a small split), fewer only where a full covariance
at a large L would not fit in `MAX_BYTES`. A mixture of N posteriors is a sample estimate of q(z):
with few components it leaves gaps between them, so the hole fraction and the marginal KL are
overestimated, by less as N grows. Where q = p exactly (means drawn from N(0, (1 − σ²)I), variance
σ² = 0.01, in 2-D) N = 200 / 2,000 / 20,000 components give a marginal KL of about 0.4 / 0.07 /
0.01 nats and a hole fraction of about 15% / 1.5% / 0.1% (tests/test_analysis_aggregate.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vaeviz.analysis.batching import encode_batched

LOG_2PI = math.log(2 * math.pi)
HOLE_TAU = 0.1
N_COMPONENTS = 10_000  # training posteriors in q(z) by default (every one of a smaller split)
MAX_BYTES = 2**29  # float64 parameters and weights of the mixture: a full covariance at a large L fits fewer
_UNDERFLOW = 1e-200


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a.detach().cpu(), dtype=torch.float64)


def _bounds(bounds) -> tuple[tuple[float, float], tuple[float, float]]:
    """A half-width s, a range (lo, hi) or ((xlo, xhi), (ylo, yhi)) -> per-axis ranges."""
    if np.isscalar(bounds):
        return (-float(bounds), float(bounds)), (-float(bounds), float(bounds))
    if np.isscalar(bounds[0]):
        lo, hi = map(float, bounds)
        return (lo, hi), (lo, hi)
    return tuple(map(float, bounds[0])), tuple(map(float, bounds[1]))


@dataclass
class GridDensity:
    """log q and log p on a grid; arrays are indexed [iy, ix] as a heat map expects."""

    xs: np.ndarray  # (Rx,)
    ys: np.ndarray  # (Ry,)
    log_q: np.ndarray  # (Ry, Rx)
    log_p: np.ndarray  # (Ry, Rx)
    dims: tuple[int, int] | None = None

    @property
    def log_ratio(self) -> np.ndarray:
        return self.log_q - self.log_p

    def hole_mask(self, tau: float = HOLE_TAU) -> np.ndarray:
        """True where q/p < τ."""
        return self.log_ratio < math.log(tau)


def _diag_weights(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Weights W (2L+1, N) so that [z², z, 1] @ W = log N(z; μ_i, diag var_i)."""
    prec = 1.0 / var  # (N, L)
    const = -0.5 * (LOG_2PI + var.log() + mu.pow(2) * prec).sum(1, keepdim=True)  # (N, 1)
    return torch.cat([-0.5 * prec, mu * prec, const], 1).T.contiguous()


def _full_weights(mu: torch.Tensor, tril: torch.Tensor) -> torch.Tensor:
    """Weights W (T+L+1, N) so that [z_a z_b (a ≤ b), z, 1] @ W = log N(z; μ_i, L_i L_iᵀ)."""
    n, dim = mu.shape
    prec = torch.cholesky_inverse(tril)  # (N, L, L) = Σ⁻¹
    a, b = torch.triu_indices(dim, dim)
    quad = -0.5 * prec[:, a, b] * torch.where(a == b, 1.0, 2.0).to(prec)  # (N, T): off-diagonal counted twice
    lin = (prec @ mu.unsqueeze(-1)).squeeze(-1)  # (N, L) = Pμ
    logdet = torch.diagonal(tril, dim1=-2, dim2=-1).log().sum(-1)  # ½ log|Σ|
    const = -0.5 * ((lin * mu).sum(-1) + dim * LOG_2PI) - logdet  # (N,)
    return torch.cat([quad, lin, const[:, None]], 1).T.contiguous()


def _features(z: torch.Tensor, full: bool) -> torch.Tensor:
    """Quadratic features of points z (M, L): [z², z, 1] or [z_a z_b (a ≤ b), z, 1]."""
    if full:
        a, b = torch.triu_indices(z.shape[1], z.shape[1])
        quad = z[:, a] * z[:, b]
    else:
        quad = z.pow(2)
    return torch.cat([quad, z, torch.ones_like(z[:, :1])], 1)


def _n_features(dim: int, full: bool) -> int:
    """K, the number of quadratic features of `_features`: L(L+1)/2 + L + 1 (full) or 2L + 1 (diagonal)."""
    return dim * (dim + 1) // 2 + dim + 1 if full else 2 * dim + 1


def components_that_fit(dim: int, full: bool, max_bytes: int = MAX_BYTES) -> int:
    """How many components' float64 numbers fit in `max_bytes`: per component its weight column (K), μ (L),
    and its covariance twice (stored, and as the precision while fitting): 2L² (full) or 2L (diagonal)."""
    per = 8 * (_n_features(dim, full) + dim + 2 * (dim * dim if full else dim))
    return max(1, max_bytes // per)


def log_prior(z) -> np.ndarray:
    """log N(z; 0, I) of points (M, L) -> (M,)."""
    z = _t(z)
    return (-0.5 * (z.pow(2) + LOG_2PI).sum(-1)).numpy()


class AggregatePosterior:
    """q(z) = 1/N Σ_i N(z; μ_i, Σ_i) fitted on posterior parameters; densities in float64.

    Learned attributes: `mu_` (N, L), `var_` (N, L) for diagonal or kernel components or
    `scale_tril_` (N, L, L) for full covariances, `n_components_`, `latent_dim_`.
    """

    def __init__(self, bandwidth: float | str | None = None, chunk_elements: int = 2**22):
        self.bandwidth = bandwidth
        self.chunk_elements = chunk_elements

    def fit(self, mu, logvar=None, scale_tril=None) -> AggregatePosterior:
        mu = _t(mu)  # (N, L)
        self.n_components_, self.latent_dim_ = mu.shape
        self.mu_, self.var_, self.scale_tril_ = mu.numpy(), None, None
        if scale_tril is not None:
            tril = _t(scale_tril)  # (N, L, L)
            self.scale_tril_ = tril.numpy()
            self._weights = _full_weights(mu, tril)
        else:
            var = _t(logvar).clamp(min=-60.0).exp() if logvar is not None else self._kernel_variance(mu)
            self.var_ = var.numpy()
            self._weights = _diag_weights(mu, var)
        return self

    def _kernel_variance(self, mu: torch.Tensor) -> torch.Tensor:
        """Isotropic kernels for a deterministic encoder: a fixed σ or Scott's rule per dimension."""
        if self.bandwidth is None:
            raise ValueError(
                "this encoder is deterministic (no log σ² or Cholesky factor), so q(z) is a set of points: "
                "pass AggregatePosterior(bandwidth=σ) or bandwidth='scott' to smooth each code with a Gaussian kernel"
            )
        n, dim = mu.shape
        if self.bandwidth == "scott":
            sigma = mu.std(0).clamp(min=1e-6) * n ** (-1.0 / (dim + 4))  # (L,)
        else:
            sigma = torch.full((dim,), float(self.bandwidth), dtype=torch.float64)
        return sigma.pow(2).expand(n, dim).clone()

    @property
    def full_(self) -> bool:
        return self.scale_tril_ is not None

    def log_density(self, z) -> np.ndarray:
        """log q(z) of points (M, L) -> (M,), in chunks of at most `chunk_elements` (point, component) pairs
        and point features (a full covariance at a large L has L(L+1)/2 features per point)."""
        z = _t(z)  # (M, L)
        width = max(self.n_components_, _n_features(self.latent_dim_, self.full_))
        rows = max(1, self.chunk_elements // width)
        parts = [torch.logsumexp(_features(c, self.full_) @ self._weights, 1) for c in z.split(rows)]  # (m,) each
        out = torch.cat(parts) if parts else z.new_zeros(0)
        return (out - math.log(self.n_components_)).numpy()

    def log_ratio(self, z) -> np.ndarray:
        """log q(z) − log p(z) of points (M, L) -> (M,)."""
        return self.log_density(z) - log_prior(z)

    def marginal(self, dims=(0, 1), basis=None) -> AggregatePosterior:
        """The mixture's marginal on latent dimensions `dims`, or on z ↦ Bᵀz for an orthonormal basis B (L, k).

        Each component maps to N(Bᵀμ_i, BᵀΣ_iB); with B orthonormal the prior stays N(0, I). A PCA basis
        (`PCAProjection.basis_`) gives uncentred coordinates Bᵀz (the PCA mean is not subtracted).
        """
        if basis is None:
            dims = list(dims)
            if not self.full_:
                return AggregatePosterior(None, self.chunk_elements).fit(self.mu_[:, dims], np.log(self.var_[:, dims]))
            basis = np.eye(self.latent_dim_)[:, dims]
        basis = np.asarray(basis, dtype=np.float64)  # (L, k)
        if not np.allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-6):
            raise ValueError("the projection basis must have orthonormal columns (e.g. PCA components)")
        if self.full_:
            cov = self.scale_tril_ @ np.swapaxes(self.scale_tril_, -1, -2)  # (N, L, L)
        else:
            cov = self.var_[:, :, None] * np.eye(self.latent_dim_)
        sub = basis.T @ cov @ basis  # (N, k, k)
        return AggregatePosterior(None, self.chunk_elements).fit(self.mu_ @ basis, scale_tril=np.linalg.cholesky(sub))

    def grid(self, bounds=3.0, resolution: int = 128, dims=(0, 1), basis=None) -> GridDensity:
        """log q and log p on a resolution × resolution grid over two latent dimensions (or a 2-D basis)."""
        (xlo, xhi), (ylo, yhi) = _bounds(bounds)
        xs, ys = np.linspace(xlo, xhi, resolution), np.linspace(ylo, yhi, resolution)
        plain = basis is None and self.latent_dim_ == 2 and tuple(dims) == (0, 1)
        marg = self if plain else self.marginal(dims, basis)
        if marg.full_:
            gx, gy = np.meshgrid(xs, ys)  # (Ry, Rx) each
            log_q = marg.log_density(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(gx.shape)
        else:
            log_q = marg._separable_grid(xs, ys)
        log_p = -0.5 * (xs[None, :] ** 2 + ys[:, None] ** 2) - LOG_2PI
        return GridDensity(xs, ys, log_q, log_p, tuple(dims) if basis is None else None)

    def _separable_grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """log q on the grid (ys × xs) of a 2-D diagonal mixture through one (Ry, N) @ (N, Rx) product."""
        mu, var = _t(self.mu_), _t(self.var_)  # (N, 2)
        ax = -0.5 * (LOG_2PI + var[:, 0].log() + (_t(xs)[:, None] - mu[:, 0]).pow(2) / var[:, 0])  # (Rx, N)
        ay = -0.5 * (LOG_2PI + var[:, 1].log() + (_t(ys)[:, None] - mu[:, 1]).pow(2) / var[:, 1])  # (Ry, N)
        mx, my = ax.max(1, keepdim=True).values, ay.max(1, keepdim=True).values
        s = torch.exp(ay - my) @ torch.exp(ax - mx).T  # (Ry, Rx) = Σ_i exp(a_yi + a_xi − m_y − m_x)
        log_q = (s.log() + my + mx.T - math.log(self.n_components_)).numpy()
        bad = (s < _UNDERFLOW).numpy()
        if bad.any():  # far from every component: exact log-sum-exp there
            gx, gy = np.meshgrid(xs, ys)
            log_q[bad] = self.log_density(np.stack([gx[bad], gy[bad]], 1))
        return log_q

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """z ~ q(z): pick a component uniformly, then z = μ_i + L_i ε. Returns (n, L)."""
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(self.n_components_, (n,), generator=g)
        eps = torch.randn(n, self.latent_dim_, generator=g, dtype=torch.float64)  # (n, L)
        mu = _t(self.mu_)[idx]
        if self.full_:
            return (mu + (_t(self.scale_tril_)[idx] @ eps.unsqueeze(-1)).squeeze(-1)).numpy()
        return (mu + _t(self.var_)[idx].sqrt() * eps).numpy()

    def hole_fraction(self, tau: float = HOLE_TAU, n_samples: int = 10_000, seed: int = 0) -> float:
        """Prior mass where q(z)/p(z) < τ, by Monte Carlo over z ~ N(0, I)."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n_samples, self.latent_dim_, generator=g, dtype=torch.float64)
        return float((self.log_ratio(z) < math.log(tau)).mean())

    def marginal_kl(self, n_samples: int = 10_000, seed: int = 0) -> float:
        """KL(q(z) ‖ p(z)) = E_q[log q(z) − log p(z)], by Monte Carlo over z ~ q (full mixture)."""
        return float(self.log_ratio(self.sample(n_samples, seed)).mean())


def fit_aggregate(model, x, n_components: int = N_COMPONENTS, max_bytes: int = MAX_BYTES,
                  batch: int = 1000) -> AggregatePosterior:
    """q(z) of `model` over the posteriors q(z|x_i) of the first n examples of `x` (its training split):
    n = min(n_components, len(x), what fits in `max_bytes`), reported as `n_components_`. A deterministic
    encoder's codes are smoothed with Scott's-rule kernels (`bandwidth="scott"`)."""
    first = encode_batched(model, x[:1])  # the posterior family, before encoding n examples
    full = first.scale_tril is not None
    n = min(n_components, len(x), components_that_fit(model.latent_dim, full, max_bytes))
    q = encode_batched(model, x[:n], batch)  # (n, L) parameters
    return AggregatePosterior(bandwidth="scott" if q.deterministic else None).fit(q.mu, q.logvar, q.scale_tril)
