"""The VAE objective: negative ELBO = D + R (Kingma & Welling 2014, eq. 3/10).

D = E_q[−log p(x|z)] with a Bernoulli decoder, or a Gaussian decoder with a fixed σ (the
constant-variance "CV-VAE"; −log p is σ-VAE eq. 4 with σ constant); R = KL(q(z|x) ‖ N(0, I)).
Runs of one class and decoder group (`Objective.group`): their losses are computed in one call,
each with its own β_t and σ.
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
    logs_beta = False  # whether β_t is a logged term (β-VAE's schedule)

    def nll(self, p: Pass) -> torch.Tensor:
        """−log p(x|z) per example, (..., B)."""
        if self.params.decoder == "bernoulli":
            return bernoulli_nll(p.x, p.out.logits)
        return gaussian_nll(p.x, p.x_mean, self.per_run(lambda o: math.log(o.params.sigma), p.x))

    def beta(self, step: int) -> float:
        """The weight β_t of the rate at optimiser step `step`: 1 for the VAE."""
        return 1.0

    def loss(self, p, step, model=None):
        distortion = self.nll(p).mean(-1)  # D, nats per example: (), or (K,) for a group
        rate = p.q.kl().mean(-1)  # R = KL(q(z|x) ‖ N(0, I))
        beta = self.per_run(lambda o: o.beta(step), rate)
        loss = distortion + beta * rate
        terms = {"loss": loss, "rate": rate, "distortion": distortion, "mse": p.mse()}
        if self.logs_beta:
            terms["beta"] = beta
        return Losses(loss, {k: v.detach() for k, v in terms.items()})

    def group_key(self):
        """Runs of this class and decoder compute their losses together."""
        return type(self), self.params.decoder
