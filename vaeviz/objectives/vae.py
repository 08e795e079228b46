"""The VAE objective: negative ELBO = D + R (Kingma & Welling 2014, eq. 3/10).

D = E_q[−log p(x|z)] with a Bernoulli decoder, or a Gaussian decoder with a fixed σ (the
constant-variance "CV-VAE"; −log p is σ-VAE eq. 4 with σ constant); R = KL(q(z|x) ‖ N(0, I)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaeviz.config import knob
from vaeviz.distributions import bernoulli_nll, gaussian_nll
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

    def group_key(self):
        """Grouped by class and decoder, for the classes whose loss is this one (not β-TCVAE's)."""
        return (type(self), self.params.decoder) if type(self).loss is VAE.loss else None

    @classmethod
    def group_loss(cls, objectives, p, step):
        """`loss` of K runs of this class and decoder at once, each with its own β_t and σ."""
        like = p.x
        beta = torch.tensor([o.beta(step) for o in objectives], dtype=like.dtype, device=like.device)  # (K,)
        if objectives[0].params.decoder == "bernoulli":
            nll = bernoulli_nll(p.x, p.out.logits)  # (K, B)
        else:
            log_sigma = torch.tensor([math.log(o.params.sigma) for o in objectives], dtype=like.dtype,
                                     device=like.device).view(-1, 1, 1)  # (K, 1, 1)
            nll = gaussian_nll(p.x, p.x_mean, log_sigma)
        distortion, rate = nll.mean(-1), p.q.kl().mean(-1)  # (K,)
        loss = distortion + beta * rate
        columns = {"loss": loss, "rate": rate, "distortion": distortion, "mse": p.mse()}
        if cls is not VAE:
            columns["beta"] = beta
        return loss, torch.stack(list(columns.values()), 1).detach(), list(columns)
