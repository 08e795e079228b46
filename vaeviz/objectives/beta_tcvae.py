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
"""

from __future__ import annotations

import math

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


def kl_decomposition(z: torch.Tensor, q: Posterior, log_w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(MI, TC, dimKL) per example, each (B,), for samples z (B, L) of q(z|x) (diagonal or full)."""
    logvar = q.logvar if q.logvar is not None else q.variance.log()  # (B, L) marginal variances
    marg = log_normal_diag(z.unsqueeze(1), q.mu, logvar)  # (B, B, L): log q(z_ik | x_j)
    pair = marg.sum(-1) if q.scale_tril is None else q.log_prob(z.unsqueeze(1))  # (B, B): log q(z_i | x_j)
    log_qzx = pair.diagonal()  # (B,)
    log_qz = torch.logsumexp(log_w + pair, dim=1)  # (B,)
    log_prod_qz = torch.logsumexp(log_w.unsqueeze(-1) + marg, dim=1).sum(-1)  # (B,)
    log_pz = log_std_normal(z)  # (B,)
    return log_qzx - log_qz, log_qz - log_prod_qz, log_prod_qz - log_pz


class BetaTCVAE(VAE):
    Params = BetaTCVAEParams
    state_terms = ("mi", "tc", "dim_kl")
    charts = (Chart(state_terms),)
    chart_caption = ("These are the minibatch estimates the loss uses. With a small batch from a large dataset they "
                     "carry large constant offsets (about log N for MI and (L−1)·log N for TC, dimKL negative); "
                     "read their trends, not their levels. Their sum is the batch KL, the rate.")

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
