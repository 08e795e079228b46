"""The VAE objective: negative ELBO = D + R (Kingma & Welling 2014, eq. 3/10).

D = E_q[−log p(x|z)] with a Bernoulli decoder, or a Gaussian decoder with a fixed σ (the
constant-variance "CV-VAE"; −log p is σ-VAE eq. 4 with σ constant); R = KL(q(z|x) ‖ N(0, I)).
Runs of one class and decoder group (`Objective.group`): their losses are computed in one call,
each with its own β_t and σ.
"""

from __future__ import annotations

import math

import torch

from vaeviz.distributions import bernoulli_nll, gaussian_nll
from vaeviz.objective_params import VAEParams
from vaeviz.objectives.base import Losses, Objective, Pass


class VAE(Objective):
    Params = VAEParams

    @classmethod
    def distortion_kind(cls, params: VAEParams) -> str:
        return "bernoulli" if params.decoder == "bernoulli" else f"gaussian σ = {params.sigma}"

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
        if "beta" in self.state_terms:  # β-VAE logs its schedule's β_t
            terms["beta"] = beta
        return Losses(loss, {k: v.detach() for k, v in terms.items()})

    def group_key(self):
        """Runs of this class and decoder compute their losses together."""
        return type(self), self.params.decoder
