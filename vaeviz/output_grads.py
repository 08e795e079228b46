"""Hand-derived output gradients: for the objectives `vaeviz.analytic` trains, the gradient of the
loss w.r.t. the decoder logits l and the posterior's (μ, log σ²), the sample z held fixed.

One function per objective class, registered in `GRADIENTS` by exact class (a subclass is not
covered until it is registered itself: it may change the loss). Each reads the values its loss
logged (σ*², λ) from that loss's terms, so the loss is defined once, in the objective, and only
its derivative is here. With s = sigmoid(l), r = s − x, batch size B and data dimension d:
    Bernoulli NLL  Σ softplus(l) − x·l:                ∂/∂l = r / B
    Gaussian NLL at a fixed σ (σ-VAE eq. 4):           ∂/∂l = r ⊙ s ⊙ (1 − s) / (σ² B)
    ... at a fixed σ_i per image (σ*²_i, per row i):   ∂/∂l_i = r_i ⊙ s_i ⊙ (1 − s_i) / (σ_i² B)
    GECO's λ·Ĉ, Ĉ's gradient that of ‖r‖²/d − κ²:      ∂/∂l = 2λ r ⊙ s ⊙ (1 − s) / (B d)
    w·KL(N(μ, σ²) ‖ N(0, I)) (Kingma & Welling 2014, app. B): ∂/∂μ = w μ / B, ∂/∂log σ² = w (σ² − 1) / (2B)
A group's tensors lead with the run axis (K, B, ·); knobs come through `Objective.per_run`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from vaeviz.objectives import GECO, VAE, BetaVAE, SigmaVAE
from vaeviz.objectives.base import Losses, Objective, Pass

Grads = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (∂logits, ∂μ, ∂log σ²)


def squares_grad(p: Pass, scale: torch.Tensor) -> torch.Tensor:
    """∂/∂l of c·Σ r² with `scale` = 2c: scale · r ⊙ s ⊙ (1 − s)."""
    s = p.x_mean
    return (s - p.x).mul_(s).mul_(1.0 - s).mul_(scale)


def kl_grads(p: Pass, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂/∂μ, ∂/∂log σ²) of weight·R, R the batch mean of the KL to N(0, I)."""
    w = weight / p.q.mu.shape[-2]
    return p.q.mu * w, p.q.logvar.exp().sub_(1.0).mul_(0.5 * w)


def vae_grads(objective: VAE, p: Pass, losses: Losses, step: int) -> Grads:
    """VAE and β-VAE: D + β_t R with a Bernoulli or fixed-σ Gaussian decoder."""
    n = p.x.shape[-2]
    if objective.params.decoder == "bernoulli":
        d_logits = (p.x_mean - p.x).div_(n)
    else:
        inv_var = objective.per_run(lambda o: math.exp(-2.0 * math.log(o.params.sigma)) / n, p.x)
        d_logits = squares_grad(p, inv_var)
    beta = objective.per_run(lambda o: o.beta(step), p.q.mu)
    return (d_logits, *kl_grads(p, beta))


def sigma_vae_grads(objective: SigmaVAE, p: Pass, losses: Losses, step: int) -> Grads:
    """σ-VAE with the closed-form σ* (eq. 6, detached): a Gaussian NLL at σ*, plus R. Global σ*: the σ*² the
    loss logged; per image: the loss's σ*²_i of this batch (`SigmaVAE.sigma2_images`), one scale per row."""
    if objective.mode == "per_image_closed_form":
        scale = 1.0 / (objective.sigma2_images.unsqueeze(-1) * p.x.shape[-2])  # (B, 1)
    else:
        scale = 1.0 / (losses.terms["sigma2"] * p.x.shape[-2])
    return (squares_grad(p, scale), *kl_grads(p, torch.ones((), dtype=p.x.dtype, device=p.x.device)))


def geco_grads(objective: GECO, p: Pass, losses: Losses, step: int) -> Grads:
    """GECO: R + λ·Ĉ, Ĉ's gradient that of the batch's reconstruction constraint."""
    n, d = p.x.shape[-2:]
    scale = losses.terms["lambda"].to(p.x) * (2.0 / (n * d))
    return (squares_grad(p, scale), *kl_grads(p, torch.ones((), dtype=p.x.dtype, device=p.x.device)))


GRADIENTS: dict[type[Objective], Callable[[Objective, Pass, Losses, int], Grads]] = {
    VAE: vae_grads,
    BetaVAE: vae_grads,
    SigmaVAE: sigma_vae_grads,
    GECO: geco_grads,
}


def output_grads(objective: Objective) -> Callable | None:
    """The registered gradient function of this objective, or None (train with autograd): by exact
    class, only where the loss has no parameters of its own (σ-VAE's learned σ modes) and is the one the
    gradient was derived for (`Objective.fits_output_grad`: e.g. not GECO's fre and cla constraints)."""
    fn = GRADIENTS.get(type(objective))
    if fn is None or not objective.fits_output_grad or any(p.requires_grad for p in objective.parameters()):
        return None
    return fn
