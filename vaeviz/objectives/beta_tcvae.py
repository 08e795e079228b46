"""β-TCVAE (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs", eq. 2 and 4).

The KL term is decomposed, for z_i ~ q(z|x_i), into
    MI    = log q(z_i|x_i) − log q(z_i)                 (index-code mutual information)
    TC    = log q(z_i) − Σ_k log q(z_ik)                (total correlation)
    dimKL = Σ_k log q(z_ik) − log p(z_i)                (dimension-wise KL)
and the loss is D + α·MI + β·TC + γ·dimKL. The three sum to log q(z_i|x_i) − log p(z_i), a one-sample
estimate of KL(q(z|x_i) ‖ p(z)), for any estimate of q(z). The aggregate posterior is estimated from
the batch with importance weights w_ij: log q(z_i) ≈ logsumexp_j (log w_ij + log q(z_i|x_j)), and the
same with the marginal densities q(z_ik|x_j) for log q(z_ik).
- Minibatch-weighted sampling (MWS, the paper's main estimator): w_ij = 1/(N·M), M the batch size, N the dataset size.
- Minibatch-stratified sampling (MSS, the paper's appendix), M = B − 1: w_ii = 1/N for the sample's own
  example, (N − M)/(N·M) for one other example (j = i + 1 mod B), 1/M for the rest; each row sums to 1.
  (This is the matrix the reference code means; its strided indexing fills columns 0 and 1 instead.)
The estimates are `decompose`, shared with HFVAE (vaeviz.objectives.hfvae), which splits TC further by groups of
dimensions; β-TCVAE is its case of one dimension per group.

Offsets of the estimates (the chart caption). When all q(·|x_j) of the batch coincide, log q̂(z_i) =
log q(z_i) + log Σ_j w_ij and the same for each dimension, so MI = −log Σ_j w_ij and TC = −(L − 1)·log Σ_j w_ij:
log N and (L − 1)·log N for MWS (Σ_j w_ij = 1/N), 0 for MSS, while the true values are 0. When they are apart
from one another in every dimension, only j = i counts: log q̂(z_i) ≈ log w_ii + log q(z_i|x_i) and
log q̂(z_ik) ≈ log w_ii + log q(z_ik|x_i), so MI ≈ −log w_ii and TC ≈ −(L − 1)·log w_ii: log(N·M) and
(L − 1)·log(N·M) for MWS, log N and (L − 1)·log N for MSS; dimKL ≈ KL̂ + L·log w_ii is then far below 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from vaeviz.distributions import Posterior, log_normal_diag, log_std_normal
from vaeviz.objective_params import BetaTCVAEParams
from vaeviz.objectives.base import Chart, Losses
from vaeviz.objectives.vae import VAE


def log_importance_weights(batch: int, n_data: int, estimator: str, device=None) -> torch.Tensor:
    """log w_ij of the MWS or MSS estimator of q(z_i), (B, B); N is raised to at least B."""
    n = max(n_data, batch)
    if estimator == "mws" or batch < 2:
        return torch.full((batch, batch), -math.log(n * batch), device=device)
    m = batch - 1
    w = torch.full((batch, batch), 1.0 / m)
    idx = torch.arange(batch)
    w[idx, (idx + 1) % batch] = (n - m) / (n * m)  # the stratum's representative
    w[idx, idx] = 1.0 / n  # the sample's own example
    return w.log().to(device)


class KLTerms(NamedTuple):
    """The terms of log q(z_i|x_i) − log p(z_i) per sample (B,), split by a grouping of the latent dimensions
    (Esmaeili et al. 2019, Sec. 3; singleton groups give β-TCVAE's three, with tc_within = 0)."""

    mi: torch.Tensor  # log q(z_i|x_i) − log q(z_i), (B,)
    tc_between: torch.Tensor  # log q(z_i) − Σ_g log q(z_ig), (B,)
    tc_within: torch.Tensor  # log q(z_ig) − Σ_{d∈g} log q(z_id) for each group g, (B, G)
    dim_kl: torch.Tensor  # Σ_d log q(z_id) − log p(z_i), (B,)


def decompose(log_qzx: torch.Tensor, pair: torch.Tensor, marg: torch.Tensor, log_w: torch.Tensor,
              log_pz: torch.Tensor, groups: list[int] | None = None) -> KLTerms:
    """Split log q(z_i|x_i) − log p(z_i) into MI, between-group TC, within-group TC and dimension-wise KL.

    Tables for samples z_i (B of them) against the components j (N) of the aggregate posterior:
    log_qzx (B,) = log q(z_i|x_i), the sample's own component; pair (B, N) = log q(z_i|x_j); marg (B, N, L) =
    log q(z_id|x_j); log_w (B, N) the log weights w_ij; log_pz (B,) = log p(z_i). Every marginal is estimated as
    log q(z_iS) ≈ logsumexp_j (log w_ij + Σ_{d∈S} log q(z_id|x_j)), for S the whole code, a group or one
    dimension. `groups` are the sizes of consecutive groups (None: one per dimension, β-TCVAE). The four terms
    sum to log_qzx − log_pz for any weights.
    """
    log_qz = torch.logsumexp(log_w + pair, dim=1)  # (B,)
    log_qzd = torch.logsumexp(log_w.unsqueeze(-1) + marg, dim=1)  # (B, L): log q(z_id)
    if groups is None:  # singleton groups: q(z_ig) is q(z_id)
        log_qzg, within = log_qzd, torch.zeros_like(log_qzd)
    else:
        group_marg = torch.stack([m.sum(-1) for m in marg.split(groups, -1)], -1)  # (B, N, G)
        log_qzg = torch.logsumexp(log_w.unsqueeze(-1) + group_marg, dim=1)  # (B, G): log q(z_ig)
        within = log_qzg - torch.stack([d.sum(-1) for d in log_qzd.split(groups, -1)], -1)  # (B, G)
    log_prod_g, log_prod_d = log_qzg.sum(-1), log_qzd.sum(-1)  # (B,), (B,)
    return KLTerms(log_qzx - log_qz, log_qz - log_prod_g, within, log_prod_d - log_pz)


def batch_tables(z: torch.Tensor, q: Posterior) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`decompose`'s density tables of a batch, every example a component: log q(z_i|x_i) (B,),
    log q(z_i|x_j) (B, B) and log q(z_id|x_j) (B, B, L), for samples z (B, L) of q(z|x) (diagonal or full)."""
    logvar = q.logvar if q.logvar is not None else q.variance.log()  # (B, L) marginal variances
    marg = log_normal_diag(z.unsqueeze(1), q.mu, logvar)  # (B, B, L): log q(z_id | x_j)
    pair = marg.sum(-1) if q.scale_tril is None else q.log_prob(z.unsqueeze(1))  # (B, B): log q(z_i | x_j)
    return pair.diagonal(), pair, marg


def batch_decomposition(z: torch.Tensor, q: Posterior, log_w: torch.Tensor,
                        groups: list[int] | None = None) -> KLTerms:
    """`decompose` on a batch: the aggregate posterior estimated from the batch itself with weights log_w (B, B)."""
    return decompose(*batch_tables(z, q), log_w, log_std_normal(z), groups)


def kl_decomposition(z: torch.Tensor, q: Posterior, log_w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """β-TCVAE's (MI, TC, dimKL) per example, each (B,), for samples z (B, L) of q(z|x) (diagonal or full)."""
    terms = batch_decomposition(z, q, log_w)
    return terms.mi, terms.tc_between, terms.dim_kl


class BetaTCVAE(VAE):
    Params = BetaTCVAEParams
    state_terms = ("mi", "tc", "dim_kl")
    charts = (Chart(state_terms),)
    chart_caption = (
        "The minibatch estimates the loss uses: their levels carry offsets set by how much the batch's posteriors "
        "overlap, so read their trends, not their levels. With MWS (N the dataset size, M the batch size, L latent "
        "dimensions), posteriors that all coincide give MI ≈ log N and TC ≈ (L−1)·log N where the truth is 0; "
        "posteriors apart from one another give MI ≈ log(N·M) and TC ≈ (L−1)·log(N·M), though MI can never exceed "
        "log N (MSS: log N and (L−1)·log N); dimKL takes up the difference and goes negative. Their sum is a "
        "one-sample estimate of the rate.")

    def __init__(self, params: BetaTCVAEParams, data_dim: int):
        super().__init__(params, data_dim)
        self.n_data = params.dataset_size

    def group_key(self):
        """Its estimators are per run: never grouped."""
        return None

    def set_dataset_size(self, n: int) -> None:
        if self.params.dataset_size is None:
            self.n_data = n

    def loss(self, p, step, model=None):
        batch = p.z.shape[0]
        log_w = log_importance_weights(batch, self.n_data or batch, self.params.estimator, p.z.device)
        mi, tc, dim_kl = (t.mean() for t in kl_decomposition(p.z, p.q, log_w))
        distortion = self.nll(p).mean()
        a, b, g = self.params.alpha, self.params.beta, self.params.gamma
        loss = distortion + a * mi + b * tc + g * dim_kl
        terms = {"loss": loss.detach(), "rate": p.q.kl().mean().detach(), "distortion": distortion.detach(),
                 "mse": p.mse(), "mi": mi.detach(), "tc": tc.detach(), "dim_kl": dim_kl.detach()}
        return Losses(loss, terms)
