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
from vaeviz.distributions import bernoulli_nll, gaussian_nll
from vaeviz.objectives.base import Losses, Objective, Params, Pass
from vaeviz.objectives.grads import gaussian_distortion, kl_and_grads, per_run, residual, squares_grad


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
        (logits l, μ, log σ²) with z fixed, derived by hand (`grads`): Bernoulli Σ NLL = Σ softplus(l) − x·l,
        ∂/∂l = s − x; Gaussian at a fixed σ, ∂/∂l = (s − x) s (1 − s)/σ²; each divided by B, and the KL's
        gradient multiplied by β_t."""
        (n, d) = p.x.shape[-2:]
        logits, x = p.out.logits, p.x
        beta = per_run([o.beta(step) for o in objectives], x)  # (lead)
        s, r, sq = residual(x, logits)
        if objectives[0].params.decoder == "bernoulli":
            distortion = (F.softplus(logits).sum((-2, -1)) - (x * logits).sum((-2, -1))) / n
            d_logits = r.div_(n)
        else:
            log_sigma = per_run([math.log(o.params.sigma) for o in objectives], x)
            distortion = gaussian_distortion(sq, log_sigma, n, d)
            d_logits = squares_grad(r, s, torch.exp(-2.0 * log_sigma) / n)
        rate, d_mu, d_logvar = kl_and_grads(p.q, beta)
        loss = distortion + beta * rate
        return (loss, *cls._table(loss, rate, distortion, sq / (n * d), beta), (d_logits, d_mu, d_logvar))

    def group_key(self):
        """Grouped by class and decoder, for the classes whose loss is this one (not β-TCVAE's)."""
        return (type(self), self.params.decoder) if type(self).loss is VAE.loss else None

    @classmethod
    def group_loss(cls, objectives, p, step):
        """`loss` of K runs of this class and decoder at once, each with its own β_t and σ."""
        beta = per_run([o.beta(step) for o in objectives], p.x)  # (K,)
        if objectives[0].params.decoder == "bernoulli":
            nll = bernoulli_nll(p.x, p.out.logits)  # (K, B)
        else:
            log_sigma = per_run([math.log(o.params.sigma) for o in objectives], p.x).view(-1, 1, 1)  # (K, 1, 1)
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
