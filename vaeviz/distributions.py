"""Pure maths on Gaussian and Bernoulli densities: reparameterisation, KL, log-densities.

Kingma & Welling 2014 (Auto-Encoding Variational Bayes): reparameterisation z = μ + σ ⊙ ε
(eq. 10) and the closed-form KL to N(0, I) (appendix B). Full covariance uses a Cholesky
factor L with positive diagonal, z = μ + L ε, and
KL(N(μ, LLᵀ) ‖ N(0, I)) = ½ (tr(LLᵀ) + μᵀμ − d − 2 Σ log L_ii).
The Gaussian decoder NLL is eq. 4 of Rybkin et al. 2021 (σ-VAE):
−log p(x|z) = d/2 log 2π + Σ_k log σ_k + Σ_k (x_k − g_k(z))² / (2σ_k²).
All densities are summed over the event dimension and returned per example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def kl_diag_std_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) per example: (B, L) -> (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def kl_full_std_normal(mu: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, LLᵀ) ‖ N(0, I)) per example: μ (B, L), L (B, L, L) -> (B,)."""
    trace = scale_tril.pow(2).sum((-2, -1))  # tr(LLᵀ) = ‖L‖_F²
    logdet = 2.0 * torch.diagonal(scale_tril, dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (trace + mu.pow(2).sum(-1) - mu.shape[-1] - logdet)


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-dimension log N(z; μ, σ²), broadcasting: (..., L) -> (..., L)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


def log_std_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension: (..., L) -> (...)."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def log_normal_full(z: torch.Tensor, mu: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """log N(z; μ, LLᵀ): z (..., B, L), μ (B, L), L (B, L, L) -> (..., B)."""
    diff = (z - mu).unsqueeze(-1)  # (..., B, L, 1)
    tril = scale_tril.expand(*diff.shape[:-2], *scale_tril.shape[-2:])
    white = torch.linalg.solve_triangular(tril, diff, upper=False).squeeze(-1)  # L⁻¹(z − μ)
    logdet = torch.diagonal(scale_tril, dim1=-2, dim2=-1).log().sum(-1)  # ½ log|Σ|
    return -0.5 * (mu.shape[-1] * LOG_2PI + white.pow(2).sum(-1)) - logdet


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor | float) -> torch.Tensor:
    """−log N(x; mean, σ²) summed over data dimensions (σ-VAE eq. 4): (B, D) -> (B,).

    `log_sigma` broadcasts: a scalar (global σ), (D,) per dimension, or (B, D) from σ_θ(z).
    """
    log_sigma = torch.as_tensor(log_sigma, dtype=x.dtype, device=x.device)
    per_dim = 0.5 * LOG_2PI + log_sigma + (x - mean).pow(2) * torch.exp(-2.0 * log_sigma) / 2.0
    return per_dim.sum(-1) if per_dim.dim() == x.dim() else per_dim.expand_as(x).sum(-1)


def bernoulli_nll(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """−log Bernoulli(x; sigmoid(logits)) summed over dimensions (continuous x in [0, 1]): (B, D) -> (B,)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def log_mean_exp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """log (1/n Σ exp x) along `dim`, computed stably."""
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def sigma_free_nll(sq_error_sum: float, count: int, dim: int, sigma2: float | None = None) -> float:
    """σ-independent NLL per example (Rezende & Viola 2018, "Taming VAEs", App. D; Rybkin et al. 2021, eq. 6
    into eq. 4): the Gaussian NLL of the scored split at σ*², with σ*² measured on the TRAINING split,
        NLL* = d/2 · log 2πσ*² + SSE / (2σ*² · n) = d/2 · (log 2πσ*² + r),  r = MSE / σ*².

    `sq_error_sum` is Σ over the n = `count` examples and d = `dim` dimensions of the scored split of (x − x̂)²;
    `sigma2` the training split's MSE per dimension. Without `sigma2`, σ*² is the scored split's own MSE and
    NLL* = d/2 (log 2πσ*² + 1). σ*² is floored at 1e-12.
    """
    mse = sq_error_sum / (count * dim)
    if sigma2 is None:  # σ*² fitted on the scored split itself: r = 1
        return 0.5 * dim * (math.log(2 * math.pi * max(mse, 1e-12)) + 1.0)
    sigma2 = max(sigma2, 1e-12)
    return 0.5 * dim * (math.log(2 * math.pi * sigma2) + mse / sigma2)


@dataclass
class Posterior:
    """q(z|x): diagonal (μ, log σ²), full (μ, L) or deterministic (μ only). Shapes (B, L), (B, L, L)."""

    mu: torch.Tensor
    logvar: torch.Tensor | None = None
    scale_tril: torch.Tensor | None = None

    @property
    def deterministic(self) -> bool:
        return self.logvar is None and self.scale_tril is None

    @property
    def variance(self) -> torch.Tensor:
        """Marginal variances, (B, L) (zeros for a deterministic encoder)."""
        if self.scale_tril is not None:
            return self.scale_tril.pow(2).sum(-1)
        if self.logvar is not None:
            return self.logvar.exp()
        return torch.zeros_like(self.mu)

    def rsample(self, n: int | None = None, generator: torch.Generator | None = None,
                eps: torch.Tensor | None = None) -> torch.Tensor:
        """Reparameterised samples: (B, L), or (n, B, L) when n is given; `eps` is standard-normal
        noise of that shape to use instead of drawing it."""
        if self.deterministic:
            return self.mu if n is None else self.mu.expand(n, *self.mu.shape)
        shape = self.mu.shape if n is None else (n, *self.mu.shape)
        if eps is None:
            eps = torch.randn(shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        if self.scale_tril is not None:
            return self.mu + (self.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)  # z = μ + L ε
        return self.mu + torch.exp(0.5 * self.logvar) * eps  # z = μ + σ ε

    def kl(self) -> torch.Tensor:
        """KL(q(z|x) ‖ N(0, I)) per example, (B,); zero for a deterministic encoder."""
        if self.scale_tril is not None:
            return kl_full_std_normal(self.mu, self.scale_tril)
        if self.logvar is not None:
            return kl_diag_std_normal(self.mu, self.logvar)
        return self.mu.new_zeros(self.mu.shape[:-1])

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) of samples z (..., B, L) -> (..., B)."""
        if self.scale_tril is not None:
            return log_normal_full(z, self.mu, self.scale_tril)
        if self.logvar is None:
            raise ValueError("a deterministic encoder has no density")
        return log_normal_diag(z, self.mu, self.logvar).sum(-1)
