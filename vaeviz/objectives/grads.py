"""Hand-derived loss terms and output gradients shared by the objectives' `group_loss_and_grads`
(the graph-free path of `vaeviz.analytic`).

Each function takes one run's (B, ·) tensors or K stacked runs' (K, B, ·); per-run results have the
leading shape `lead`, () or (K,). With decoded mean s = sigmoid(l) and residual r = s − x:
    sum of squares  q = Σ_{b,k} r²,                 ∂(c·q)/∂l = 2c · r ⊙ s ⊙ (1 − s);
    Gaussian NLL (σ-VAE eq. 4) at a fixed σ, averaged over the batch:
        D = d(½ log 2π + log σ) + q / (2σ²B);
    KL(N(μ, σ²) ‖ N(0, I)) (Kingma & Welling 2014, appendix B), averaged over the batch:
        R = ½ Σ(μ² + σ² − 1 − log σ²) / B,   ∂R/∂μ = μ/B,   ∂R/∂log σ² = ½(σ² − 1)/B.
"""

from __future__ import annotations

import torch

from vaeviz.distributions import LOG_2PI, Posterior


def per_run(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """One value per run as a tensor of `like`'s dtype and device, shaped like its leading dims."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(like.shape[:-2])


def residual(x: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s, r, q): the decoded mean s = sigmoid(l), the residual r = s − x (..., B, D) and q = Σ r² (lead)."""
    s = torch.sigmoid(logits)
    r = s - x
    return s, r, r.pow(2).sum((-2, -1))


def squares_grad(r: torch.Tensor, s: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """∂(c·q)/∂l = 2c · r ⊙ s ⊙ (1 − s), with `scale` = 2c (lead); written over r."""
    return r.mul_(s).mul_(1.0 - s).mul_(scale.view(*scale.shape, 1, 1))


def gaussian_distortion(q: torch.Tensor, log_sigma: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """The batch mean of the Gaussian NLL at a fixed σ per run: d(½ log 2π + log σ) + q/(2σ²n), (lead)."""
    return q * torch.exp(-2.0 * log_sigma) * (0.5 / n) + d * (0.5 * LOG_2PI + log_sigma)


def kl_and_grads(posterior: Posterior, factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(R (lead), ∂(factor·R)/∂μ, ∂(factor·R)/∂log σ²) for a diagonal posterior; `factor` (lead)."""
    mu, logvar = posterior.mu, posterior.logvar  # (..., B, L)
    n = mu.shape[-2]
    var = logvar.exp()
    rate = 0.5 * (mu * mu + var - 1.0 - logvar).sum((-2, -1)) / n
    weight = (factor / n).view(*factor.shape, 1, 1)
    return rate, mu * weight, var.sub_(1.0).mul_(0.5 * weight)
