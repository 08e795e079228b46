"""The VAE objective: negative ELBO = D + R (Kingma & Welling 2014, eq. 3/10).

D = E_q[−log p(x|z)] with a Bernoulli decoder, or a Gaussian decoder with a fixed σ (the
constant-variance "CV-VAE"; −log p is σ-VAE eq. 4 with σ constant); R = KL(q(z|x) ‖ N(0, I)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vaeviz.config import knob
from vaeviz.distributions import LOG_2PI, bernoulli_nll, gaussian_nll
from vaeviz.objectives.base import Losses, Objective, Params, Pass


@dataclass
class VAEParams(Params):
    decoder: str = knob("bernoulli", choices=["bernoulli", "gaussian"], help="decoder likelihood")
    sigma: float = knob(0.1, lo=1e-4, hi=10.0, help="fixed decoder σ of the Gaussian decoder (CV-VAE)")


class VAE(Objective):
    Params = VAEParams

    def nll(self, p: Pass) -> torch.Tensor:
        if self.params.decoder == "bernoulli":
            return bernoulli_nll(p.x, p.out.logits)
        return gaussian_nll(p.x, p.x_mean, math.log(self.params.sigma))

    def beta(self, step: int) -> float:
        return 1.0

    def loss(self, p, step, model=None):
        distortion = self.nll(p).mean()
        rate = p.q.kl().mean()
        beta = self.beta(step)
        loss = distortion + beta * rate
        terms = {"loss": loss, "rate": rate, "distortion": distortion, "mse": p.mse()}
        terms = {k: v.detach() for k, v in terms.items()}
        if type(self) is not VAE:
            terms["beta"] = torch.tensor(beta)
        return Losses(loss, terms)

    def has_loss_grads(self) -> bool:
        """True for the classes whose loss is this one (not β-TCVAE, which has its own)."""
        return type(self).loss is VAE.loss

    @classmethod
    def group_loss_and_grads(cls, objectives, p, step):
        """`group_loss` without a graph (also on one run's (B, ·) tensors), and its gradient w.r.t.
        (logits l, μ, log σ²) with z fixed, derived by hand. The residual r = s − x, s = sigmoid(l),
        gives the MSE, the Gaussian NLL and both decoders' gradients:
        Bernoulli Σ NLL = Σ softplus(l) − x·l, ∂/∂l = r;
        Gaussian (σ fixed, σ-VAE eq. 4) Σ NLL = BD(½ log 2π + log σ) + Σ r²/(2σ²), ∂/∂l = r s (1 − s)/σ²;
        KL (Kingma & Welling 2014, app. B) ∂/∂μ = μ, ∂/∂log σ² = ½(σ² − 1).
        Every gradient is divided by B, and the KL's multiplied by β_t."""
        (n, d), lead = p.x.shape[-2:], p.x.shape[:-2]  # lead: (K,), or () for one run's (B, ·) tensors
        logits, mu, logvar, x = p.out.logits, p.q.mu, p.q.logvar, p.x
        beta = _per_run([o.beta(step) for o in objectives], x).view(lead)
        s = torch.sigmoid(logits)
        r = s - x  # (..., B, D)
        sq = r.pow(2).sum((-2, -1))
        if objectives[0].params.decoder == "bernoulli":
            distortion = (F.softplus(logits).sum((-2, -1)) - (x * logits).sum((-2, -1))) / n
            d_logits = r.div_(n)
        else:
            log_sigma = _per_run([math.log(o.params.sigma) for o in objectives], x).view(lead)
            inv_var = torch.exp(-2.0 * log_sigma)
            distortion = sq * inv_var * (0.5 / n) + d * (0.5 * LOG_2PI + log_sigma)
            d_logits = r.mul_(s).mul_(1.0 - s).mul_(inv_var.view(*lead, 1, 1) / n)
        var = logvar.exp()  # (..., B, L)
        rate = 0.5 * (mu * mu + var - 1.0 - logvar).sum((-2, -1)) / n
        loss = distortion + beta * rate
        weight = (beta / n).view(*lead, 1, 1)
        grads = d_logits, mu * weight, var.sub_(1.0).mul_(0.5 * weight)
        return (loss, *cls._table(loss, rate, distortion, sq / (n * d), beta), grads)

    def group_key(self):
        """Grouped by class and decoder, for the classes whose loss is this one (not β-TCVAE's)."""
        return (type(self), self.params.decoder) if type(self).loss is VAE.loss else None

    @classmethod
    def group_loss(cls, objectives, p, step):
        """`loss` of K runs of this class and decoder at once, each with its own β_t and σ."""
        beta = _per_run([o.beta(step) for o in objectives], p.x)  # (K,)
        if objectives[0].params.decoder == "bernoulli":
            nll = bernoulli_nll(p.x, p.out.logits)  # (K, B)
        else:
            log_sigma = _per_run([math.log(o.params.sigma) for o in objectives], p.x).view(-1, 1, 1)  # (K, 1, 1)
            nll = gaussian_nll(p.x, p.x_mean, log_sigma)
        distortion, rate = nll.mean(-1), p.q.kl().mean(-1)  # (K,)
        loss = distortion + beta * rate
        table, names = cls._table(loss, rate, distortion, p.mse(), beta)
        return loss, table.detach(), names

    @classmethod
    def _table(cls, loss, rate, distortion, mse, beta) -> tuple[torch.Tensor, list[str]]:
        """The logged terms of K runs as a (K, T) table ((T,) for one run) and their T names."""
        columns = {"loss": loss, "rate": rate, "distortion": distortion, "mse": mse}
        if cls is not VAE:
            columns["beta"] = beta
        return torch.stack(list(columns.values()), -1), list(columns)


def _per_run(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """One value per run as a (K,) tensor of `like`'s dtype and device."""
    return torch.tensor(values, dtype=like.dtype, device=like.device)
