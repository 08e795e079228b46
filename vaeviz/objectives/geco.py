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

import math
from dataclasses import dataclass

import torch

from vaeviz.config import ConfigError, knob
from vaeviz.distributions import gaussian_nll
from vaeviz.objectives.base import Losses, Objective, Params, Pass
from vaeviz.objectives.grads import gaussian_distortion, kl_and_grads, per_run, residual, squares_grad
from vaeviz.objectives.sigma_vae import FLOOR, closed_form_log_sigma


@dataclass
class GECOParams(Params):
    kappa: float = knob(0.1, lo=0.0, hi=1.0, lo_open=True, help="tolerated RMSE per dimension κ (constraint MSE ≤ κ²)")
    alpha: float = knob(0.99, lo=0.0, hi=0.9999, help="moving-average factor of C_ma")
    nu: float = knob(1.0, lo=0.0, hi=1e4, lo_open=True, help="step size ν of log λ per step")
    lambda_init: float = knob(1.0, lo=0.0, lo_open=True, help="initial multiplier λ₀")
    lambda_min: float = knob(1e-6, lo=0.0, lo_open=True, help="lower clamp of λ")
    lambda_max: float = knob(1e8, lo=0.0, lo_open=True, help="upper clamp of λ")
    constraint: str = knob("re", choices=["re"], help="constraint kind: re = reconstruction error")


class GECO(Objective):
    Params = GECOParams

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

    @staticmethod
    @torch.no_grad()
    def advance(objectives: list, c_batch: torch.Tensor) -> torch.Tensor:
        """C_ma ← α·C_ma + (1−α)·C̄_batch for each run (the first batch sets it): the new C_ma, (lead)."""
        old = torch.stack([o.c_ma for o in objectives]).to(c_batch).view(c_batch.shape)
        alpha = per_run([o.params.alpha for o in objectives], c_batch[..., None, None])
        c_ma = torch.where(old.isnan(), c_batch, alpha * old + (1 - alpha) * c_batch)
        for objective, value in zip(objectives, c_ma.reshape(-1)):
            objective.c_ma.copy_(value)
        return c_ma

    def loss(self, p, step, model=None):
        rate = p.q.kl().mean()
        c_batch = self.constraint(p).mean()
        c_ma = self.advance([self], c_batch.detach())
        c_hat = c_batch + (c_ma - c_batch).detach()  # value C_ma, gradient of C̄_batch
        lam = self.lam.clone()  # the λ of this step (after_step updates the buffer in place)
        loss = rate + lam * c_hat
        terms = {"loss": loss.detach(), "rate": rate.detach(), "distortion": self.nll(p).mean().detach(),
                 "mse": p.mse(), "lambda": lam, "c_batch": c_batch.detach(), "c_ma": c_ma,
                 "kappa2": torch.tensor(self.params.kappa**2, device=p.x.device)}
        return Losses(loss, terms)

    def has_loss_grads(self) -> bool:
        return True

    @classmethod
    def group_loss_and_grads(cls, objectives, p, step):
        """`loss` without a graph, with its gradient w.r.t. (logits, μ, log σ²) (`grads`): λ·Ĉ has the
        gradient of λ·C̄_batch = λ/(B d)·Σ r² − λκ², i.e. 2λ (s − x) s (1 − s)/(B d); the rate's is the
        KL's. Advances each run's C_ma as `loss` does; λ moves in `after_step`."""
        (n, d) = p.x.shape[-2:]
        s, r, sq = residual(p.x, p.out.logits)
        mse = sq / (n * d)
        kappa2 = per_run([o.params.kappa**2 for o in objectives], p.x)
        c_batch = mse - kappa2
        c_ma = cls.advance(objectives, c_batch)
        lam = torch.stack([o.lam for o in objectives]).to(sq).view(sq.shape)  # a copy: after_step moves λ
        distortion = gaussian_distortion(sq, torch.clamp_min(0.5 * mse.log(), math.log(FLOOR)), n, d)
        d_logits = squares_grad(r, s, lam * (2.0 / (n * d)))
        rate, d_mu, d_logvar = kl_and_grads(p.q, torch.ones_like(sq))
        loss = rate + lam * c_ma
        table = torch.stack([loss, rate, distortion, mse, lam, c_batch, c_ma, kappa2], -1)
        names = ["loss", "rate", "distortion", "mse", "lambda", "c_batch", "c_ma", "kappa2"]
        return loss, table, names, (d_logits, d_mu, d_logvar)

    @torch.no_grad()
    def after_step(self, losses: Losses, step: int) -> None:
        """λ ← clamp(λ·exp(ν·C_ma), λ_min, λ_max)."""
        p = self.params
        self.lam.mul_(torch.exp(p.nu * self.c_ma)).clamp_(p.lambda_min, p.lambda_max)
