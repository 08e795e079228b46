"""GECO: the rate minimised under a reconstruction constraint (Rezende & Viola 2018, "Taming VAEs", Algorithm 1).

Reconstruction-error (RE) constraint per example: C = ‖x − g(z)‖²/d − κ², κ the tolerated RMSE per
dimension. The moving average C_ma ← α·C_ma + (1−α)·C̄_batch starts at the first batch's C̄_batch.
Lagrangian: loss = R + λ·Ĉ with Ĉ = C̄_batch + stopgrad(C_ma − C̄_batch): its value is C_ma, its
gradient that of the current batch only. After each optimiser step λ ← clamp(λ·exp(ν·C_ma), λ_min, λ_max),
so λ rises while the constraint is violated (C_ma > 0) and falls once it holds.
GECO has no decoder likelihood; its distortion D (for the ELBO and the information plane) is the
Gaussian NLL (σ-VAE eq. 4) at the calibrated σ*² = batch MSE (σ-VAE eq. 6).
"""

from __future__ import annotations

import torch

from vaeviz.distributions import gaussian_nll
from vaeviz.knobs import ConfigError
from vaeviz.objective_params import GECOParams
from vaeviz.objectives.base import Chart, Losses, Objective, Pass
from vaeviz.objectives.sigma_vae import CALIBRATED, closed_form_log_sigma


class GECO(Objective):
    Params = GECOParams
    state_terms = ("lambda", "c_batch", "c_ma", "kappa2")
    charts = (Chart(("lambda",), log_y=True), Chart(("c_ma", "c_batch")))
    chart_loss = False  # R + λĈ: λ spans decades and Ĉ is an MSE per dimension, not nats

    @classmethod
    def distortion_kind(cls, params: GECOParams) -> str:
        return CALIBRATED

    def __init__(self, params: GECOParams, data_dim: int):
        super().__init__(params, data_dim)
        if not params.lambda_min <= params.lambda_init <= params.lambda_max:
            raise ConfigError(
                f"invalid value for 'objective.lambda_init': {params.lambda_init} "
                f"(allowed: a value in [lambda_min={params.lambda_min}, lambda_max={params.lambda_max}])"
            )
        self.register_buffer("lam", torch.tensor(float(params.lambda_init)))
        self.register_buffer("c_ma", torch.tensor(float("nan")))  # NaN until the first batch

    def constraint(self, p: Pass) -> torch.Tensor:
        """C = ‖x − g(z)‖²/d − κ² per example, (B,)."""
        return (p.x - p.x_mean).pow(2).mean(1) - self.params.kappa**2

    def nll(self, p: Pass) -> torch.Tensor:
        return gaussian_nll(p.x, p.x_mean, closed_form_log_sigma(p.x, p.x_mean))

    def loss(self, p, step, model=None):
        rate = p.q.kl().mean()
        c_batch = self.constraint(p).mean()
        with torch.no_grad():  # C_ma ← α·C_ma + (1−α)·C̄_batch; the first batch sets it
            old, alpha = self.c_ma, self.params.alpha
            self.c_ma.copy_(torch.where(old.isnan(), c_batch, alpha * old + (1 - alpha) * c_batch))
        c_ma = self.c_ma.clone()
        c_hat = c_batch + (c_ma - c_batch).detach()  # value C_ma, gradient of C̄_batch
        lam = self.lam.clone()  # the λ of this step (after_step updates the buffer in place)
        loss = rate + lam * c_hat
        terms = {"loss": loss.detach(), "rate": rate.detach(), "distortion": self.nll(p).mean().detach(),
                 "mse": p.mse(), "lambda": lam, "c_batch": c_batch.detach(), "c_ma": c_ma,
                 "kappa2": torch.tensor(self.params.kappa**2, device=p.x.device)}
        return Losses(loss, terms)

    @torch.no_grad()
    def after_step(self, losses: Losses, step: int) -> None:
        """λ ← clamp(λ·exp(ν·C_ma), λ_min, λ_max)."""
        p = self.params
        self.lam.mul_(torch.exp(p.nu * self.c_ma)).clamp_(p.lambda_min, p.lambda_max)
