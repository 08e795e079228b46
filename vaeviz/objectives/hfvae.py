"""HFVAE, the hierarchically factorised VAE (Esmaeili et al. 2019, "Structured Disentangled Representations",
AISTATS, Sec. 3: the hierarchical decomposition of the KL term and the HFVAE objective).

The L latent dimensions form G groups of consecutive dimensions, z = (z_1, …, z_G) (`groups`, e.g. 2,2,2).
For z_i ~ q(z|x_i) the one-sample KL log q(z_i|x_i) − log p(z_i) splits into
    MI         = log q(z_i|x_i) − log q(z_i)                  (index-code mutual information, the paper's term 2)
    TC_between = log q(z_i) − Σ_g log q(z_ig)                 (total correlation between groups, term A)
    TC_within  = Σ_g [log q(z_ig) − Σ_{d∈g} log q(z_id)]      (total correlation within groups, term i)
    dimKL      = Σ_d log q(z_id) − log p(z_i)                 (dimension-wise KL, term ii)
The paper subtracts the prior's own correlations from A and i (log p(z)/Π_g p(z_g), log p(z_g)/Π_d p(z_gd));
both are 0 for p = N(0, I). Weights: the paper puts α on MI, β on A and γ on i and leaves ii at 1; δ here
weighs ii (δ = 1 is the paper's objective). The authors' probtorch code (objectives/marginal.py) calls the
same weights β = (β1, …, β5): β1 within groups, β2 dimension-wise KL, β3 MI, β4 between groups.

Every marginal is estimated from the batch as in β-TCVAE (vaeviz.objectives.beta_tcvae, MWS or MSS weights):
log q(z_ig) ≈ logsumexp_j (log w_ij + Σ_{d∈g} log q(z_id|x_j)), with the same `decompose`. One dimension per
group (the default) gives β-TCVAE's MI, TC and dimKL, with TC_within = 0.

Loss, nats per example:
    loss = D + R + (α−1)·MI + (β−1)·TC_between + (γ−1)·TC_within + (δ−1)·dimKL,
R = KL(q(z|x) ‖ N(0, I)) the analytic rate. The four sampled terms sum to log q(z_i|x_i) − log p(z_i) for any
estimate of q(z), a one-sample estimate of R, so in expectation over z the loss is
D + α·MI + β·TC_between + γ·TC_within + δ·dimKL (the paper's objective with estimated terms), and with every
weight 1 it is exactly the VAE's loss D + R (vaeviz.objectives.vae).
"""

from __future__ import annotations

import itertools

import torch

from vaeviz.knobs import ConfigError
from vaeviz.objective_params import HFVAEParams
from vaeviz.objectives.base import Chart, Losses
from vaeviz.objectives.beta_tcvae import BetaTCVAE, batch_decomposition, log_importance_weights

WEIGHTS = {"mi": "alpha", "tc_between": "beta", "tc_within": "gamma", "dim_kl": "delta"}  # term → its weight knob


class HFVAE(BetaTCVAE):
    Params = HFVAEParams
    state_terms = tuple(WEIGHTS)
    charts = (Chart(state_terms),)
    chart_caption = (
        "The minibatch estimates of the four parts of the rate: their levels carry offsets set by how much the "
        "batch's posteriors overlap, so read their trends, not their levels. With MWS (N the dataset size, M the "
        "batch size, L dimensions in G groups), posteriors that all coincide give MI ≈ log N, TC between groups ≈ "
        "(G−1)·log N and TC within groups ≈ (L−G)·log N where the truth is 0; posteriors apart from one another "
        "give the same with log(N·M) for log N; dimKL takes up the difference and goes negative. The loss is D + "
        "R plus (weight − 1) × each term, so with every weight 1 it is the VAE's.")

    @classmethod
    def latent_groups(cls, params: HFVAEParams, latent_dim: int) -> list[range]:
        """The groups of latent dimensions, consecutive ranges; ConfigError when `groups` do not add up to
        `latent_dim` (None: one dimension per group)."""
        sizes = params.groups or [1] * latent_dim
        if sum(sizes) != latent_dim:
            raise ConfigError(f"invalid value for 'objective.groups': {','.join(map(str, sizes))} adds up to "
                              f"{sum(sizes)}, but model.latent_dim is {latent_dim} (the groups' sizes must add up "
                              "to the latent dimension)")
        starts = itertools.accumulate([0, *sizes])
        return [range(start, start + size) for start, size in zip(starts, sizes)]

    def kl_terms(self, p) -> dict[str, torch.Tensor]:
        """MI, TC between and within groups and dimKL, each averaged over the batch (scalars)."""
        batch, latent = p.z.shape
        sizes = [len(g) for g in self.latent_groups(self.params, latent)]
        log_w = log_importance_weights(batch, self.n_data or batch, self.params.estimator, p.z.device)  # (B, B)
        t = batch_decomposition(p.z, p.q, log_w, sizes)
        return {"mi": t.mi.mean(), "tc_between": t.tc_between.mean(), "tc_within": t.tc_within.sum(-1).mean(),
                "dim_kl": t.dim_kl.mean()}

    def loss(self, p, step, model=None):
        kl = self.kl_terms(p)
        distortion, rate = self.nll(p).mean(), p.q.kl().mean()  # D, R = KL(q(z|x) ‖ N(0, I))
        extra = sum((getattr(self.params, WEIGHTS[k]) - 1.0) * v for k, v in kl.items())
        loss = distortion + rate + extra
        terms = {"loss": loss, "rate": rate, "distortion": distortion, "mse": p.mse(), **kl}
        return Losses(loss, {k: v.detach() for k, v in terms.items()})
